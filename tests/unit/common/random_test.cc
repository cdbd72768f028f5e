#include "common/random.h"

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <set>
#include <string>

#include "common/uuid.h"

namespace {

// What a forked child's first randomUuid() is, read back through a pipe.
std::string uuidFromForkedChild() {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    std::string id = kiln::randomUuid();
    ssize_t n = ::write(fds[1], id.data(), id.size());
    _exit(n == static_cast<ssize_t>(id.size()) ? 0 : 1);
  }
  ::close(fds[1]);
  char buf[64] = {};
  ssize_t n = ::read(fds[0], buf, sizeof buf);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(n == 36);
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace

TEST_CASE("random uuids are version 4, canonical and distinct") {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = kiln::randomUuid();
    REQUIRE(kiln::canonicalUuid(id) == id);
    CHECK(id[14] == '4');
    CHECK(std::string("89ab").find(id[19]) != std::string::npos);
    seen.insert(id);
  }
  CHECK(seen.size() == 10000);
}

TEST_CASE("both halves of a fork draw different uuids") {
  // A seeded userspace generator is copied by fork: parent and child would repeat each other.
  (void)kiln::randomUuid();  // the parent's generator, if it had one, is seeded now
  std::string child = uuidFromForkedChild();
  CHECK(child != kiln::randomUuid());
  CHECK(child != uuidFromForkedChild());
}

TEST_CASE("randomBytes fills every byte") {
  std::uint8_t buf[4096] = {};
  kiln::randomBytes(buf);
  int zeros = 0;
  for (auto b : buf) zeros += b == 0;
  CHECK(zeros < 64);  // ~16 expected for uniform bytes
}
