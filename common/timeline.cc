#include "common/timeline.h"

#include <cmath>

#include "common/log.h"

namespace kiln {

Timeline::Step::Step(Timeline& owner, std::string name)
    : owner_(owner), name_(std::move(name)), start_(owner.clock_.steadyNow()) {}

Timeline::Step::~Step() {
  auto elapsed = owner_.clock_.steadyNow() - start_;
  double ms = std::chrono::duration<double, std::milli>(elapsed).count();
  owner_.record({name_, static_cast<std::int64_t>(std::llround(ms)), ms, ok_});
}

void Timeline::record(TimelineStep step) {
  std::lock_guard lock(mutex_);
  steps_.push_back(std::move(step));
}

std::vector<TimelineStep> Timeline::steps() const {
  std::lock_guard lock(mutex_);
  return steps_;
}

double Timeline::totalMs() const {
  std::lock_guard lock(mutex_);
  double total = 0;
  for (const auto& s : steps_) total += s.duration_exact_ms;
  return total;
}

}  // namespace kiln
