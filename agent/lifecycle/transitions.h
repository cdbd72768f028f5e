#pragma once
// The instance state machine, drawn once. Which operation may start in which state, the task it
// runs as, and where it leaves the instance live in one table (transitions.cc); every admission
// check, and the 409 a caller gets when an operation does not fit, comes from it.
//
//                 launch ok                     stop
//   building ─────────────────► active ───────────────────► stopped
//      │   (task: spawning)       │ ▲ ◄──────────────────────  │
//      │                          │ │         start            │
//      │ launch fails             │ └─ reboot (soft, hard)     │
//      ▼                          │    snapshot, volumes       │ hard reboot, snapshot,
//    error ◄── domain crashed ────┘    (task while they run)   │ volumes
//      │        or vanished                                    │
//      └─ hard reboot (only while it still has its disks) ─► active
//
//   any state ── DELETE ──► deleting ──► (record removed)      a delete preempts: a running
//                                                              job sees it at its next step
//
// An instance runs one task at a time: while task_state is set, only a delete is admitted.
// Reconcile moves active <-> stopped and to error by what the hypervisor reports; that is the
// hypervisor's truth, not an operation, and needs no admission.

#include <optional>
#include <string_view>

#include "agent/state/instance_record.h"
#include "common/result.h"

namespace kiln::lifecycle {

enum class Operation {
  kSoftReboot,
  kHardReboot,
  kStop,
  kStart,
  kSnapshot,
  kAttachVolume,
  kDetachVolume,
  kAttachInterface,
  kDetachInterface,
  kDelete,
};

// How the operation is named in messages: "a soft reboot", "attaching a volume".
std::string_view operationName(Operation op);

// The task the operation runs as.
state::TaskState taskOf(Operation op);

// Where a successful operation leaves the instance; nothing when it keeps its state.
std::optional<state::InstanceState> stateAfter(Operation op);

// Whether `op` may start on the instance as `rec` describes it. The kConflict error says which
// state the instance is in and what the operation needs, e.g. "Instance 'u' is stopped; a soft
// reboot needs an idle active instance".
Result<void> admit(Operation op, const state::InstanceRecord& rec);

}  // namespace kiln::lifecycle
