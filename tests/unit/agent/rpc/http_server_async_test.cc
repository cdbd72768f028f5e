// The asynchronous handler path: the I/O thread hands the request on, and a Respond answers later
// from any thread. Run these under the ASan build too: most of what can go wrong here (a Respond
// outliving the server, an answer racing stop()) is a use-after-free, not a wrong status.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/rpc/http_server.h"
#include "agent/rpc/json_response.h"
#include "tests/support/test_http_client.h"

namespace kiln::rpc {
namespace {

using namespace std::chrono_literals;
using testing::makeRequest;
using testing::roundTrip;
using testing::TestClient;
using testing::TestResponse;

// Threads a test starts to answer from; joined at the end of the scope, so declare it after the
// server when the answers must come before the server goes, and before it when they must not.
class Answerers {
 public:
  ~Answerers() { joinAll(); }
  void run(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    threads_.emplace_back(std::move(job));
  }
  void joinAll() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  std::mutex mutex_;
  std::vector<std::thread> threads_;
};

// Responds parked by a handler, for the test to answer (or drop) when it chooses.
class Parked {
 public:
  void park(Respond respond) {
    {
      std::lock_guard lock(mutex_);
      responds_.push_back(std::move(respond));
    }
    arrived_.notify_all();
  }
  // The oldest parked Respond, once there is one (nullopt after 5 s).
  std::optional<Respond> take() {
    std::unique_lock lock(mutex_);
    if (!arrived_.wait_for(lock, 5s, [this] { return !responds_.empty(); })) return std::nullopt;
    Respond respond = std::move(responds_.front());
    responds_.pop_front();
    return respond;
  }

