#include "common/failpoint.h"

#ifdef KILN_FAILPOINTS
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/log.h"

namespace kiln {

Result<void> failpoint(std::string_view name) {
  const char* spec = std::getenv("KILN_FAILPOINTS");
  if (spec == nullptr) return success();
  std::string_view rest(spec);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    auto eq = item.find('=');
    if (item.substr(0, eq) != name) continue;
    std::string_view action = eq == std::string_view::npos ? "abort" : item.substr(eq + 1);
    log::warn("Failpoint '{}' hit: {}", name, action);
    if (action == "abort") ::kill(::getpid(), SIGKILL);
    if (action.starts_with("delay:")) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::atoi(std::string(action.substr(6)).c_str())));
      return success();
    }
    return Error::internal(fmt::format("Failpoint '{}' injected an error", name));
  }
  return success();
}

}  // namespace kiln
#endif
