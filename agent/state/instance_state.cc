#include "agent/state/instance_state.h"

#include <array>
#include <utility>

namespace kiln::state {

namespace {

constexpr std::array<std::pair<InstanceState, std::string_view>, 5> kStateNames = {{
    {InstanceState::kBuilding, "building"},
    {InstanceState::kActive, "active"},
    {InstanceState::kStopped, "stopped"},
    {InstanceState::kError, "error"},
    {InstanceState::kDeleting, "deleting"},
}};

constexpr std::array<std::pair<TaskState, std::string_view>, 12> kTaskNames = {{
    {TaskState::kNone, ""},
    {TaskState::kSpawning, "spawning"},
    {TaskState::kDeleting, "deleting"},
    {TaskState::kRebooting, "rebooting"},
    {TaskState::kRebootingHard, "rebooting_hard"},
    {TaskState::kPoweringOff, "powering_off"},
    {TaskState::kPoweringOn, "powering_on"},
    {TaskState::kImageUploading, "image_uploading"},
    {TaskState::kAttachingVolume, "attaching_volume"},
    {TaskState::kDetachingVolume, "detaching_volume"},
    {TaskState::kAttachingInterface, "interface_attaching"},
    {TaskState::kDetachingInterface, "interface_detaching"},
}};

}  // namespace

std::string_view stateName(InstanceState s) {
  for (const auto& [state, name] : kStateNames) {
    if (state == s) return name;
  }
  return "error";
}

std::optional<InstanceState> stateFromName(std::string_view name) {
  for (const auto& [state, known] : kStateNames) {
    if (known == name) return state;
  }
  return std::nullopt;
}

std::string_view taskStateName(TaskState t) {
  for (const auto& [task, name] : kTaskNames) {
    if (task == t) return name;
  }
  return "";
}

std::optional<TaskState> taskStateFromName(std::string_view name) {
  for (const auto& [task, known] : kTaskNames) {
    if (known == name) return task;
  }
  return std::nullopt;
}

}  // namespace kiln::state
