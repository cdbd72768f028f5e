#pragma once
// One mutex per key (an instance's uuid), made when first locked and dropped when its last
// holder or waiter leaves, so a long-lived process keeps no entry per key it ever saw. nova's
// @utils.synchronized(instance.uuid), which keeps a build and a delete of one instance apart.

#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace kiln {

class KeyedMutex {
 public:
  class Lock {
   public:
    Lock(Lock&&) noexcept = default;
    Lock& operator=(Lock&&) noexcept = default;
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;
    ~Lock() {
      if (!owner_) return;
      lock_.unlock();
      owner_->release(key_);
    }

   private:
    friend class KeyedMutex;
    Lock(KeyedMutex* owner, std::string key, std::unique_lock<std::mutex> lock)
        : owner_(owner), key_(std::move(key)), lock_(std::move(lock)) {}
    struct NoDelete {
      void operator()(KeyedMutex*) const {}
    };
    std::unique_ptr<KeyedMutex, NoDelete> owner_;
    std::string key_;
    std::unique_lock<std::mutex> lock_;
  };

  // Blocks until `key` is free, then holds it until the Lock is destroyed.
  Lock lock(const std::string& key) {
    std::shared_ptr<Slot> slot;
    {
      std::lock_guard guard(mutex_);
      auto& held = slots_[key];
      if (!held) held = std::make_shared<Slot>();
      ++held->users;
      slot = held;
    }
    std::unique_lock<std::mutex> lock(slot->mutex);
    return Lock(this, key, std::move(lock));
  }

  std::size_t keysHeld() const {
    std::lock_guard guard(mutex_);
    return slots_.size();
  }

 private:
  struct Slot {
    std::mutex mutex;
    int users = 0;
  };
  void release(const std::string& key) {
    std::lock_guard guard(mutex_);
    auto it = slots_.find(key);
    if (it != slots_.end() && --it->second->users == 0) slots_.erase(it);
  }

  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Slot>> slots_;
};

}  // namespace kiln
