#pragma once
// Named failpoints between the steps of launch, delete, attach, detach and snapshot (the list,
// and what a crash at each leaves, is in docs/testing.md). Compiled in only with KILN_FAILPOINTS:
// the crash tests' kilnd-failpoints executable, never the production kilnd. The environment
// variable KILN_FAILPOINTS="name=action[,name=action]" arms them, where action is
//   abort      SIGKILL ourselves, as a crash would (the default)
//   error      the step fails with an internal error, so its rollback runs
//   delay:MS   sleep MS milliseconds, then go on (widens a window for a test, e.g. to restart
//              libvirtd in the middle of a launch)

#include <string_view>

#include "common/result.h"

namespace kiln {

#ifdef KILN_FAILPOINTS
Result<void> failpoint(std::string_view name);
#else
inline Result<void> failpoint(std::string_view) { return success(); }
#endif

}  // namespace kiln
