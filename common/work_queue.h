#pragma once
// A fixed pool of worker threads running queued jobs in order of arrival. Slow operations
// (image downloads, qemu-img, libvirt starts) run here, never on the API thread.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

class WorkQueue {
 public:
  explicit WorkQueue(unsigned threads);
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Returns false once shutdown has begun.
  bool post(std::function<void()> job);
  // Runs the jobs already queued, then joins the workers.
  void shutdown();
  std::size_t pending() const;

 private:
  void run();
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace kiln
