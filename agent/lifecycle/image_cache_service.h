#pragma once
// The image cache as the API and the operator see it: which bases are cached and who uses them,
// pre-caching ahead of launches, eviction, and the periodic cache manager that removes bases no
// instance on this host uses any more.

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "agent/lifecycle/instance_manager.h"
#include "common/work_queue.h"
#include "imagecache/image_cache.h"

namespace kiln::lifecycle {

struct CacheManagerOptions {
  int manager_interval = 2400;  // seconds; 0 = every 60 s; -1 = never
  bool remove_unused_base_images = true;
  std::chrono::seconds minimum_age{86400};
};

class ImageCacheService {
 public:
  ImageCacheService(imagecache::ImageCache& cache, InstanceManager& instances,
                    CacheManagerOptions options);
  ~ImageCacheService();

  // Starts the periodic cache manager (unless the interval is -1).
  void start();
  void stop();

  nlohmann::json list();
  Result<nlohmann::json> show(const std::string& image_id);
  // Fetches the image into the cache in the background: {"id", "status": "caching"}, or the
  // cached entry when it is already there.
  Result<nlohmann::json> precache(const std::string& image_id);
  Result<void> evict(const std::string& image_id);
  // One pass of the cache manager; returns the ids removed.
  std::vector<std::string> runManagerOnce();

 private:
  nlohmann::json describe(const imagecache::CachedImage& img,
                          const std::vector<state::InstanceRecord>& instances) const;
  void managerLoop();
  // Under mutex_: remembers a failed pre-cache, forgetting the oldest past the bound.
  void rememberFailure(const std::string& image_id, const Error& error);
  void forgetFailure(const std::string& image_id);

  imagecache::ImageCache& cache_;
  InstanceManager& instances_;
  CacheManagerOptions options_;
  // Pre-caching is for the scheduler's planned launches, a few images at a time: the queue and
  // the failures it remembers are bounded, so PUTs of ids that do not exist cannot grow kilnd.
  static constexpr std::size_t kMaxQueuedPrecaches = 32;
  static constexpr std::size_t kMaxRememberedFailures = 64;
  WorkQueue precache_jobs_{1, kMaxQueuedPrecaches};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::map<std::string, nlohmann::json> precache_status_;  // in progress or failed
  std::deque<std::string> failures_;                       // failed ids, oldest first
  std::thread manager_thread_;
};

}  // namespace kiln::lifecycle
