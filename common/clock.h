#pragma once
#include <chrono>
#include <string>

namespace kiln {

// Time is a dependency: tests age cache entries and fire timeouts with a ManualClock.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point steadyNow() const = 0;
  virtual std::chrono::system_clock::time_point wallNow() const = 0;
};

class SystemClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point steadyNow() const override {
    return std::chrono::steady_clock::now();
  }
  std::chrono::system_clock::time_point wallNow() const override {
    return std::chrono::system_clock::now();
  }
};

class ManualClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point steadyNow() const override { return steady_; }
  std::chrono::system_clock::time_point wallNow() const override { return wall_; }
  void advance(std::chrono::milliseconds d) {
    steady_ += d;
    wall_ += d;
  }

 private:
  std::chrono::steady_clock::time_point steady_{};
  std::chrono::system_clock::time_point wall_{std::chrono::seconds(1'700'000'000)};
};

// RFC 3339 UTC with milliseconds, the form the API returns.
std::string formatUtc(std::chrono::system_clock::time_point t);

}  // namespace kiln
