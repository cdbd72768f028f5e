#include "openstack/compute/compute_node_record.h"

#include <fmt/format.h>

#include <cerrno>
#include <system_error>

#include "common/fs.h"
#include "common/log.h"
#include "common/uuid.h"
#include "openstack/nova/request_context.h"

namespace kiln::openstack::compute {
namespace {

using nlohmann::json;

constexpr const char* kComputeIdFile = "compute_id";

bool isObjectPrimitive(const json& value) {
  return value.is_object() && value.contains("nova_object.data");
}

json hvSpecPrimitive(const HvSpec& spec) {
  return {{"nova_object.name", "HVSpec"},
          {"nova_object.namespace", "nova"},
          {"nova_object.version", nova::objectVersion("HVSpec")},
          {"nova_object.data",
           {{"arch", spec.arch}, {"hv_type", spec.hv_type}, {"vm_mode", spec.vm_mode}}}};
}

// A host without PCI passthrough has no pools: the empty list nova's PCI tracker reports.
json emptyPciPools() {
  return {{"nova_object.name", "PciDevicePoolList"},
          {"nova_object.namespace", "nova"},
          {"nova_object.version", nova::objectVersion("PciDevicePoolList")},
          {"nova_object.data", {{"objects", json::array()}}}};
}

}  // namespace

namespace detail {

json comparable(const std::string& field, const json& value) {
  if (isObjectPrimitive(value)) {
    json data = json::object();
    for (const auto& [name, inner] : value["nova_object.data"].items())
      data[name] = comparable(name, inner);
    return data;
  }
  if (value.is_array()) {
    json list = json::array();
    for (const auto& item : value) list.push_back(comparable(field, item));
    return list;
  }
  if (field == "cpu_info" && value.is_string()) {
    // Text kiln wrote and text the database gives back hold the same JSON, maybe not the same
    // bytes (key order, spacing).
    json parsed = json::parse(value.get<std::string>(), nullptr, false);
    if (!parsed.is_discarded()) return parsed;
  }
  if (value.is_number()) return value.get<double>();
  return value;
}

}  // namespace detail

json computeNodeFields(const ComputeNodeFigures& figures, bool creating, const std::string& host,
                       const std::string& uuid) {
  json specs = json::array();
  for (const auto& spec : figures.supported_hv_specs) specs.push_back(hvSpecPrimitive(spec));
  json stats = json::object();
  for (const auto& [key, value] : figures.stats) stats[key] = value;
  json fields = {
      {"hypervisor_hostname", figures.hypervisor_hostname},
      {"host_ip", figures.host_ip.empty() ? json() : json(figures.host_ip)},
      {"hypervisor_type", figures.hypervisor_type},
      {"hypervisor_version", figures.hypervisor_version},
      {"vcpus", figures.vcpus},
      {"memory_mb", figures.memory_mb},
      {"local_gb", figures.local_gb},
      {"vcpus_used", figures.vcpus_used},
      {"memory_mb_used", figures.memory_mb_used},
      {"local_gb_used", figures.local_gb_used},
      {"free_ram_mb", figures.free_ram_mb},
      {"free_disk_gb", figures.free_disk_gb},
      {"disk_available_least", figures.disk_available_least},
      {"running_vms", figures.running_vms},
      {"current_workload", figures.current_workload},
      // A string field holding JSON: nova-api parses it for the hypervisors API.
      {"cpu_info", figures.cpu_info.dump()},
      {"supported_hv_specs", std::move(specs)},
      {"cpu_allocation_ratio", figures.cpu_allocation_ratio},
      {"ram_allocation_ratio", figures.ram_allocation_ratio},
      {"disk_allocation_ratio", figures.disk_allocation_ratio},
      {"stats", std::move(stats)},
  };
  if (creating) {
    fields["uuid"] = uuid;
    fields["host"] = host;
    fields["pci_device_pools"] = emptyPciPools();
    fields["numa_topology"] = nullptr;
    // The resource tracker's monitors' metrics: kiln runs none (nova's default too).
    fields["metrics"] = "[]";
  }
  return fields;
}

Result<std::string> nodeUuid(const std::filesystem::path& state_path) {
  const auto path = state_path / kComputeIdFile;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    auto text = fs::readFile(path, 4096);
    if (!text) return text.error();
    std::string trimmed = *text;
    while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' '))
      trimmed.pop_back();
    auto uuid = canonicalUuid(trimmed);
    if (!uuid) {
      return Error::invalid(fmt::format(
          "{} should hold this compute node's uuid and holds something else; it names the node's "
          "Placement provider, so restore it rather than remove it",
          path.string()));
    }
    return *uuid;
  }
  if (ec) return Error::internal(fmt::format("reading {}: {}", path.string(), ec.message()));
  const std::string uuid = randomUuid();
  if (auto written = fs::writeFileAtomically(path, uuid + "\n", 0644); !written) {
    return written.error();
  }
  log::info("OpenStack: this compute node's uuid is {} (new, kept in {})", uuid, path.string());
  return uuid;
}

