// The worker pool: order, the bound on waiting jobs, and shutdown.
#include "common/work_queue.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>
#include <vector>

namespace kiln {
namespace {

// Holds the one worker inside a job until released, so the test controls what is queued.
struct Gate {
  std::mutex mutex;
  std::condition_variable changed;
  bool entered = false;
  bool open = false;

  void hold() {
    std::unique_lock lock(mutex);
    entered = true;
    changed.notify_all();
    changed.wait(lock, [this] { return open; });
  }
  void waitEntered() {
    std::unique_lock lock(mutex);
    changed.wait(lock, [this] { return entered; });
  }
  void release() {
    std::lock_guard lock(mutex);
    open = true;
    changed.notify_all();
  }
};

TEST_CASE("a bounded work queue refuses jobs beyond its bound, then takes them again",
          "[work_queue]") {
  WorkQueue queue(1, 2);
  Gate gate;
  std::mutex ran_mutex;
  std::vector<int> ran;
  auto record = [&](int n) {
    return [&, n] {
      std::lock_guard lock(ran_mutex);
      ran.push_back(n);
    };
  };
  REQUIRE(queue.tryPost([&] { gate.hold(); }) == WorkQueue::Admission::kQueued);
  gate.waitEntered();  // the running job does not count against the bound
  CHECK(queue.tryPost(record(1)) == WorkQueue::Admission::kQueued);
  CHECK(queue.tryPost(record(2)) == WorkQueue::Admission::kQueued);
  CHECK(queue.tryPost(record(3)) == WorkQueue::Admission::kFull);
  CHECK_FALSE(queue.post(record(3)));
  CHECK(queue.pending() == 2);
  gate.release();
  queue.shutdown();  // runs what was queued
  CHECK(ran == std::vector<int>{1, 2});
  CHECK(queue.tryPost(record(4)) == WorkQueue::Admission::kStopped);
}

TEST_CASE("an unbounded work queue runs jobs in order of arrival", "[work_queue]") {
  WorkQueue queue(1);
  std::vector<int> ran;
  for (int i = 0; i < 100; ++i) REQUIRE(queue.post([&ran, i] { ran.push_back(i); }));
  queue.shutdown();
  REQUIRE(ran.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(ran[static_cast<std::size_t>(i)] == i);
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

TEST_CASE("waitIdle returns once queued jobs, and the jobs they queue, have run", "[work_queue]") {
  WorkQueue queue(2);
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) {
    REQUIRE(queue.post([&] {
      ++ran;
      queue.post([&] { ++ran; });
    }));
  }
  queue.waitIdle();
  CHECK(ran == 20);
  CHECK(queue.pending() == 0);
}

}  // namespace
}  // namespace kiln
