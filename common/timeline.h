#pragma once
// The launch timeline: each step of an operation records its name, duration and outcome. The
// API's `timeline`, the log lines and the benchmarks all read these same records.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"

namespace kiln {

struct TimelineStep {
  std::string name;
  std::int64_t duration_ms = 0;
  double duration_exact_ms = 0;  // sub-millisecond precision for benchmarks
  bool ok = true;
};

class Timeline {
 public:
  explicit Timeline(const Clock& clock) : clock_(clock) {}

  // RAII: records the step when it goes out of scope; fail() marks it failed.
  class Step {
   public:
    Step(Timeline& owner, std::string name);
    Step(const Step&) = delete;
    Step& operator=(const Step&) = delete;
    ~Step();
    void fail() { ok_ = false; }

   private:
    Timeline& owner_;
    std::string name_;
    std::chrono::steady_clock::time_point start_;
    bool ok_ = true;
  };

  Step step(std::string name) { return Step(*this, std::move(name)); }
  void record(TimelineStep step);
  std::vector<TimelineStep> steps() const;
  double totalMs() const;

 private:
  const Clock& clock_;
  mutable std::mutex mutex_;
  std::vector<TimelineStep> steps_;
};

}  // namespace kiln
