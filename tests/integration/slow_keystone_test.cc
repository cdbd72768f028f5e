// kilnd in front of a Keystone that takes 3 s to validate each token. The callers Keystone must
// judge wait those 3 s; /healthz and a caller from kiln's own token file ([keystone]
// accept_token_file) must not: the I/O threads only parse and write, and the API pool still has
// free workers. Before the API pool existed, two such validations held both I/O threads and
// every caller, /healthz included, waited behind them.

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/support/temp_dir.h"

namespace kiln::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Keystone's token validation (GET /v3/auth/tokens), answered only after `delay`, one thread per
// connection so that validations overlap as they would against a real, slow Keystone. Tokens it
// knows get the admin role on a system-scoped token (an admin under kilnd's default
// [keystone] system_scope = all); others get 404.
class SlowKeystone {
 public:
  SlowKeystone(std::chrono::milliseconds delay, std::string service_token,
               std::vector<std::string> known_tokens)
      : delay_(delay),
        service_token_(std::move(service_token)),
        known_tokens_(std::move(known_tokens)) {
    listen_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listen_.valid());
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(listen_.get(), 64) == 0);
    socklen_t length = sizeof address;
    ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { acceptLoop(); });
  }

  ~SlowKeystone() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard lock(mutex_);
    for (std::thread& t : connections_) t.join();
  }

  SlowKeystone(const SlowKeystone&) = delete;
  SlowKeystone& operator=(const SlowKeystone&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v3"; }
  // Validations that have arrived, answered or not.
  int validations() const { return validations_; }

 private:
  void acceptLoop() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard lock(mutex_);
      connections_.emplace_back([this, fd] { serve(UniqueFd(fd)); });
    }
  }

  static std::string headerValue(const std::string& head, const std::string& name) {
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto at = lower.find("\r\n" + name + ":");
    if (at == std::string::npos) return "";
    auto start = head.find_first_not_of(' ', at + 3 + name.size());
    return head.substr(start, head.find("\r\n", start) - start);
  }

  void serve(UniqueFd conn) {
    std::string head;
    char buffer[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536 && !stop_) {
      pollfd p{conn.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(conn.get(), buffer, sizeof buffer, 0);
      if (n <= 0) return;
      head.append(buffer, static_cast<std::size_t>(n));
    }
    std::string status = "404 Not Found";
    std::string body = R"({"error": {"code": 404, "message": "Could not find token."}})";
    if (head.starts_with("GET /v3/auth/tokens")) {
      ++validations_;
      // Slow whatever the answer: a real Keystone under load is slow for good and bad tokens.
      for (auto until = Clock::now() + delay_; Clock::now() < until && !stop_;) {
        std::this_thread::sleep_for(10ms);
      }
      std::string subject = headerValue(head, "x-subject-token");
      if (headerValue(head, "x-auth-token") != service_token_) {
        status = "401 Unauthorized";
        body =
            R"({"error": {"code": 401, "message": "The request you have made requires authentication."}})";
      } else if (std::find(known_tokens_.begin(), known_tokens_.end(), subject) !=
                 known_tokens_.end()) {
        status = "200 OK";
        body = nlohmann::json{{"token",
                               {{"expires_at", "2099-01-01T00:00:00.000000Z"},
                                {"roles", {{{"name", "admin"}}}},
                                {"system", {{"all", true}}}}}}
                   .dump();
      }
    }
    std::string response =
        "HTTP/1.1 " + status +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    std::string_view rest = response;
    while (!rest.empty()) {
      ssize_t n = ::send(conn.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  const std::chrono::milliseconds delay_;
  const std::string service_token_;
  const std::vector<std::string> known_tokens_;
  UniqueFd listen_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> validations_{0};
  std::mutex mutex_;
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

struct Timed {
  int status = 0;
  std::chrono::microseconds took{0};
};

double ms(std::chrono::microseconds t) { return static_cast<double>(t.count()) / 1000.0; }

Timed timedCall(KilndHarness& kilnd, const std::string& path, bool with_token,
                const std::string& headers = "") {
  auto start = Clock::now();
  int status = kilnd.api("GET", path, "", with_token, headers).status;
  return {status, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start)};
}

TEST_CASE("keystone: a slow Keystone holds up only the callers it must judge",
          "[integration][auth]") {
  constexpr int kKeystoneCallers = 6;  // fewer than the 8 API workers: one is left for the others
  constexpr auto kKeystoneDelay = 3000ms;
  constexpr auto kPrompt = 300ms;
  std::vector<std::string> keystone_tokens;
  for (int i = 0; i < kKeystoneCallers; ++i) {
    keystone_tokens.push_back("gAAAAAB-slow-keystone-caller-" + std::to_string(i));
  }
  const std::string service_token = "gAAAAAB-kiln-service-token";
  SlowKeystone keystone(kKeystoneDelay, service_token, keystone_tokens);

  // kiln's own service token comes from a file, so kilnd never has to password-authenticate.
  TempDir secrets;
  const std::string service_token_file = secrets.path() + "/service-token";
  std::ofstream(service_token_file) << service_token << "\n";
  KilndHarness kilnd("[keystone]\nauth_url = " + keystone.url() + "\nservice_token_file = " +
                     service_token_file + "\naccept_token_file = true\ntimeout = 10\n");
  kilnd.start();

  std::vector<Timed> slow(kKeystoneCallers);
  std::vector<std::thread> callers;
  auto fired = Clock::now();
  for (int i = 0; i < kKeystoneCallers; ++i) {
    callers.emplace_back([&, i] {
      slow[static_cast<std::size_t>(i)] =
          timedCall(kilnd, "/v1/flavors", false,
                    "X-Auth-Token: " + keystone_tokens[static_cast<std::size_t>(i)] + "\r\n");
    });
  }
  // Every validation is at Keystone, so each of those callers holds a worker until it answers.
  while (keystone.validations() < kKeystoneCallers && Clock::now() - fired < 2s) {
    std::this_thread::sleep_for(5ms);
  }
  const int waiting_at_keystone = keystone.validations();

  std::vector<Timed> health, local;
  for (int round = 0; round < 5; ++round) {
    health.push_back(timedCall(kilnd, "/healthz", false));
    local.push_back(timedCall(kilnd, "/v1/flavors", true));  // the token file's token
  }
  const auto prompt_done = Clock::now();
  for (std::thread& caller : callers) caller.join();

  // Measured while every Keystone caller was still waiting.
  CHECK(waiting_at_keystone == kKeystoneCallers);
  CHECK(prompt_done - fired < kKeystoneDelay);
  for (std::size_t i = 0; i < health.size(); ++i) {
    INFO("round " << i << ": /healthz " << ms(health[i].took) << " ms, token-file caller "
                  << ms(local[i].took) << " ms");
    CHECK(health[i].status == 200);
    CHECK(health[i].took < kPrompt);
    CHECK(local[i].status == 200);
    CHECK(local[i].took < kPrompt);
  }
  for (const Timed& caller : slow) {
    INFO("Keystone caller: HTTP " << caller.status << " after " << ms(caller.took) << " ms");
    CHECK(caller.status == 200);
    CHECK(caller.took >= kKeystoneDelay - 100ms);
  }
  auto slowest = [](const std::vector<Timed>& calls) {
    return std::max_element(calls.begin(), calls.end(),
                            [](const Timed& a, const Timed& b) { return a.took < b.took; })
        ->took;
  };
  WARN("slowest /healthz " << ms(slowest(health)) << " ms, slowest token-file caller "
                           << ms(slowest(local)) << " ms, slowest Keystone caller "
                           << ms(slowest(slow)) << " ms");
}

TEST_CASE("keystone: accept_token_file tokens are checked first and reload on SIGHUP",
          "[integration][auth]") {
  const std::string keystone_token = "gAAAAAB-keystone-caller";
  const std::string service_token = "gAAAAAB-kiln-service-token";
  SlowKeystone keystone(0ms, service_token, {keystone_token});
  TempDir secrets;
  const std::string service_token_file = secrets.path() + "/service-token";
  std::ofstream(service_token_file) << service_token << "\n";
  const std::string keystone_config = "[keystone]\nauth_url = " + keystone.url() +
                                      "\nservice_token_file = " + service_token_file + "\n";
  const std::string from_keystone = "X-Auth-Token: " + keystone_token + "\r\n";

  SECTION("by default a token-file token means nothing once Keystone is configured") {
    KilndHarness kilnd(keystone_config);
    kilnd.start();
    CHECK(kilnd.api("GET", "/v1/flavors").status == 401);
    CHECK(kilnd.api("GET", "/v1/flavors", "", false, from_keystone).status == 200);
  }
  SECTION("with accept_token_file the file's tokens work, without asking Keystone") {
    KilndHarness kilnd(keystone_config + "accept_token_file = true\n");
    kilnd.start();
    CHECK(kilnd.api("GET", "/v1/flavors").status == 200);
    CHECK(keystone.validations() == 0);
    CHECK(kilnd.api("GET", "/v1/flavors", "", false, from_keystone).status == 200);
    CHECK(keystone.validations() == 1);

    // A token added to the file is Keystone's to judge (and refused) until kilnd re-reads it.
    const std::string added = kilnd.addToken("reader");
    const std::string as_added = "X-Auth-Token: " + added + "\r\n";
    CHECK(kilnd.api("GET", "/v1/flavors", "", false, as_added).status == 401);
    CHECK(keystone.validations() == 2);
    kilnd.signal(SIGHUP);
    int status = 0;
    for (auto until = Clock::now() + 10s; Clock::now() < until && status != 200;) {
      std::this_thread::sleep_for(100ms);
      status = kilnd.api("GET", "/v1/flavors", "", false, as_added).status;
    }
    CHECK(status == 200);
    const int validations = keystone.validations();
    CHECK(kilnd.api("GET", "/v1/flavors", "", false, as_added).status == 200);
    CHECK(keystone.validations() == validations);  // answered from the file
    CHECK(kilnd.api("GET", "/v1/flavors").status == 200);
    CHECK(kilnd.logText().find("tokens of '") != std::string::npos);
  }
}

}  // namespace
}  // namespace kiln::testing
