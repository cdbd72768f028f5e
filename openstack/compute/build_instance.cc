// build_and_run_instance, as nova-compute's _do_build_and_run_instance runs it: BUILDING with no
// task and the claim (host, launched_on, node) in one save (expected SCHEDULING or None),
// SPAWNING (expected None; nova's NETWORKING and BLOCK_DEVICE_MAPPING steps have no work in
// kiln's builds yet), the guest launched by kiln, then ACTIVE with its power state and
// launched_at (expected SPAWNING). A build that
// cannot go on is aborted as nova aborts one (BuildAbortException, no reschedule): its
// allocations removed, a fault "Build of instance U aborted: REASON", host and node cleared, then
// ERROR with no task. Every step runs inside the instance-action event
// compute__do_build_and_run_instance.

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/nova_instance.h"

namespace kiln::openstack::compute {
namespace {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

constexpr const char* kBuildEvent = "compute__do_build_and_run_instance";

// The data of each object in a list object's primitive (NetworkRequestList,
// BlockDeviceMappingList); an absent or null list is empty.
// The data of each item of an ObjectList primitive.
std::vector<json> listData(const json& list) {
  std::vector<json> out;
  for (const auto& item : nova::listItems(list)) {
    out.push_back(item.value("nova_object.data", json::object()));
  }
  return out;
}

std::string textOf(const json& object, const char* field) {
  const auto it = object.find(field);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool truthy(const std::string& text) {
  return !text.empty() && text != "False" && text != "false" && text != "0";
}

}  // namespace

Result<BuildRequest> buildRequestFrom(const nova::NovaObject& instance, const json& context,
                                      const json& args) {
  for (const auto& network : listData(args.value("requested_networks", json()))) {
    const std::string id = textOf(network, "network_id");
    if (id != "none") {
      return Error::invalid(fmt::format(
          "networks were requested ({}), and this kiln host has no Neutron configured; boot with "
          "--network none",
          id.empty() ? "a port" : id));
    }
  }
  for (const auto& bdm : listData(args.value("block_device_mapping", json()))) {
    if (textOf(bdm, "destination_type") == "volume") {
      return Error::invalid(
          "kiln does not yet attach Cinder volumes through Nova (a block device mapping names "
          "volume " +
          textOf(bdm, "volume_id") + ")");
    }
  }
  BuildRequest request;
  request.uuid = instance.text("uuid");
  request.name = instance.text("display_name", request.uuid);
  request.hostname = instance.text("hostname");
  request.project_id = instance.text("project_id");
  request.token = textOf(context, "auth_token");
  request.image_id = instance.text("image_ref");
  if (request.image_id.empty()) return Error::invalid("kiln boots instances from an image only");
  const json& flavor = instance.get("flavor");
  if (!flavor.is_object() || !flavor.contains("nova_object.data")) {
    return Error::invalid("the instance carries no flavor");
  }
  const json& f = flavor["nova_object.data"];
  request.flavor_name = textOf(f, "name");
  request.vcpus = f.value("vcpus", 1U);
  request.memory_mb = f.value("memory_mb", std::uint64_t{512});
  request.root_gb = f.value("root_gb", std::uint64_t{1});
  request.ephemeral_gb = f.value("ephemeral_gb", std::uint64_t{0});
  if (f.value("swap", 0) != 0) {
    return Error::invalid(
        fmt::format("flavor {} has swap, which kiln does not provide", request.flavor_name));
  }
  const json extra_specs = f.value("extra_specs", json::object());
  for (const auto& [key, value] : extra_specs.items())
    if (value.is_string()) request.extra_specs[key] = value.get<std::string>();
  request.config_drive = truthy(instance.text("config_drive"));
  request.availability_zone = instance.text("availability_zone");
  if (instance.get("user_data").is_string()) request.user_data = instance.text("user_data");
  if (!instance.text("key_data").empty()) {
    request.public_keys[instance.text("key_name", "key")] = instance.text("key_data");
  }
  return request;
}

RpcOutcome buildAndRunInstance(const InstanceOperations& ops, const RpcRequest& request) {
  auto parsed = NovaInstance::fromRequest(ops.conductor, request, ops.host);
  if (!parsed) return RpcOutcome::ok();
  NovaInstance& instance = *parsed;
  const std::string& uuid = instance.uuid();
  const auto held = ops.locks.lock(uuid);
  const auto started = std::chrono::steady_clock::now();
  instance.recordStart(kBuildEvent);
  auto finish = [&](const std::string& failure) {
    instance.recordFinish(kBuildEvent, failure);
    return RpcOutcome::ok();
  };
  // Nova's BuildAbortException: nothing is left on the host, the instance ends ERROR.
  auto abort = [&](const std::string& reason) {
    log::error("OpenStack: instance {}: build aborted: {}", uuid, reason);
    if (auto gone = ops.instances.destroy(uuid, ops.delete_timeout); !gone) {
      log::error("OpenStack: instance {}: removing what the failed build left failed: {}", uuid,
                 gone.error().message);
    }
    if (ops.placement != nullptr) {
      if (auto freed = ops.placement->deleteAllocations(uuid); !freed) {
        log::error("OpenStack: instance {}: removing its allocations failed: {}", uuid,
                   freed.error().message);
      }
    }
    const std::string message = fmt::format("Build of instance {} aborted: {}", uuid, reason);
    instance.recordFault(message);
    for (const json& fields : {json{{"host", nullptr}, {"node", nullptr}},
                               json{{"vm_state", "error"}, {"task_state", nullptr}}}) {
      if (auto saved = instance.save(fields); !saved) {
        log::error("OpenStack: instance {}: saving the failed build failed: {}", uuid,
                   saved.error().message);
      }
    }
    return finish(message);
  };
  // A save refused because the instance was deleted meanwhile (or changed by another action):
  // as in nova, the build stops here, and the terminate_instance that came (waiting for this
  // build's lock) removes whatever was made.
  auto superseded = [&](const Error& error) {
    log::warn("OpenStack: instance {}: the build stops: {}", uuid, error.message);
    return finish(error.message);
  };

  // The resource tracker's claim puts the instance on this host and node; one save with the
  // state nova-compute's first save sets, under the same expected task states.
  if (auto saved = instance.save({{"vm_state", "building"},
                                  {"task_state", nullptr},
                                  {"host", ops.host},
                                  {"launched_on", ops.host},
                                  {"node", ops.host}},
                                 std::vector<json>{"scheduling", nullptr});
      !saved) {
    return superseded(saved.error());
  }
  auto build = buildRequestFrom(instance.object(), request.context, request.args);
  if (!build) return abort(build.error().message);
  // nova-compute passes through "networking" and "block_device_mapping" while it allocates ports
  // and attaches volumes. kiln's builds have neither step yet (networks other than none and
  // volumes are refused just above), so the instance goes straight to spawning: each save is a
  // round trip through nova-conductor, and these two would only add their latency.
  if (auto saved = instance.save({{"vm_state", "building"}, {"task_state", "spawning"}},
                                 std::vector<json>{nullptr});
      !saved) {
    return superseded(saved.error());
  }
  auto outcome = ops.instances.build(*build, ops.build_timeout);
  if (!outcome && ops.instances.stopping()) {
    // kilnd stops in the middle: the instance stays spawning in Nova, and the next start's
    // recovery settles it, as nova-compute's init_host settles a build its restart cut short.
    log::warn("OpenStack: instance {}: kilnd stops during its build; left to the recovery", uuid);
    return RpcOutcome::ok();
  }
  if (!outcome) return abort(outcome.error().message);
  if (!outcome->active) return abort(outcome->fault);
  json active = {{"power_state", static_cast<int>(outcome->power_state)},
                 {"vm_state", "active"},
                 {"task_state", nullptr},
                 {"launched_at", novaTimestamp()}};
  if (build->config_drive) active["config_drive"] = "True";
  if (auto saved = instance.save(active, std::vector<json>{"spawning"}); !saved) {
    return superseded(saved.error());
  }
  log::info("OpenStack: instance {} is active on {} after {:.2f} s", uuid, ops.host,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return finish("");
}

}  // namespace kiln::openstack::compute