 private:
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<Respond> responds_;
};

HttpResponse pathEcho(const HttpRequest& request) {
  return jsonResponse(200, {{"path", request.path}});
}

std::unique_ptr<HttpServer> startAsync(AsyncRequestHandler handler, ServerLimits limits = {},
                                       unsigned io_threads = 1) {
  auto server = std::make_unique<HttpServer>("127.0.0.1", 0, limits, std::move(handler));
  Result<void> started = server->start(io_threads);
  INFO((started ? std::string() : started.error().message));
  REQUIRE(started.ok());
  return server;
}

std::string pathOf(const std::optional<TestResponse>& response) {
  REQUIRE(response.has_value());
  return nlohmann::json::parse(response->body)["path"];
}

void requireServerError(const std::optional<TestResponse>& response) {
  REQUIRE(response.has_value());
  CHECK(response->status == 500);
  CHECK(nlohmann::json::parse(response->body)["error"]["code"] == 500);
}

TEST_CASE("HttpServer: an asynchronous handler answers from another thread", "[rpc][http]") {
  Answerers answerers;
  auto server = startAsync([&](HttpRequest request, Respond respond) {
    answerers.run([request = std::move(request), respond] {
      std::this_thread::sleep_for(20ms);
      respond(pathEcho(request));
    });
  });
  TestClient client = TestClient::connect(server->port());
  for (const char* path : {"/one", "/two"}) {  // and the connection stays usable
    REQUIRE(client.send(makeRequest("GET", path)));
    CHECK(pathOf(client.readResponse()) == path);
  }
  answerers.joinAll();
}

TEST_CASE("HttpServer: a handler may take longer than read_timeout", "[rpc][http]") {
  ServerLimits limits;
  limits.read_timeout = 200ms;
  Answerers answerers;
  auto server = startAsync(
      [&](HttpRequest request, Respond respond) {
        answerers.run([request = std::move(request), respond] {
          std::this_thread::sleep_for(700ms);  // more than three read deadlines
          respond(pathEcho(request));
        });
      },
      limits);
  TestClient client = TestClient::connect(server->port());
  REQUIRE(client.send(makeRequest("GET", "/slow")));
  auto response = client.readResponse(5s);
  CHECK(pathOf(response) == "/slow");
  // The next request gets a fresh read deadline, as on any kept-alive connection.
  REQUIRE(client.send(makeRequest("GET", "/again")));
  CHECK(pathOf(client.readResponse(5s)) == "/again");
  answerers.joinAll();
}

TEST_CASE("HttpServer: a slow asynchronous handler does not hold up other connections",
          "[rpc][http]") {
  Parked parked;
  auto server = startAsync([&](HttpRequest request, Respond respond) {
    if (request.path == "/slow") return parked.park(std::move(respond));
    respond(pathEcho(request));
  });  // one I/O thread: a handler that blocked it would stall everything
  TestClient slow = TestClient::connect(server->port());
  REQUIRE(slow.send(makeRequest("GET", "/slow")));
  std::optional<Respond> respond = parked.take();
  REQUIRE(respond.has_value());

  auto start = std::chrono::steady_clock::now();
  CHECK(pathOf(roundTrip(server->port(), makeRequest("GET", "/fast"))) == "/fast");
  CHECK(std::chrono::steady_clock::now() - start < 1s);

  (*respond)(jsonResponse(200, {{"path", "/slow"}}));
  CHECK(pathOf(slow.readResponse()) == "/slow");
}

TEST_CASE("HttpServer: a Respond destroyed without a call answers 500", "[rpc][http]") {
  Answerers answerers;
  auto server = startAsync([&](HttpRequest request, Respond respond) {
    if (request.path == "/drop-here") return;  // `respond` goes when the handler returns
    if (request.path == "/drop-elsewhere") {
      answerers.run([respond = std::move(respond)]() mutable {
        std::this_thread::sleep_for(20ms);
        respond = nullptr;
      });
      return;
    }
    respond(pathEcho(request));
  });
  TestClient client = TestClient::connect(server->port());
  for (const char* path : {"/drop-here", "/drop-elsewhere"}) {
    INFO(path);
    REQUIRE(client.send(makeRequest("GET", path)));
    requireServerError(client.readResponse());
  }
  // The 500 is an ordinary answer: the connection serves on.
  REQUIRE(client.send(makeRequest("GET", "/after")));
  CHECK(pathOf(client.readResponse()) == "/after");
  answerers.joinAll();
}

TEST_CASE("HttpServer: only the first answer counts", "[rpc][http]") {
  auto server = startAsync([&](HttpRequest request, Respond respond) {
    Respond copy = respond;
    respond(pathEcho(request));
    copy(jsonResponse(418, {{"path", "a second answer"}}));
  });
  TestClient client = TestClient::connect(server->port());
  REQUIRE(client.send(makeRequest("GET", "/first")));
  auto first = client.readResponse();
  CHECK(pathOf(first) == "/first");
  CHECK(first->status == 200);
  // No stray second response precedes the next answer.
  REQUIRE(client.send(makeRequest("GET", "/next")));
  CHECK(pathOf(client.readResponse()) == "/next");
}

TEST_CASE("HttpServer: an asynchronous handler that throws gets a 500", "[rpc][http]") {
  Answerers answerers;
  auto server = startAsync([&](HttpRequest request, Respond respond) {
    if (request.path == "/throw") throw std::runtime_error("handler failure for the test");
    if (request.path == "/answer-then-throw") {
      respond(pathEcho(request));
      throw std::runtime_error("late failure for the test");
    }
    respond(pathEcho(request));
  });
  TestClient client = TestClient::connect(server->port());
  REQUIRE(client.send(makeRequest("GET", "/throw")));
  auto failed = client.readResponse();
  requireServerError(failed);
  CHECK(failed->body.find("handler failure") == std::string::npos);
  // An answer given before the exception stands.
  REQUIRE(client.send(makeRequest("GET", "/answer-then-throw")));
  CHECK(pathOf(client.readResponse()) == "/answer-then-throw");
  REQUIRE(client.send(makeRequest("GET", "/after")));
  CHECK(pathOf(client.readResponse()) == "/after");
}

TEST_CASE("HttpServer: pipelined requests reach an asynchronous handler one at a time",
          "[rpc][http]") {
  std::atomic<int> outstanding{0};
  std::atomic<int> most_outstanding{0};
  std::mutex order_mutex;
  std::vector<std::string> order;
  Answerers answerers;
  auto server = startAsync(
      [&](HttpRequest request, Respond respond) {
        int now = ++outstanding;
        if (now > most_outstanding) most_outstanding = now;
        {
          std::lock_guard lock(order_mutex);
          order.push_back(request.path);
        }
        answerers.run([&, request = std::move(request), respond] {
          std::this_thread::sleep_for(50ms);
          --outstanding;
          respond(pathEcho(request));
        });
      },
      {}, 2);
  TestClient client = TestClient::connect(server->port());
  REQUIRE(client.send(makeRequest("GET", "/p1") + makeRequest("GET", "/p2") +
                      makeRequest("GET", "/p3")));
  CHECK(pathOf(client.readResponse()) == "/p1");
  CHECK(pathOf(client.readResponse()) == "/p2");
  CHECK(pathOf(client.readResponse()) == "/p3");
  answerers.joinAll();
  CHECK(most_outstanding == 1);
  CHECK(order == std::vector<std::string>{"/p1", "/p2", "/p3"});
}

TEST_CASE("HttpServer::stop with answers still outstanding", "[rpc][http]") {
  Parked parked;
  auto server =
      startAsync([&](HttpRequest, Respond respond) { parked.park(std::move(respond)); }, {}, 2);
  TestClient first = TestClient::connect(server->port());
  TestClient second = TestClient::connect(server->port());
  REQUIRE(first.send(makeRequest("GET", "/first")));
  REQUIRE(second.send(makeRequest("GET", "/second")));
  std::optional<Respond> answer_later = parked.take();
  std::optional<Respond> drop_later = parked.take();
  REQUIRE(answer_later.has_value());
  REQUIRE(drop_later.has_value());

  SECTION("answered and dropped after stop() and after the server is gone") {
    auto start = std::chrono::steady_clock::now();
    server->stop();
    CHECK(std::chrono::steady_clock::now() - start < 1s);  // it does not wait for the answers
    CHECK(first.waitForClose(2s));
    (*answer_later)(jsonResponse(200, {}));
    server.reset();
    (*answer_later)(jsonResponse(200, {}));  // a second call, later still
    answer_later.reset();
    drop_later.reset();
  }
  SECTION("answered by another thread while stop() runs") {
    std::atomic<bool> go{false};
    std::thread racer([&] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < 1000; ++i) std::this_thread::yield();
      (*answer_later)(jsonResponse(200, {}));
      drop_later.reset();
    });
    go = true;
    server->stop();
    racer.join();
    server.reset();
  }
  CHECK(first.waitForClose(2s));
  CHECK(second.waitForClose(2s));
}

