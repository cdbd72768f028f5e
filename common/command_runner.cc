#include "common/command_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/fs.h"
#include "common/unique_fd.h"

extern char** environ;

namespace kiln {
namespace {

void applyLimit(int resource, std::uint64_t value) {
  struct rlimit lim {
    value, value
  };
  ::setrlimit(resource, &lim);
}

}  // namespace

Result<CommandOutput> PosixCommandRunner::run(const CommandSpec& spec) {
  if (spec.argv.empty()) return Error::internal("Cannot run an empty command line");
  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return Error::internal(fmt::format("pipe failed: {}", fs::errnoText(errno)));
  }
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return Error::internal(fmt::format("pipe failed: {}", fs::errnoText(errno)));
  }
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);

  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // fork rather than posix_spawn: the rlimits must be set in the child only.
  pid_t pid = ::fork();
  if (pid < 0) return Error::internal(fmt::format("fork failed: {}", fs::errnoText(errno)));
  if (pid == 0) {
    ::dup2(out_w.get(), STDOUT_FILENO);
    ::dup2(err_w.get(), STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (spec.limits.cpu_seconds) applyLimit(RLIMIT_CPU, *spec.limits.cpu_seconds);
    if (spec.limits.address_space_bytes) applyLimit(RLIMIT_AS, *spec.limits.address_space_bytes);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  out_w.reset();
  err_w.reset();

  CommandOutput result;
  auto deadline = std::chrono::steady_clock::now() + spec.timeout;
  bool timed_out = false;
  pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.stdout_text, &result.stderr_text};
  int open_count = 2;
  char buf[16384];
  while (open_count > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    int rc = ::poll(fds, 2, static_cast<int>(left.count()));
    if (rc < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        fds[i].fd = -1;
        --open_count;
        continue;
      }
      if (sinks[i]->size() < spec.max_output_bytes) {
        sinks[i]->append(
            buf, std::min(static_cast<size_t>(n), spec.max_output_bytes - sinks[i]->size()));
      }
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  if (timed_out) {
    return Error::internal(fmt::format("'{}' did not finish within {} ms and was killed",
                                       spec.argv[0], spec.timeout.count()));
  }
  if (result.exit_code == 127 && result.stderr_text.empty()) {
    return Error::internal(fmt::format("Cannot run '{}': program not found", spec.argv[0]));
  }
  return result;
}

std::string describeFailure(const CommandSpec& spec, const CommandOutput& out) {
  std::string what = spec.argv.empty() ? "command" : spec.argv[0];
  if (spec.argv.size() > 1) what += " " + spec.argv[1];
  std::string err = out.stderr_text;
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  if (out.term_signal == SIGKILL || out.term_signal == SIGXCPU) {
    return fmt::format("{} was aborted by its resource limits (signal {})", what, out.term_signal);
  }
  if (out.term_signal != 0) {
    return fmt::format("{} was killed by signal {}: {}", what, out.term_signal, err);
  }
  return fmt::format("{} failed (exit {}): {}", what, out.exit_code, err);
}

}  // namespace kiln
