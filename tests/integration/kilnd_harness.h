#pragma once
// Runs a real kilnd against the real libvirtd and QEMU (TCG), with its own state directory,
// port, token and image directory, and talks to it over HTTP like the scheduler does.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_http_client.h"

namespace kiln::testing {

struct ApiResponse {
  int status = 0;
  std::string body;
  nlohmann::json json;  // null when the body is not JSON
};

class KilndHarness {
 public:
  // `extra_config` is appended to the generated kiln.conf.
  explicit KilndHarness(std::string extra_config = "");
  ~KilndHarness();

  void start();
  // Starts kilnd and waits for /healthz; false when kilnd exits or never becomes healthy.
  bool tryStart();
  void stop();  // SIGTERM and wait: a clean shutdown
  void kill();  // SIGKILL: a crash
  // Waits for kilnd to exit by itself (a failpoint); true when it died of SIGKILL in time.
  bool waitKilled(std::chrono::seconds timeout);
  // Runs kilnd once with this harness's configuration and `args` (--adopt, --backup PATH, ...)
  // while it is not serving; returns its exit code and what it printed (stdout, then stderr).
  struct OneShot {
    int exit_code = -1;
    std::string output;
  };
  OneShot runOnce(const std::vector<std::string>& args);
  // The kilnd executable for the next start (the default is the production kilnd, or
  // $KILN_TEST_KILND when set).
  void setBinary(std::string path) { binary_ = std::move(path); }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }  // kilnd's process id while it runs (for /proc)

  ApiResponse api(const std::string& method, const std::string& path, const std::string& body = "",
                  bool with_token = true, const std::string& extra_headers = "");
  // How api() (and so the start-up health check) reaches kilnd: one request's bytes in, the
  // response out. Default: plain HTTP to 127.0.0.1:port().
  using Transport =
      std::function<std::optional<rpc::testing::TestResponse>(const std::string& request)>;
  void setTransport(Transport transport) { transport_ = std::move(transport); }
  // Polls GET /v1/instances/{uuid} until `state`; returns the last record. Fails the test on
  // timeout or when the instance lands in another settled state.
  nlohmann::json waitForState(const std::string& uuid, const std::string& state,
                              std::chrono::seconds timeout = std::chrono::seconds(60));
  bool waitGone(const std::string& uuid, std::chrono::seconds timeout = std::chrono::seconds(60));
  // Polls GET /v1/instances/{uuid} until no task runs (task_state null); returns the record.
  // Fails the test on timeout.
  nlohmann::json waitIdle(const std::string& uuid,
                          std::chrono::seconds timeout = std::chrono::seconds(60));
  // Polls the console through the API until it contains `needle`.
  std::string waitForConsole(const std::string& uuid, const std::string& needle,
                             std::chrono::seconds timeout = std::chrono::seconds(90));

  // Adds a token with `roles` (comma-separated) and `project` to the token file and returns it;
  // kilnd sees it at its next start or SIGHUP.
  std::string addToken(const std::string& roles, const std::string& project = "");
  // The token api() sends from now on (e.g. one Keystone issued).
  void useToken(std::string token) { token_ = std::move(token); }
  // Sends `sig` to the running kilnd (SIGHUP: reload the token and policy files).
  void signal(int sig);

  // Adds the test guest (built by tests/guest/build-guest.sh) to the image directory.
  void addGuestImage(const std::string& image_id);

  // An environment variable for kilnd (applied at the next start).
  void setEnv(const std::string& name, const std::string& value) {
    unsetEnv(name);
    env_.emplace_back(name, value);
  }
  void unsetEnv(const std::string& name) {
    std::erase_if(env_, [&](const auto& kv) { return kv.first == name; });
  }
  // Makes kilnd's sd_notify messages arrive on a socket of the test (as systemd would see them).
  void enableNotifySocket();
  // The next datagram kilnd sent to the notify socket, or "" on timeout.
  std::string readNotify(std::chrono::milliseconds timeout);

  const std::string& statePath() const { return state_path_; }
  const std::string& imagesDir() const { return images_dir_; }
  const std::string& token() const { return token_; }
  const std::string& dir() const { return dir_.path(); }
  std::uint16_t port() const { return port_; }
  std::string logText() const;

 private:
  TempDir dir_;
  std::string state_path_;
  std::string images_dir_;
  std::string config_path_;
  std::string token_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
  std::string binary_ = KILND_PATH;
  std::string notify_path_;
  std::vector<std::pair<std::string, std::string>> env_;
  UniqueFd notify_fd_;
  Transport transport_;
};

// The guest image path (KILN_TEST_GUEST_IMAGE, set by CTest).
std::string guestImagePath();

// `virsh -c qemu:///system ARGS...`; returns stdout, or nullopt when virsh fails.
std::optional<std::string> virsh(const std::vector<std::string>& args);

// Lines "KILN-DISK <dev> <bytes>" from a console log.
std::map<std::string, std::uint64_t> consoleDisks(const std::string& console);

std::string sha256File(const std::string& path);

}  // namespace kiln::testing
