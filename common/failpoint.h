#pragma once
// Named failpoints between the steps of launch and delete. Compiled in only with KILN_FAILPOINTS
// (test builds); the environment variable KILN_FAILPOINTS="name=action[,name=action]" arms them,
// where action is `abort` (SIGKILL ourselves, as a crash would) or `error`.

#include <string_view>

#include "common/result.h"

namespace kiln {

#ifdef KILN_FAILPOINTS
Result<void> failpoint(std::string_view name);
#else
inline Result<void> failpoint(std::string_view) { return success(); }
#endif

}  // namespace kiln
