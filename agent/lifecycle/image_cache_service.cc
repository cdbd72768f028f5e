#include "agent/lifecycle/image_cache_service.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"

namespace kiln::lifecycle {

using nlohmann::json;

ImageCacheService::ImageCacheService(imagecache::ImageCache& cache, InstanceManager& instances,
                                     CacheManagerOptions options)
    : cache_(cache), instances_(instances), options_(options) {}

ImageCacheService::~ImageCacheService() { stop(); }

void ImageCacheService::start() {
  if (options_.manager_interval < 0) return;
  manager_thread_ = std::thread([this] { managerLoop(); });
}

void ImageCacheService::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (manager_thread_.joinable()) manager_thread_.join();
  precache_jobs_.shutdown();
}

void ImageCacheService::managerLoop() {
  auto interval =
      std::chrono::seconds(options_.manager_interval == 0 ? 60 : options_.manager_interval);
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    runManagerOnce();
    lock.lock();
  }
}

std::vector<std::string> ImageCacheService::runManagerOnce() {
  if (!options_.remove_unused_base_images) return {};
  // Every instance record counts, whatever its state: a stopped instance still needs its base.
  return cache_.removeUnused(instances_.imagesInUse(), options_.minimum_age);
}

json ImageCacheService::describe(const imagecache::CachedImage& img,
                                 const std::vector<state::InstanceRecord>& instances) const {
  json users = json::array();
  for (const auto& rec : instances) {
    if (rec.image_id == img.image_id) users.push_back(rec.uuid);
  }
  return {{"id", img.image_id},
          {"status", "cached"},
          {"name", img.record.name},
          {"format", img.format},
          {"source_format", img.source_format},
          {"size", img.file_size},
          {"virtual_size", img.virtual_size},
          {"cached_at", img.cached_at},
          {"last_used", formatUtc(img.last_used)},
          {"instances", users}};
}

json ImageCacheService::list() {
  auto instances = instances_.list();
  json images = json::array();
  for (const auto& img : cache_.list()) images.push_back(describe(img, instances));
  std::lock_guard lock(mutex_);
  for (const auto& [id, status] : precache_status_) images.push_back(status);
  return {{"images", images}};
}

Result<json> ImageCacheService::show(const std::string& image_id) {
  if (!imagecache::isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("'{}' is not a valid image id", image_id.substr(0, 64)));
  }
  if (auto img = cache_.find(image_id)) return describe(*img, instances_.list());
  std::lock_guard lock(mutex_);
  auto it = precache_status_.find(image_id);
  if (it != precache_status_.end()) return it->second;
  return Error::notFound(fmt::format("Image '{}' is not in the cache", image_id));
}

Result<json> ImageCacheService::precache(const std::string& image_id) {
  if (!imagecache::isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("'{}' is not a valid image id", image_id.substr(0, 64)));
  }
  if (auto img = cache_.find(image_id)) return describe(*img, instances_.list());
  json status = {{"id", image_id}, {"status", "caching"}};
  std::lock_guard lock(mutex_);
  auto it = precache_status_.find(image_id);
  if (it != precache_status_.end() && it->second["status"] == "caching") return it->second;
  // Posted under the lock, so the job's own update (which takes it) comes after this one.
  auto admitted = precache_jobs_.tryPost([this, image_id] {
    SystemClock clock;
    Timeline timeline(clock);
    auto result = cache_.fetch(image_id, timeline);
    std::lock_guard job_lock(mutex_);
    if (result) {
      cache_.release(image_id);
      precache_status_.erase(image_id);
      log::info("Pre-cached image '{}'", image_id);
    } else {
      rememberFailure(image_id, result.error());
      log::warn("Pre-caching image '{}' failed: {}", image_id, result.error().message);
    }
  });
  if (admitted == WorkQueue::Admission::kStopped) {
    return Error::unavailable("kilnd is shutting down");
  }
  if (admitted == WorkQueue::Admission::kFull) {
    return Error::unavailable(fmt::format(
        "{} images are waiting to be pre-cached already; retry later", kMaxQueuedPrecaches));
  }
  forgetFailure(image_id);
  precache_status_[image_id] = status;
  return status;
}

void ImageCacheService::rememberFailure(const std::string& image_id, const Error& error) {
  forgetFailure(image_id);
  precache_status_[image_id] = {
      {"id", image_id}, {"status", "error"}, {"fault", {{"message", error.message}}}};
  failures_.push_back(image_id);
  while (failures_.size() > kMaxRememberedFailures) {
    precache_status_.erase(failures_.front());
    failures_.pop_front();
  }
}

void ImageCacheService::forgetFailure(const std::string& image_id) {
  auto at = std::find(failures_.begin(), failures_.end(), image_id);
  if (at == failures_.end()) return;
  failures_.erase(at);
  precache_status_.erase(image_id);
}

Result<void> ImageCacheService::evict(const std::string& image_id) {
  if (!imagecache::isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("'{}' is not a valid image id", image_id.substr(0, 64)));
  }
  {
    std::lock_guard lock(mutex_);
    auto it = precache_status_.find(image_id);
    if (it != precache_status_.end() && it->second["status"] == "error") {
      forgetFailure(image_id);
      return success();
    }
  }
  return cache_.evict(image_id, instances_.imagesInUse());
}

}  // namespace kiln::lifecycle
