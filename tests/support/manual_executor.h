#pragma once
// An Executor that only queues: the test runs the jobs on its own thread, one at a time or until
// nothing is left, so it can look at (or interfere with) an operation between its jobs.

#include <deque>
#include <functional>
#include <mutex>

#include "common/executor.h"

namespace kiln::testing {

class ManualExecutor final : public Executor {
 public:
  bool post(std::function<void()> job) override {
    std::lock_guard lock(mutex_);
    if (stopped_) return false;
    jobs_.push_back(std::move(job));
    return true;
  }

  // Runs the oldest queued job; false when there was none.
  bool runOne() {
    std::function<void()> job;
    {
      std::lock_guard lock(mutex_);
      if (jobs_.empty()) return false;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
    return true;
  }

  // Runs jobs, including those the jobs post, until none is left; returns how many ran.
  std::size_t runUntilIdle() {
    std::size_t ran = 0;
    while (runOne()) ++ran;
    return ran;
  }

  std::size_t pending() const {
    std::lock_guard lock(mutex_);
    return jobs_.size();
  }

  // From now on post() refuses work, as a shutting-down pool does.
  void stop() {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }

 private:
  mutable std::mutex mutex_;
  std::deque<std::function<void()>> jobs_;
  bool stopped_ = false;
};

}  // namespace kiln::testing
