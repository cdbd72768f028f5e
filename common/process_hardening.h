#pragma once
// kilnd holds secrets in memory (CHAP passwords, disk keys, the host key, tokens): a core dump
// or a ptrace-attached peer must not get them.

#include "common/result.h"

namespace kiln {

// No core dump (RLIMIT_CORE 0, like the unit's LimitCORE=0) and not dumpable (PR_SET_DUMPABLE 0:
// no core, and /proc/<pid>/mem, environ and ptrace only for privileged peers). Children
// (qemu-img, iscsiadm) inherit the limit.
Result<void> keepSecretsOutOfCoreDumps();

}  // namespace kiln
