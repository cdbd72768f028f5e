#include "common/process_hardening.h"

#include <fmt/format.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "common/fs.h"

namespace kiln {

Result<void> keepSecretsOutOfCoreDumps() {
  rlimit none{0, 0};
  if (::setrlimit(RLIMIT_CORE, &none) != 0) {
    return Error::internal(fmt::format("Cannot turn core dumps off: {}", fs::errnoText(errno)));
  }
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return Error::internal(fmt::format("Cannot make kilnd undumpable: {}", fs::errnoText(errno)));
  }
  return success();
}

}  // namespace kiln
