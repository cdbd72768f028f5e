// reboot_instance, stop_instance and start_instance, as nova-compute runs them (nova-api has set
// the task state: rebooting / rebooting_hard, powering-off, powering-on):
//   reboot: reboot_pending(_hard) (expected rebooting(_hard), reboot_pending(_hard) or
//           reboot_started(_hard)), reboot_started(_hard) (expected reboot_pending(_hard)),
//           kiln's reboot, then ACTIVE with no task and the power state.
//   stop:   kiln's stop (clean shutdown, then power off), then STOPPED with no task and the power
//           state (expected powering-off).
//   start:  kiln's start, then ACTIVE with no task and the power state (expected powering-on).
// A failure records a fault and leaves the instance with no task state in the state kiln found
// (ERROR when kiln's lifecycle says so). Each inside its compute_<method> instance-action event.

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/nova_instance.h"

namespace kiln::openstack::compute {
namespace {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

std::string_view powerName(PowerRequest request) {
  switch (request) {
    case PowerRequest::kSoftReboot:
      return "soft reboot";
    case PowerRequest::kHardReboot:
      return "hard reboot";
    case PowerRequest::kStop:
      return "stop";
    case PowerRequest::kStart:
      return "start";
  }
  return "power action";
}

// The steps before kiln acts: (fields, expected task states) saved in order.
struct Step {
  json fields;
  std::vector<json> expected;
};

RpcOutcome runPowerAction(const InstanceOperations& ops, const RpcRequest& request,
                          const std::string& event, PowerRequest action,
                          const std::vector<Step>& before, const json& expected_after) {
  auto parsed = NovaInstance::fromRequest(ops.conductor, request, ops.host);
  if (!parsed) return RpcOutcome::ok();
  NovaInstance& instance = *parsed;
  const std::string& uuid = instance.uuid();
  const auto held = ops.locks.lock(uuid);
  instance.recordStart(event);
  auto finish = [&](const std::string& failure) {
    instance.recordFinish(event, failure);
    return RpcOutcome::ok();
  };
  auto fail = [&](const std::string& reason, bool error_state) {
    const std::string message =
        fmt::format("The {} of instance {} failed: {}", powerName(action), uuid, reason);
    log::error("OpenStack: {}", message);
    instance.recordFault(message);
    json fields = {{"task_state", nullptr}};
    if (error_state) fields["vm_state"] = "error";
    if (auto saved = instance.save(fields); !saved) {
      log::error("OpenStack: instance {}: clearing its task state failed: {}", uuid,
                 saved.error().message);
    }
    return finish(message);
  };
  for (const auto& step : before) {
    if (auto saved = instance.save(step.fields, step.expected); !saved) {
      // Another action or a delete came first: as in nova, this one stops.
      log::warn("OpenStack: instance {}: the {} stops: {}", uuid, powerName(action),
                saved.error().message);
      return finish(saved.error().message);
    }
  }
  auto outcome = ops.instances.power(uuid, action, ops.build_timeout);
  if (!outcome && ops.instances.stopping()) {
    // The task stays set in Nova; the next start's recovery clears it with kiln's state.
    log::warn("OpenStack: instance {}: kilnd stops during its {}; left to the recovery", uuid,
              powerName(action));
    return RpcOutcome::ok();
  }
  if (!outcome) return fail(outcome.error().message, false);
  if (!outcome->fault.empty()) return fail(outcome->fault, true);
  json after = {{"power_state", static_cast<int>(outcome->power_state)},
                {"vm_state", outcome->active ? "active" : "stopped"},
                {"task_state", nullptr}};
  std::optional<std::vector<json>> expected;
  if (!expected_after.is_null()) expected = std::vector<json>{expected_after};
  if (auto saved = instance.save(after, expected); !saved) {
    log::warn("OpenStack: instance {}: saving the {} failed: {}", uuid, powerName(action),
              saved.error().message);
    return finish(saved.error().message);
  }
  log::info("OpenStack: instance {}: {} done", uuid, powerName(action));
  return finish("");
}

}  // namespace

RpcOutcome rebootInstance(const InstanceOperations& ops, const RpcRequest& request) {
  const bool hard = request.args.value("reboot_type", std::string("SOFT")) == "HARD";
  const std::string suffix = hard ? "_hard" : "";
  const std::vector<Step> before = {
      {{{"task_state", "reboot_pending" + suffix}},
       {json(hard ? "rebooting_hard" : "rebooting"), json("reboot_pending" + suffix),
        json("reboot_started" + suffix)}},
      {{{"task_state", "reboot_started" + suffix}}, {json("reboot_pending" + suffix)}},
  };
  return runPowerAction(ops, request, "compute_reboot_instance",
                        hard ? PowerRequest::kHardReboot : PowerRequest::kSoftReboot, before,
                        json());
}

RpcOutcome stopInstance(const InstanceOperations& ops, const RpcRequest& request) {
  return runPowerAction(ops, request, "compute_stop_instance", PowerRequest::kStop, {},
                        "powering-off");
}

RpcOutcome startInstance(const InstanceOperations& ops, const RpcRequest& request) {
  return runPowerAction(ops, request, "compute_start_instance", PowerRequest::kStart, {},
                        "powering-on");
}

}  // namespace kiln::openstack::compute
