#include "agent/lifecycle/power.h"

#include <fmt/format.h>

#include "agent/lifecycle/transitions.h"
#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;
using state::TaskState;

namespace {

Operation operationOf(PowerAction action) {
  switch (action) {
    case PowerAction::kSoftReboot:
      return Operation::kSoftReboot;
    case PowerAction::kHardReboot:
      return Operation::kHardReboot;
    case PowerAction::kStop:
      return Operation::kStop;
    case PowerAction::kStart:
      return Operation::kStart;
  }
  return Operation::kStop;
}

JobKind jobOf(PowerAction action) {
  switch (action) {
    case PowerAction::kSoftReboot:
    case PowerAction::kHardReboot:
      return JobKind::kReboot;
    case PowerAction::kStop:
      return JobKind::kStop;
    case PowerAction::kStart:
      return JobKind::kStart;
  }
  return JobKind::kStop;
}

}  // namespace

PowerControl::PowerControl(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                           InstanceResources& resources, const ManagerOptions& options)
    : table_(table), jobs_(jobs), driver_(driver), resources_(resources), options_(options) {}

Result<InstanceRecord> PowerControl::request(const std::string& uuid, PowerAction action) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  const Operation op = operationOf(action);
  auto recorded = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(op, rec); !r) return r;
    rec.task_state = taskOf(op);
    rec.action_error.clear();
    return success();
  });
  if (!recorded) return recorded.error();
  if (!jobs_.post([this, entry, action] { run(entry, action); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return recorded;
}

void PowerControl::run(const EntryPtr& entry, PowerAction action) {
  const std::string& uuid = entry->uuid();
  auto job = table_.beginJob(entry, jobOf(action), options_.job_timeout);
  Result<void> result = job ? success() : Result<void>(job.error());
  std::string how;
  // A start needs the disk secrets; libvirtd may have lost them since the last reconcile.
  if (result && action != PowerAction::kStop) resources_.restoreDiskSecrets(*entry);
  // And its taps, which a host reboot removed: libvirt opens them by name and never makes them.
  if (result && action != PowerAction::kStop) result = resources_.plugInterfaces(*entry);
  if (result) {
    switch (action) {
      case PowerAction::kSoftReboot:
      case PowerAction::kHardReboot: {
        auto r =
            driver_.reboot(uuid, action == PowerAction::kHardReboot, options_.soft_reboot_timeout);
        if (!r) {
          result = r.error();
        } else {
          how = *r ? "soft" : "hard";
        }
        break;
      }
      case PowerAction::kStop: {
        auto r = driver_.powerOff(uuid, options_.shutdown_timeout);
        if (!r) {
          result = r.error();
        } else {
          how = *r ? "clean shutdown" : "powered off after the timeout";
        }
        break;
      }
      case PowerAction::kStart:
        result = driver_.powerOn(uuid);
        break;
    }
  }
  table_.settle(*entry, [&](InstanceRecord& rec) {
    if (rec.state == InstanceState::kDeleting) return;  // the delete owns the record now
    rec.task_state = TaskState::kNone;
    if (result) {
      rec.state = *stateAfter(operationOf(action));
      rec.power_state = rec.state == InstanceState::kActive ? "running" : "shutdown";
      rec.fault.clear();
      log::info("Instance '{}' is {}{}", uuid, state::stateName(rec.state),
                how.empty() ? "" : " (" + how + ")");
    } else {
      rec.action_error = result.error().message;
      log::warn("Instance '{}': {}", uuid, rec.action_error);
    }
  });
}

}  // namespace kiln::lifecycle
