#include "tests/integration/libvirtd_control.h"

#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/integration/kilnd_harness.h"

namespace kiln::testing {
namespace {

constexpr const char* kPidFile = "/run/libvirtd.pid";
constexpr const char* kLogFile = "/var/log/libvirt/libvirtd.log";
// libvirtd's shutdown waits for its drivers; with many domains and secrets it takes seconds.
constexpr auto kWait = std::chrono::seconds(60);
constexpr auto kPoll = std::chrono::milliseconds(50);

pid_t libvirtdPid() {
  std::ifstream in(kPidFile);
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

bool alive(pid_t pid) { return pid > 1 && ::kill(pid, 0) == 0; }

std::string logTail(std::size_t max_lines) {
  std::ifstream in(kLogFile);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (lines.size() > max_lines) lines.erase(lines.begin());
  }
  std::ostringstream out;
  for (const auto& line : lines) out << line << '\n';
  return out.str();
}

}  // namespace

void stopLibvirtd() {
  const pid_t pid = libvirtdPid();
  REQUIRE(alive(pid));
  REQUIRE(::kill(pid, SIGTERM) == 0);
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (alive(pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kPoll);
  }
  INFO("libvirtd (pid " << pid << ") did not exit within " << kWait.count() << " s of SIGTERM");
  REQUIRE_FALSE(alive(pid));
}

void startLibvirtd() {
  const std::string command =
      std::string("LIBVIRT_LOG_OUTPUTS='3:file:") + kLogFile + "' libvirtd -d";
  if (std::system(command.c_str()) != 0)
    FAIL("'" << command << "' failed; " << libvirtdDiagnosis());
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  bool answers = false;
  while (!(answers = virsh({"version"}).has_value()) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kPoll);
  }
  if (!answers) FAIL("qemu:///system did not answer after a start; " << libvirtdDiagnosis());
}

std::string libvirtdDiagnosis() {
  const pid_t pid = libvirtdPid();
  std::ostringstream out;
  if (alive(pid)) {
    out << "libvirtd runs (pid " << pid << ")";
  } else {
    out << "libvirtd does not run (" << kPidFile << " names pid " << pid << ")";
  }
  out << "; the end of " << kLogFile << ":\n" << logTail(20);
  return out.str();
}

}  // namespace kiln::testing
