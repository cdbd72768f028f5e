#pragma once
#include <chrono>
#include <string>

namespace kiln {

// Time is a dependency: tests age cache entries and fire timeouts with a ManualClock
// (tests/support/manual_clock.h).
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

// RFC 3339 UTC with milliseconds, the form the API returns.
std::string formatUtc(std::chrono::system_clock::time_point t);

}  // namespace kiln
