#pragma once
// The typed states of an instance record and their string forms, which the API shows and the
// store keeps. Which operation may start in which state is decided in one place,
// agent/lifecycle/transitions.h, where the state machine is drawn.

#include <optional>
#include <string_view>

namespace kiln::state {

// Where the instance is in its life.
enum class InstanceState { kBuilding, kActive, kStopped, kError, kDeleting };

// The long operation running on the instance, if any (nova's task_state). kNone shows as null.
enum class TaskState {
  kNone,
  kSpawning,
  kDeleting,
  kRebooting,
  kRebootingHard,
  kPoweringOff,
  kPoweringOn,
  kImageUploading,
  kAttachingVolume,
  kDetachingVolume,
  kAttachingInterface,
  kDetachingInterface,
};

std::string_view stateName(InstanceState s);
std::optional<InstanceState> stateFromName(std::string_view name);

// "" for kNone.
std::string_view taskStateName(TaskState t);
// "" is kNone; an unknown name is nothing.
std::optional<TaskState> taskStateFromName(std::string_view name);

}  // namespace kiln::state
