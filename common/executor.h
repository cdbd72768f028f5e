#pragma once
// Where background work runs. Production posts to a WorkQueue (a pool of threads); unit tests post
// to a ManualExecutor (tests/support/manual_executor.h) and run the jobs one by one on the test's
// own thread, so a test walks through an operation step by step instead of polling for its end.

#include <functional>

namespace kiln {

class Executor {
 public:
  virtual ~Executor() = default;
  // Queues `job`; false when the executor no longer takes work (it is shutting down, or, for a
  // bounded queue, full). A job that was not taken never runs.
  virtual bool post(std::function<void()> job) = 0;
};

}  // namespace kiln