ComputeNodeRecord::ComputeNodeRecord(nova::Conductor& conductor, std::string host, std::string uuid)
    : conductor_(conductor), host_(std::move(host)), uuid_(std::move(uuid)) {}

Result<void> ComputeNodeRecord::findOrCreate(const ComputeNodeFigures& figures) {
  const json context = nova::adminContext();
  auto found = conductor_.classAction(context, "ComputeNode", "get_by_host_and_nodename",
                                      json{host_, figures.hypervisor_hostname});
  if (!found && found.error().code != ErrorCode::kNotFound) return found.error();
  if (found && !found->is_null()) {
    auto node = nova::NovaObject::fromPrimitive(*found);
    if (!node) return node.error();
    if (node->text("uuid") != uuid_) {
      return Error::conflict(fmt::format(
          "Nova already has compute node {} of host {} (id {}) under uuid "
          "{}, and this host's compute_id file says {}: another compute "
          "service runs with this host's name, or the file was lost; kiln "
          "does not take over the row",
          figures.hypervisor_hostname, host_, node->integer("id"), node->text("uuid"), uuid_));
    }
    node_ = std::move(node).value();
    return success();
  }
  nova::NovaObject node = nova::NovaObject::make("ComputeNode", nova::objectVersion("ComputeNode"));
  const json fields = computeNodeFields(figures, true, host_, uuid_);
  for (const auto& [field, value] : fields.items()) node.set(field, value);
  last_saved_ = node.changes();
  auto created = conductor_.objectAction(context, node, "create");
  if (!created) {
    last_saved_.clear();
    return Error{created.error().code,
                 fmt::format("creating compute node {} of host {} failed: {}",
                             figures.hypervisor_hostname, host_, created.error().message)};
  }
  log::info("OpenStack: registered compute node {} of host {} (id {}, uuid {})",
            figures.hypervisor_hostname, host_, node.integer("id"), uuid_);
  node.resetChanges();
  node_ = std::move(node);
  return success();
}

Result<void> ComputeNodeRecord::report(const ComputeNodeFigures& figures) {
  std::lock_guard lock(mutex_);
  last_saved_.clear();
  if (!node_) {
    auto made = findOrCreate(figures);
    if (!made) return made;
    if (!last_saved_.empty()) return success();  // just created with these very figures
  }
  const json fields = computeNodeFields(figures, false, host_, uuid_);
  for (const auto& [field, value] : fields.items()) {
    if (detail::comparable(field, node_->get(field)) != detail::comparable(field, value))
      node_->set(field, value);
  }
  if (node_->changes().empty()) return success();
  const std::set<std::string> changed = node_->changes();
  auto saved = conductor_.objectAction(nova::adminContext(), *node_, "save");
  if (!saved) {
    if (saved.error().code == ErrorCode::kNotFound) {
      log::error(
          "OpenStack: compute node {} of host {} is gone from Nova (deleted through the API); "
          "making it again",
          figures.hypervisor_hostname, host_);
      node_.reset();
      return findOrCreate(figures);
    }
    // The next report reads the row again and saves whatever still differs from it.
    node_.reset();
    return saved.error();
  }
  node_->resetChanges();
  last_saved_ = changed;
  return success();
}

Result<void> ComputeNodeRecord::destroy() {
  std::lock_guard lock(mutex_);
  if (!node_) return success();
  auto destroyed = conductor_.objectAction(nova::adminContext(), *node_, "destroy");
  if (!destroyed && destroyed.error().code != ErrorCode::kNotFound) return destroyed.error();
  node_.reset();
  return success();
}

std::int64_t ComputeNodeRecord::id() const {
  std::lock_guard lock(mutex_);
  return node_ ? node_->integer("id") : 0;
}

std::set<std::string> ComputeNodeRecord::lastSaved() const {
  std::lock_guard lock(mutex_);
  return last_saved_;
}

}  // namespace kiln::openstack::compute
