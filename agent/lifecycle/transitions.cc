#include "agent/lifecycle/transitions.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <initializer_list>

namespace kiln::lifecycle {

using state::InstanceState;
using state::TaskState;

namespace {

struct Transition {
  Operation op;
  std::string_view name;
  TaskState task;
  std::initializer_list<InstanceState> from;
  // An instance in error qualifies only while it still has its disks (a domain to act on).
  bool from_error_with_disks;
  // Another task in progress excludes it (a delete preempts any task).
  bool needs_idle;
  std::optional<InstanceState> to;
  std::string_view needs;  // said when it does not fit
};

// As nova: a hard reboot also recovers a stopped instance, or one in error that has a domain.
const std::array<Transition, 10> kTransitions = {{
    {Operation::kSoftReboot,
     "a soft reboot",
     TaskState::kRebooting,
     {InstanceState::kActive},
     false,
     true,
     InstanceState::kActive,
     "an idle active instance"},
    {Operation::kHardReboot,
     "a hard reboot",
     TaskState::kRebootingHard,
     {InstanceState::kActive, InstanceState::kStopped},
     true,
     true,
     InstanceState::kActive,
     "an idle active or stopped instance, or one in error that still has its disks"},
    {Operation::kStop,
     "a stop",
     TaskState::kPoweringOff,
     {InstanceState::kActive},
     false,
     true,
     InstanceState::kStopped,
     "an idle active instance"},
    {Operation::kStart,
     "a start",
     TaskState::kPoweringOn,
     {InstanceState::kStopped},
     false,
     true,
     InstanceState::kActive,
     "an idle stopped instance"},
    {Operation::kSnapshot,
     "a snapshot",
     TaskState::kImageUploading,
     {InstanceState::kActive, InstanceState::kStopped},
     false,
     true,
     std::nullopt,
     "an idle active or stopped instance"},
    {Operation::kAttachVolume,
     "attaching a volume",
     TaskState::kAttachingVolume,
     {InstanceState::kActive, InstanceState::kStopped},
     false,
     true,
     std::nullopt,
     "an idle active or stopped instance"},
    {Operation::kDetachVolume,
     "detaching a volume",
     TaskState::kDetachingVolume,
     {InstanceState::kActive, InstanceState::kStopped},
     false,
     true,
     std::nullopt,
     "an idle active or stopped instance"},
    {Operation::kAttachInterface,
     "attaching an interface",
     TaskState::kAttachingInterface,
     {InstanceState::kActive, InstanceState::kStopped},
     false,
     true,
     std::nullopt,
     "an idle active or stopped instance"},
    {Operation::kDetachInterface,
     "detaching an interface",
     TaskState::kDetachingInterface,
     {InstanceState::kActive, InstanceState::kStopped},
     false,
     true,
     std::nullopt,
     "an idle active or stopped instance"},
    {Operation::kDelete,
     "a delete",
     TaskState::kDeleting,
     {InstanceState::kBuilding, InstanceState::kActive, InstanceState::kStopped,
      InstanceState::kError, InstanceState::kDeleting},
     false,
     false,
     InstanceState::kDeleting,
     "nothing"},
}};

const Transition& transitionOf(Operation op) {
  for (const auto& t : kTransitions) {
    if (t.op == op) return t;
  }
  return kTransitions.back();  // unreachable: every operation has a row
}

}  // namespace

std::string_view operationName(Operation op) { return transitionOf(op).name; }

TaskState taskOf(Operation op) { return transitionOf(op).task; }

std::optional<InstanceState> stateAfter(Operation op) { return transitionOf(op).to; }

Result<void> admit(Operation op, const state::InstanceRecord& rec) {
  const Transition& t = transitionOf(op);
  bool state_fits =
      std::find(t.from.begin(), t.from.end(), rec.state) != t.from.end() ||
      (t.from_error_with_disks && rec.state == InstanceState::kError && !rec.disks.empty());
  bool idle_fits = !t.needs_idle || rec.task_state == TaskState::kNone;
  if (state_fits && idle_fits) return success();
  std::string task;
  if (rec.task_state != TaskState::kNone) {
    task = fmt::format(" ({})", state::taskStateName(rec.task_state));
  }
  return Error::conflict(fmt::format("Instance '{}' is {}{}; {} needs {}", rec.uuid,
                                     state::stateName(rec.state), task, t.name, t.needs));
}

}  // namespace kiln::lifecycle
