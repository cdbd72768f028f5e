// The real prctl and setrlimit, in a child so the test runner itself stays as it was.
#include "common/process_hardening.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

namespace kiln {
namespace {

TEST_CASE("kilnd makes itself undumpable and turns core dumps off", "[hardening]") {
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (::prctl(PR_GET_DUMPABLE) != 1) ::_exit(2);  // a normal process to begin with
    if (!keepSecretsOutOfCoreDumps()) ::_exit(3);
    rlimit core{};
    if (::getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0 || core.rlim_max != 0) {
      ::_exit(4);
    }
    ::_exit(::prctl(PR_GET_DUMPABLE) == 0 ? 0 : 5);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace kiln
