#include "common/scoped_executor.h"

namespace kiln {

ScopedExecutor::ScopedExecutor(Executor& inner)
    : inner_(inner), state_(std::make_shared<State>()) {}

ScopedExecutor::~ScopedExecutor() { close(); }

bool ScopedExecutor::post(std::function<void()> job) {
  {
    std::lock_guard lock(state_->mutex);
    if (state_->closed) return false;
  }
  // The job holds the state, not the scope: it may be run (as a no-op) after the scope is gone.
  return inner_.post([state = state_, job = std::move(job)] {
    {
      std::lock_guard lock(state->mutex);
      if (state->closed) return;
      ++state->running;
    }
    struct Leave {
      State& state;
      ~Leave() {
        std::lock_guard lock(state.mutex);
        if (--state.running == 0) state.idle.notify_all();
      }
    } leave{*state};
    job();
  });
}

void ScopedExecutor::close() {
  std::unique_lock lock(state_->mutex);
  state_->closed = true;
  state_->idle.wait(lock, [this] { return state_->running == 0; });
}

}  // namespace kiln
