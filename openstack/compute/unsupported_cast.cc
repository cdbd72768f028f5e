// A cast kiln does not implement, for an instance: nova-api set a task state (pausing,
// suspending, resize_prep, ...) and waits for the compute service to clear it. Left alone, the
// server would show that task forever and refuse every other action. Answered as nova answers a
// failed action: an Error event compute_<method>, a fault saying kiln does not support the
// operation, and the task state cleared (the instance otherwise untouched).

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/nova_instance.h"

namespace kiln::openstack::compute {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

RpcOutcome unsupportedInstanceCast(const InstanceOperations& ops, const RpcRequest& request) {
  auto parsed = NovaInstance::fromRequest(ops.conductor, request, ops.host);
  if (!parsed) return RpcOutcome::ok();
  NovaInstance& instance = *parsed;
  const std::string& uuid = instance.uuid();
  const auto held = ops.locks.lock(uuid);
  const std::string event = "compute_" + request.method;
  const std::string message =
      fmt::format("kiln does not support {} (instance {} is unchanged)", request.method, uuid);
  log::warn("OpenStack: {}", message);
  instance.recordStart(event);
  instance.recordFault(message, 501);
  if (auto saved = instance.save({{"task_state", nullptr}}); !saved) {
    log::error("OpenStack: instance {}: clearing its task state failed: {}", uuid,
               saved.error().message);
  }
  instance.recordFinish(event, message);
  return RpcOutcome::ok();
}

}  // namespace kiln::openstack::compute
