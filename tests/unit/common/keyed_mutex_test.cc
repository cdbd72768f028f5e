// KeyedMutex: one holder per key, other keys free, nothing kept once nobody holds a key.

#include "common/keyed_mutex.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

namespace {

using namespace std::chrono_literals;

TEST_CASE("keyed mutex: one key at a time, other keys free, entries dropped") {
  kiln::KeyedMutex locks;
  std::atomic<bool> second_held{false};
  {
    auto a = locks.lock("a");
    auto b = locks.lock("b");  // another key does not wait
    CHECK(locks.keysHeld() == 2);
    std::thread waiter([&] {
      auto again = locks.lock("a");
      second_held = true;
    });
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(second_held.load());
    { auto released = std::move(a); }
    waiter.join();
    CHECK(second_held.load());
  }
  CHECK(locks.keysHeld() == 0);
}

}  // namespace
