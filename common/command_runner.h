#pragma once
// Running external programs (qemu-img, later iscsiadm) behind an interface so unit tests can
// script them. Arguments are passed as a vector, never through a shell.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace kiln {

struct ResourceLimits {
  // Like nova's prlimit wrapper for qemu-img: a hostile image must not make a helper spin or
  // allocate without bound.
  std::optional<std::uint64_t> cpu_seconds;
  std::optional<std::uint64_t> address_space_bytes;
};

struct CommandSpec {
  std::vector<std::string> argv;
  ResourceLimits limits;
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::size_t max_output_bytes = 1 << 20;
};

struct CommandOutput {
  int exit_code = 0;    // when the process exited
  int term_signal = 0;  // non-zero when it was killed by a signal
  std::string stdout_text;
  std::string stderr_text;
  bool succeeded() const { return exit_code == 0 && term_signal == 0; }
};

class CommandRunner {
 public:
  virtual ~CommandRunner() = default;
  // Fails only when the program could not be run; a non-zero exit is reported in the output.
  virtual Result<CommandOutput> run(const CommandSpec& spec) = 0;
};

// fork/exec with rlimits applied in the child, stdout/stderr captured, a wall-clock timeout.
class PosixCommandRunner final : public CommandRunner {
 public:
  Result<CommandOutput> run(const CommandSpec& spec) override;
};

// "qemu-img create … failed (exit 1): <stderr>" for error messages.
std::string describeFailure(const CommandSpec& spec, const CommandOutput& out);

}  // namespace kiln
