#include "tests/integration/kilnd_harness.h"

#include "tests/integration/libvirtd_control.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "common/command_runner.h"
#include "tests/support/local_images.h"

namespace kiln::testing {
namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

std::uint16_t freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string randomToken() {
  std::random_device rd;
  std::string t;
  for (int i = 0; i < 32; ++i) t += "0123456789abcdef"[rd() % 16];
  return t;
}

}  // namespace

std::string guestImagePath() {
  const char* p = std::getenv("KILN_TEST_GUEST_IMAGE");
  return p ? p : "";
}

std::optional<std::string> virsh(const std::vector<std::string>& args) {
  PosixCommandRunner runner;
  CommandSpec spec;
  spec.argv = {"virsh", "-q", "-c", "qemu:///system"};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.timeout = std::chrono::seconds(30);
  auto out = runner.run(spec);
  if (!out || !out->succeeded()) return std::nullopt;
  return out->stdout_text;
}

std::map<std::string, std::uint64_t> consoleDisks(const std::string& console) {
  std::map<std::string, std::uint64_t> disks;
  std::istringstream in(console);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream words(line);
    std::string tag, dev;
    std::uint64_t bytes = 0;
    if (words >> tag >> dev >> bytes && tag == "KILN-DISK") disks[dev] = bytes;
  }
  return disks;
}

std::string sha256File(const std::string& path) { return hexDigest("sha256", readAll(path)); }

KilndHarness::KilndHarness(std::string extra_config) {
  state_path_ = dir_.path() + "/state";
  images_dir_ = dir_.path() + "/images";
  config_path_ = dir_.path() + "/kiln.conf";
  // Another build's kilnd (scripts/test.sh runs some tests against the ThreadSanitizer build).
  if (const char* other = std::getenv("KILN_TEST_KILND"); other && *other) binary_ = other;
  stdfs::create_directories(images_dir_);
  token_ = randomToken();
  port_ = freePort();
  std::string token_file = dir_.path() + "/tokens";
  std::ofstream(token_file) << "# test token\n" << token_ << " admin,scheduler\n";
  ::chmod(token_file.c_str(), 0600);
  std::ofstream(dir_.path() + "/flavors.yaml")
      << "flavors:\n"
         "  - {name: test.small, vcpus: 1, memory_mb: 256, root_gb: 1, ephemeral_gb: 1}\n"
         "  - {name: m1.tiny, vcpus: 1, memory_mb: 512, root_gb: 1, ephemeral_gb: 0}\n";
  std::ofstream(config_path_) << "[DEFAULT]\nstate_path = " << state_path_
                              << "\nflavors_file = " << dir_.path() << "/flavors.yaml"
                              << "\nlog_level = debug\n"
                              << "[api]\nlisten = 127.0.0.1:" << port_
                              << "\ntoken_file = " << token_file << "\n"
                              << "[libvirt]\nvirt_type = qemu\n"
                              << "[images]\nlocal_dir = " << images_dir_ << "\n"
                              << extra_config << "\n";
  // It may hold [keystone] password: private, as kilnd insists.
  ::chmod(config_path_.c_str(), 0600);
}

KilndHarness::~KilndHarness() {
  if (pid_ > 0) stop();
  // Tests clean up after themselves; this is the safety net for a failed test, so that no
  // domain of this harness outlives it.
  if (auto list = virsh({"list", "--all", "--name"})) {
    std::istringstream in(*list);
    std::string name;
    while (in >> name) {
      if (!name.starts_with("kiln-")) continue;
      auto xml = virsh({"dumpxml", name});
      if (xml && xml->find(state_path_) != std::string::npos) {
        virsh({"destroy", name});
        virsh({"undefine", "--nvram", name});
      }
    }
  }
}

void KilndHarness::start() {
  if (tryStart()) return;
  // Without libvirt every later test fails the same way: say first which daemon is missing.
  if (!virsh({"version"})) FAIL("kilnd did not start: " << libvirtdDiagnosis() << logText());
  FAIL("kilnd did not start:\n" << logText());
}

