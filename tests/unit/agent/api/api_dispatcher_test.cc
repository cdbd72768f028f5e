// Where API requests run: /healthz on the calling (I/O) thread even while every worker is busy,
// everything else on the pool, and a full queue refused at once with 503 and Retry-After.
#include "agent/api/api_dispatcher.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/rpc/json_response.h"

namespace kiln::api {
namespace {

using namespace std::chrono_literals;
using rpc::HttpRequest;
using rpc::HttpResponse;

// A handler that holds every /block request until the test opens it, and says where it ran.
class BlockingHandler {
 public:
  HttpResponse operator()(const HttpRequest& request) {
    if (request.path == "/throw") throw std::runtime_error("handler failure for the test");
    std::unique_lock lock(mutex_);
    ++running_;
    changed_.notify_all();
    if (request.path == "/block") changed_.wait(lock, [this] { return open_; });
    --running_;
    return rpc::jsonResponse(200, {{"path", request.path}});
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  bool waitRunning(int count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 5s, [&] { return running_ == count; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int running_ = 0;
  bool open_ = false;
};

// What one request's Respond received, from whichever thread.
struct Answer {
  std::promise<HttpResponse> promise;
  std::future<HttpResponse> future = promise.get_future();
  std::thread::id thread;

  rpc::Respond respond() {
    return [this](HttpResponse response) {
      thread = std::this_thread::get_id();
      promise.set_value(std::move(response));
    };
  }
  bool ready(std::chrono::milliseconds within = 0ms) {
    return future.wait_for(within) == std::future_status::ready;
  }
};

HttpRequest get(const std::string& path) {
  HttpRequest request;
  request.method = "GET";
  request.path = path;
  return request;
}

TEST_CASE("ApiDispatcher: with the pool busy, /healthz still answers and a full queue gets 503",
          "[api][dispatcher]") {
  BlockingHandler handler;
  WorkQueue pool(1, 1);  // one worker, one request waiting at most
  ApiDispatcher dispatcher(pool, [&](const HttpRequest& r) { return handler(r); });

  Answer running, queued, refused, health;
  dispatcher.dispatch(get("/block"), running.respond());
  REQUIRE(handler.waitRunning(1));  // the worker holds it
  dispatcher.dispatch(get("/block"), queued.respond());
  CHECK_FALSE(queued.ready(50ms));

  dispatcher.dispatch(get("/v1/flavors"), refused.respond());
  REQUIRE(refused.ready());  // at once, on the caller's thread
  HttpResponse busy = refused.future.get();
  CHECK(busy.status == 503);
  CHECK(busy.headers == std::vector<std::pair<std::string, std::string>>{{"Retry-After", "1"}});
  auto body = nlohmann::json::parse(busy.body);
  CHECK(body["error"]["code"] == 503);
  CHECK_FALSE(body["error"]["message"].get<std::string>().empty());

  dispatcher.dispatch(get("/healthz"), health.respond());
  REQUIRE(health.ready());
  CHECK(health.thread == std::this_thread::get_id());
  CHECK(health.future.get().status == 200);

  handler.open();
  REQUIRE(running.ready(5s));
  REQUIRE(queued.ready(5s));
  CHECK(running.future.get().status == 200);
  CHECK(queued.future.get().status == 200);
  CHECK(running.thread != std::this_thread::get_id());
}

TEST_CASE("ApiDispatcher: a handler that throws answers 500", "[api][dispatcher]") {
  BlockingHandler handler;
  WorkQueue pool(1);
  ApiDispatcher dispatcher(pool, [&](const HttpRequest& r) { return handler(r); });
  Answer failed;
  dispatcher.dispatch(get("/throw"), failed.respond());
  REQUIRE(failed.ready(5s));
  HttpResponse response = failed.future.get();
  CHECK(response.status == 500);
  CHECK(response.body.find("handler failure") == std::string::npos);
}

TEST_CASE("ApiDispatcher::stop answers queued requests without running them", "[api][dispatcher]") {
  BlockingHandler handler;
  WorkQueue pool(1, 4);
  ApiDispatcher dispatcher(pool, [&](const HttpRequest& r) { return handler(r); });
  Answer running, queued, late, health;
  dispatcher.dispatch(get("/block"), running.respond());
  REQUIRE(handler.waitRunning(1));
  dispatcher.dispatch(get("/block"), queued.respond());

  dispatcher.stop();
  dispatcher.dispatch(get("/v1/host"), late.respond());
  REQUIRE(late.ready());
  CHECK(late.future.get().status == 503);
  dispatcher.dispatch(get("/healthz"), health.respond());  // still answered: it costs nothing
  CHECK(health.future.get().status == 200);

  handler.open();
  pool.shutdown();
  CHECK(running.future.get().status == 200);  // it was already running
  HttpResponse dropped = queued.future.get();
  CHECK(dropped.status == 503);
}

}  // namespace
}  // namespace kiln::api
