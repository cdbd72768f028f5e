#pragma once
// A fixed pool of worker threads running queued jobs in order of arrival. Slow operations
// (image downloads, qemu-img, libvirt starts, API calls that wait on Keystone or Glance) run here,
// never on an I/O or event thread.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "common/executor.h"

namespace kiln {

class WorkQueue final : public Executor {
 public:
  // At most `max_pending` jobs wait for a worker (jobs being run do not count); more are refused,
  // so a burst cannot grow the queue, and what it holds, without bound.
  explicit WorkQueue(unsigned threads,
                     std::size_t max_pending = std::numeric_limits<std::size_t>::max());
  ~WorkQueue() override;
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  enum class Admission { kQueued, kFull, kStopped };
  // Like post(), saying why a job was refused.
  Admission tryPost(std::function<void()> job);
  // False once shutdown has begun, or when the queue is full.
  bool post(std::function<void()> job) override;
  // Runs the jobs already queued, then joins the workers.
  void shutdown();
  // Blocks until no job is queued or running (tests: the end of everything they started).
  void waitIdle();
  std::size_t pending() const;

 private:
  void run();
  const std::size_t max_pending_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable idle_;
  std::deque<std::function<void()>> jobs_;
  std::size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace kiln
