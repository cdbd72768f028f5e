#pragma once
// Ties the jobs an object posts to the object's lifetime. Jobs capture `this`; when their owner
// goes away (an early return in main, a test that ends) while some are still queued on a shared
// executor, those must not run. close() waits for the jobs that are running and turns the ones
// still queued into no-ops; the destructor closes.

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>

#include "common/executor.h"

namespace kiln {

class ScopedExecutor final : public Executor {
 public:
  explicit ScopedExecutor(Executor& inner);
  ~ScopedExecutor() override;
  ScopedExecutor(const ScopedExecutor&) = delete;
  ScopedExecutor& operator=(const ScopedExecutor&) = delete;

  bool post(std::function<void()> job) override;
  // Refuses new jobs, waits for the running ones, and drops the queued ones. Idempotent.
  void close();

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable idle;
    bool closed = false;
    std::size_t running = 0;
  };
  Executor& inner_;
  std::shared_ptr<State> state_;
};

}  // namespace kiln
