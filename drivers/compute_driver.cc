#include "drivers/compute_driver.h"

namespace kiln::drivers {

std::string_view powerStateName(PowerState s) {
  switch (s) {
    case PowerState::kNoState:
      return "nostate";
    case PowerState::kRunning:
      return "running";
    case PowerState::kPaused:
      return "paused";
    case PowerState::kShutdown:
      return "shutting_down";
    case PowerState::kShutoff:
      return "shutdown";
    case PowerState::kCrashed:
      return "crashed";
    case PowerState::kSuspended:
      return "suspended";
  }
  return "nostate";
}

}  // namespace kiln::drivers
