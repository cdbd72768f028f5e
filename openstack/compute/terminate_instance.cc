// terminate_instance, as nova-compute's _delete_instance runs it (nova-api has set the task state
// to deleting): the guest, its disks and kiln's record gone; the row DELETED with no task, no
// power state and terminated_at; the allocations removed; the row destroyed. A delete that fails
// on the host ends the instance in ERROR with a fault, for the user to delete again. Inside the
// instance-action event compute_terminate_instance.

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/compute/instance_host.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/nova_instance.h"

namespace kiln::openstack::compute {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

namespace {
constexpr const char* kTerminateEvent = "compute_terminate_instance";
}  // namespace

Result<void> completeDelete(const InstanceOperations& ops, NovaInstance& instance) {
  const std::string& uuid = instance.uuid();
  auto gone = ops.instances.destroy(uuid, ops.delete_timeout);
  if (!gone && ops.instances.stopping()) {
    // The instance stays deleting in Nova; the next start's recovery completes the delete.
    log::warn("OpenStack: instance {}: kilnd stops during its delete; left to the recovery", uuid);
    return gone;
  }
  if (!gone) {
    const std::string message =
        fmt::format("Deleting instance {} failed: {}", uuid, gone.error().message);
    log::error("OpenStack: {}", message);
    instance.recordFault(message);
    if (auto saved = instance.save({{"vm_state", "error"}, {"task_state", nullptr}}); !saved) {
      log::error("OpenStack: instance {}: saving the failed delete failed: {}", uuid,
                 saved.error().message);
    }
    return Error::internal(message);
  }
  if (auto saved = instance.save({{"vm_state", "deleted"},
                                  {"task_state", nullptr},
                                  {"power_state", static_cast<int>(NovaPowerState::kNoState)},
                                  {"terminated_at", novaTimestamp()}});
      !saved) {
    log::warn("OpenStack: instance {}: saving the delete failed: {}", uuid, saved.error().message);
  }
  if (ops.placement != nullptr) {
    if (auto freed = ops.placement->deleteAllocations(uuid); !freed) {
      log::error("OpenStack: instance {}: removing its allocations failed: {}", uuid,
                 freed.error().message);
    }
  }
  if (auto destroyed = instance.destroy(); !destroyed) {
    log::warn("OpenStack: instance {}: destroying its row failed: {}", uuid,
              destroyed.error().message);
  }
  log::info("OpenStack: instance {} deleted from {}", uuid, ops.host);
  return success();
}

RpcOutcome terminateInstance(const InstanceOperations& ops, const RpcRequest& request) {
  auto parsed = NovaInstance::fromRequest(ops.conductor, request, ops.host);
  if (!parsed) return RpcOutcome::ok();
  NovaInstance& instance = *parsed;
  const std::string& uuid = instance.uuid();
  const auto held = ops.locks.lock(uuid);
  instance.recordStart(kTerminateEvent);
  auto deleted = completeDelete(ops, instance);
  instance.recordFinish(kTerminateEvent, deleted ? "" : deleted.error().message);
  return RpcOutcome::ok();
}

}  // namespace kiln::openstack::compute
