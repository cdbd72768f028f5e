#pragma once
// A clock that moves only when the test says so. Safe to read from the workers while the test
// thread advances it.

#include <chrono>
#include <mutex>

#include "common/clock.h"

namespace kiln::testing {

class ManualClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point steadyNow() const override {
    std::lock_guard lock(mutex_);
    return steady_;
  }
  std::chrono::system_clock::time_point wallNow() const override {
    std::lock_guard lock(mutex_);
    return wall_;
  }
  void advance(std::chrono::milliseconds d) {
    std::lock_guard lock(mutex_);
    steady_ += d;
    wall_ += d;
  }

 private:
  mutable std::mutex mutex_;
  std::chrono::steady_clock::time_point steady_{};
  // 2023-11-14T22:13:20Z.
  std::chrono::system_clock::time_point wall_{std::chrono::seconds(1'700'000'000)};
};

}  // namespace kiln::testing
