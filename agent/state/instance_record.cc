#include "agent/state/instance_record.h"

#include <fmt/format.h>

namespace kiln::state {

using nlohmann::json;

json interfaceToJson(const InterfaceRecord& i) {
  const drivers::NicSpec& n = i.nic;
  return {{"port_id", n.port_id},
          {"mac_address", n.mac},
          {"type", n.type == drivers::NicSpec::Type::kBridge ? "bridge" : "tap"},
          {"devname", n.devname},
          {"bridge", n.bridge.empty() ? json(nullptr) : json(n.bridge)},
          {"mtu", n.mtu == 0 ? json(nullptr) : json(n.mtu)},
          {"model", n.model},
          {"queues", n.queues},
          {"port_filter", !n.filter},
          {"fixed_ips", n.fixed_ips},
          {"vif", i.vif}};
}

Result<InterfaceRecord> interfaceFromJson(const json& j) {
  InterfaceRecord i;
  drivers::NicSpec& n = i.nic;
  n.port_id = j.at("port_id").get<std::string>();
  n.mac = j.at("mac_address").get<std::string>();
  n.type = j.at("type").get<std::string>() == "bridge" ? drivers::NicSpec::Type::kBridge
                                                       : drivers::NicSpec::Type::kTap;
  n.devname = j.at("devname").get<std::string>();
  if (!j.at("bridge").is_null()) n.bridge = j["bridge"].get<std::string>();
  if (!j.at("mtu").is_null()) n.mtu = j["mtu"].get<unsigned>();
  n.model = j.at("model").get<std::string>();
  n.queues = j.at("queues").get<unsigned>();
  n.filter = !j.at("port_filter").get<bool>();
  n.fixed_ips = j.at("fixed_ips").get<std::vector<std::string>>();
  i.vif = j.at("vif");
  return i;
}

json toJson(const InstanceRecord& r) {
  json flavor = {{"vcpus", r.flavor.vcpus},
                 {"memory_mb", r.flavor.memory_mb},
                 {"root_gb", r.flavor.root_gb},
                 {"ephemeral_gb", r.flavor.ephemeral_gb},
                 {"extra_specs", r.flavor.extra_specs}};
  if (!r.flavor.name.empty()) flavor["name"] = r.flavor.name;
  json disks = json::array();
  for (const auto& d : r.disks) {
    json disk = {{"device", d.device},
                 {"path", d.path},
                 {"format", d.format},
                 {"virtual_size", d.virtual_size}};
    if (!d.backing_path.empty()) {
      disk["backing"] = {{"path", d.backing_path}, {"format", d.backing_format}};
    }
    if (!d.encryption_secret_uuid.empty()) {
      json encryption = {{"format", "luks"}, {"secret_uuid", d.encryption_secret_uuid}};
      if (!d.sealed_key.empty()) encryption["sealed_key"] = d.sealed_key;
      disk["encryption"] = std::move(encryption);
    }
    disks.push_back(std::move(disk));
  }
  json timeline = json::array();
  for (const auto& s : r.timeline) {
    timeline.push_back({{"step", s.name},
                        {"duration_ms", s.duration_ms},
                        {"duration_us", static_cast<std::int64_t>(s.duration_exact_ms * 1000)},
                        {"ok", s.ok}});
  }
  json volumes = json::array();
  for (const auto& v : r.volumes) {
    json vol = drivers::volume::attachmentToJson(v);
    auto sealed = r.sealed_passwords.find(v.volume_id);
    if (sealed != r.sealed_passwords.end()) vol["sealed_password"] = sealed->second;
    volumes.push_back(std::move(vol));
  }
  json interfaces = json::array();
  for (const auto& i : r.interfaces) interfaces.push_back(interfaceToJson(i));
  json out = {{"uuid", r.uuid},
              {"name", r.name},
              {"project_id", r.project_id},
              {"state", stateName(r.state)},
              {"power_state", r.power_state},
              {"task_state", r.task_state == TaskState::kNone ? json(nullptr)
                                                              : json(taskStateName(r.task_state))},
              {"flavor", std::move(flavor)},
              {"image", {{"id", r.image_id}, {"properties", r.image_properties}}},
              {"disks", std::move(disks)},
              {"volumes", std::move(volumes)},
              {"interfaces", std::move(interfaces)},
              {"timeline", std::move(timeline)},
              {"created_at", r.created_at},
              {"updated_at", r.updated_at},
              {"request_fingerprint", r.request_fingerprint}};
  if (!r.config_drive_path.empty()) out["config_drive"] = {{"path", r.config_drive_path}};
  if (!r.fault.empty()) out["fault"] = {{"message", r.fault}};
  if (!r.action_error.empty()) out["action_error"] = {{"message", r.action_error}};
  return out;
}

Result<InstanceRecord> fromJson(const json& j) {
  try {
    InstanceRecord r;
    r.uuid = j.at("uuid").get<std::string>();
    r.name = j.at("name").get<std::string>();
    r.project_id = j.value("project_id", "");
    auto st = stateFromName(j.at("state").get<std::string>());
    if (!st)
      return Error::internal(fmt::format("Stored instance '{}' has an unknown state", r.uuid));
    r.state = *st;
    r.power_state = j.at("power_state").get<std::string>();
    if (!j.at("task_state").is_null()) {
      auto task = taskStateFromName(j.at("task_state").get<std::string>());
      if (!task || *task == TaskState::kNone) {
        return Error::internal(
            fmt::format("Stored instance '{}' has an unknown task state", r.uuid));
      }
      r.task_state = *task;
    }
    const json& f = j.at("flavor");
    r.flavor.name = f.value("name", "");
    r.flavor.vcpus = f.at("vcpus").get<unsigned>();
    r.flavor.memory_mb = f.at("memory_mb").get<std::uint64_t>();
    r.flavor.root_gb = f.at("root_gb").get<std::uint64_t>();
    r.flavor.ephemeral_gb = f.at("ephemeral_gb").get<std::uint64_t>();
    r.flavor.extra_specs = f.at("extra_specs").get<std::map<std::string, std::string>>();
    r.image_id = j.at("image").at("id").get<std::string>();
    r.image_properties = j.at("image").at("properties");
    for (const auto& d : j.at("disks")) {
      DiskRecord disk;
      disk.device = d.at("device").get<std::string>();
      disk.path = d.at("path").get<std::string>();
      disk.format = d.at("format").get<std::string>();
      disk.virtual_size = d.at("virtual_size").get<std::uint64_t>();
      if (d.contains("backing")) {
        disk.backing_path = d["backing"].at("path").get<std::string>();
        disk.backing_format = d["backing"].at("format").get<std::string>();
      }
      if (d.contains("encryption")) {
        disk.encryption_secret_uuid = d["encryption"].at("secret_uuid").get<std::string>();
        disk.sealed_key = d["encryption"].value("sealed_key", "");
      }
      r.disks.push_back(std::move(disk));
    }
    for (const auto& s : j.at("timeline")) {
      TimelineStep step;
      step.name = s.at("step").get<std::string>();
      step.duration_ms = s.at("duration_ms").get<std::int64_t>();
      step.duration_exact_ms = static_cast<double>(s.value("duration_us", 0LL)) / 1000.0;
      step.ok = s.at("ok").get<bool>();
      r.timeline.push_back(std::move(step));
    }
    if (j.contains("fault")) r.fault = j["fault"].at("message").get<std::string>();
    if (j.contains("action_error")) {
      r.action_error = j["action_error"].at("message").get<std::string>();
    }
    for (const auto& v : j.value("volumes", json::array())) {
      auto att = drivers::volume::attachmentFromJson(v);
      if (!att) return att.error();
      if (v.contains("sealed_password")) {
        r.sealed_passwords[att->volume_id] = v["sealed_password"].get<std::string>();
      }
      r.volumes.push_back(std::move(att).value());
    }
    for (const auto& i : j.value("interfaces", json::array())) {
      auto iface = interfaceFromJson(i);
      if (!iface) return iface.error();
      r.interfaces.push_back(std::move(iface).value());
    }
    if (j.contains("config_drive")) {
      r.config_drive_path = j["config_drive"].at("path").get<std::string>();
    }
    r.created_at = j.at("created_at").get<std::string>();
    r.updated_at = j.at("updated_at").get<std::string>();
    r.request_fingerprint = j.at("request_fingerprint").get<std::string>();
    return r;
  } catch (const json::exception& e) {
    return Error::internal(fmt::format("A stored instance record is unreadable: {}", e.what()));
  }
}

}  // namespace kiln::state
