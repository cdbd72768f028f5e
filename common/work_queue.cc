#include "common/work_queue.h"

#include <exception>

#include "common/log.h"

namespace kiln {

WorkQueue::WorkQueue(unsigned threads, std::size_t max_pending) : max_pending_(max_pending) {
  for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
}

WorkQueue::~WorkQueue() { shutdown(); }

WorkQueue::Admission WorkQueue::tryPost(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Admission::kStopped;
    if (jobs_.size() >= max_pending_) return Admission::kFull;
    jobs_.push_back(std::move(job));
  }
  ready_.notify_one();
  return Admission::kQueued;
}

bool WorkQueue::post(std::function<void()> job) {
  return tryPost(std::move(job)) == Admission::kQueued;
}

void WorkQueue::shutdown() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

std::size_t WorkQueue::pending() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

void WorkQueue::waitIdle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return jobs_.empty() && running_ == 0; });
}

void WorkQueue::run() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
      ++running_;
    }
    try {
      job();
    } catch (const std::exception& e) {
      log::error("A background job failed with an exception: {}", e.what());
    }
    job = nullptr;  // what the job captured goes before it counts as done
    std::lock_guard lock(mutex_);
    if (--running_ == 0 && jobs_.empty()) idle_.notify_all();
  }
}

}  // namespace kiln