bool KilndHarness::tryStart() {
  REQUIRE(pid_ < 0);
  std::string log = dir_.path() + "/kilnd.log";
  pid_ = ::fork();
  REQUIRE(pid_ >= 0);
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    if (!notify_path_.empty()) ::setenv("NOTIFY_SOCKET", notify_path_.c_str(), 1);
    for (const auto& [name, value] : env_) ::setenv(name.c_str(), value.c_str(), 1);
    ::execl(binary_.c_str(), binary_.c_str(), "--config", config_path_.c_str(), nullptr);
    _exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    auto r = api("GET", "/healthz", "", false);
    if (r.status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void KilndHarness::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_ = -1;
}

void KilndHarness::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

bool KilndHarness::waitKilled(std::chrono::seconds timeout) {
  if (pid_ <= 0) return false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string KilndHarness::addToken(const std::string& roles, const std::string& project) {
  std::string token = randomToken();
  std::ofstream(dir_.path() + "/tokens", std::ios::app)
      << token << " " << roles << " " << project << "\n";
  return token;
}

void KilndHarness::signal(int sig) {
  REQUIRE(pid_ > 0);
  ::kill(pid_, sig);
}

void KilndHarness::enableNotifySocket() {
  notify_path_ = dir_.path() + "/notify.sock";
  notify_fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  REQUIRE(notify_fd_.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(notify_path_.size() < sizeof addr.sun_path);
  std::copy(notify_path_.begin(), notify_path_.end(), addr.sun_path);
  REQUIRE(::bind(notify_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
}

std::string KilndHarness::readNotify(std::chrono::milliseconds timeout) {
  pollfd pfd{notify_fd_.get(), POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return "";
  char buf[4096];
  ssize_t n = ::recv(notify_fd_.get(), buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

KilndHarness::OneShot KilndHarness::runOnce(const std::vector<std::string>& args) {
  PosixCommandRunner runner;
  CommandSpec spec;
  spec.argv = {binary_, "--config", config_path_};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.timeout = std::chrono::seconds(120);
  auto out = runner.run(spec);
  REQUIRE(out);
  return {out->term_signal == 0 ? out->exit_code : 128 + out->term_signal,
          out->stdout_text + out->stderr_text};
}

std::string KilndHarness::logText() const { return readAll(dir_.path() + "/kilnd.log"); }

ApiResponse KilndHarness::api(const std::string& method, const std::string& path,
                              const std::string& body, bool with_token,
                              const std::string& extra_headers) {
  std::string headers = extra_headers;
  if (with_token) headers += "Authorization: Bearer " + token_ + "\r\n";
  if (!body.empty()) headers += "Content-Type: application/json\r\n";
  std::string request = rpc::testing::makeRequest(method, path, body, headers);
  auto resp = transport_ ? transport_(request) : rpc::testing::roundTrip(port_, request);
  ApiResponse out;
  if (!resp) return out;
  out.status = resp->status;
  out.body = resp->body;
  out.json = json::parse(out.body, nullptr, false);
  if (out.json.is_discarded()) out.json = nullptr;
  return out;
}

json KilndHarness::waitForState(const std::string& uuid, const std::string& state,
                                std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = api("GET", "/v1/instances/" + uuid);
    if (r.status == 200) {
      last = r.json;
      std::string now = last.value("state", "");
      if (now == state) return last;
      // A launch that failed will not turn into anything else; other states may still change.
      if (now == "error" && last.value("task_state", json()).is_null()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL("instance " << uuid << " did not reach '" << state << "': " << last.dump(2) << "\n"
                   << logText());
  return last;
}

bool KilndHarness::waitGone(const std::string& uuid, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (api("GET", "/v1/instances/" + uuid).status == 404) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

nlohmann::json KilndHarness::waitIdle(const std::string& uuid, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  nlohmann::json rec;
  while (std::chrono::steady_clock::now() < deadline) {
    rec = api("GET", "/v1/instances/" + uuid).json;
    if (rec.is_object() && rec.contains("task_state") && rec["task_state"].is_null()) return rec;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("instance " << uuid << " stayed busy: " << rec.dump());
  return rec;
}

std::string KilndHarness::waitForConsole(const std::string& uuid, const std::string& needle,
                                         std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string text;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = api("GET", "/v1/instances/" + uuid + "/console");
    if (r.status == 200) {
      text = r.body;
      if (text.find(needle) != std::string::npos) return text;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  FAIL("console of " << uuid << " never showed '" << needle << "':\n" << text);
  return text;
}

void KilndHarness::addGuestImage(const std::string& image_id) {
  std::string path = guestImagePath();
  REQUIRE_FALSE(path.empty());
  addLocalImage(images_dir_, image_id, readAll(path), "raw");
}

}  // namespace kiln::testing