TEST_CASE("HttpServer sends a response's extra headers, and refuses unsafe ones", "[rpc][http]") {
  auto server = startAsync([](HttpRequest request, Respond respond) {
    HttpResponse response = pathEcho(request);
    response.status = 503;
    if (request.path == "/retry") response.headers = {{"Retry-After", "1"}, {"X-Kiln", "a b"}};
    if (request.path == "/crlf") response.headers = {{"Retry-After", "1\r\nSet-Cookie: x=1"}};
    if (request.path == "/bad-name") response.headers = {{"Retry After", "1"}};
    if (request.path == "/framing") response.headers = {{"content-length", "0"}};
    if (request.path == "/type") response.headers = {{"Content-Type", "text/html"}};
    respond(std::move(response));
  });
  auto retry = roundTrip(server->port(), makeRequest("GET", "/retry"));
  REQUIRE(retry.has_value());
  CHECK(retry->status == 503);
  CHECK(retry->header("retry-after") == "1");
  CHECK(retry->header("x-kiln") == "a b");
  CHECK(retry->header("content-type") == "application/json");

  for (const char* path : {"/crlf", "/bad-name", "/framing", "/type"}) {
    INFO(path);
    auto refused = roundTrip(server->port(), makeRequest("GET", path));
    requireServerError(refused);
    CHECK(refused->header("set-cookie").empty());
    CHECK(refused->header("retry-after").empty());
  }
}

}  // namespace
}  // namespace kiln::rpc
