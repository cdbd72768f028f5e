#pragma once
// The per-host cache of base images. A base is fetched once, verified while it streams (hash
// and size), inspected by kiln's own format inspector and by qemu-img under limits, converted to
// raw when configured, fsynced and only then renamed into place: a file named like a base is
// always a whole, verified base. Concurrent launches of one image share one download; different
// images download in parallel up to a bound. Bases are named by the SHA-256 of the image id, so
// no id ever becomes a path component.
//
// Pins: a launch pins its image from fetch() until release(); a pinned base is never removed.

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/disk_reserve.h"
#include "common/qemu_img.h"
#include "common/timeline.h"
#include "imagecache/image_source.h"

namespace kiln::imagecache {

struct CachedImage {
  std::string image_id;
  std::string path;           // the base file
  std::string format;         // qemu's name: raw, qcow2, ...
  std::string source_format;  // the format the image service delivered
  std::uint64_t virtual_size = 0;
  std::uint64_t file_size = 0;
  std::string cached_at;
  std::chrono::system_clock::time_point last_used;
  ImageRecord record;
};

struct ImageCacheOptions {
  std::string base_dir;  // state_path/_base
  bool force_raw = true;
  unsigned max_concurrent_downloads = 2;
  // The group QEMU's processes are in: bases are root-owned 0640 with it, so every guest may read
  // them and none may write them. Unset: bases stay private to kilnd (0600; tests).
  std::optional<unsigned> reader_group{};
  // Downloads and conversions take their space here before they write (common/disk_reserve.h).
  // Unset: a reserve of 0 bytes over base_dir.
  std::shared_ptr<DiskReserve> disk_reserve{};
  // The most a download whose image record gives no size may write (Glance's image_size_cap).
  std::uint64_t max_unsized_image_bytes = 1024ULL << 30;
};

class ImageCache {
 public:
  ImageCache(ImageSource& source, QemuImg& qemu_img, ImageCacheOptions options, const Clock& clock);

  // Creates the cache directory, removes leftovers of interrupted downloads.
  Result<void> init();

  // Returns the verified base for `image_id`, fetching it if it is not cached, and pins it
  // until release(). An image whose virtual size exceeds `max_virtual_size` (0: no limit) is
  // refused before any conversion with kTooLarge, and the bytes are not kept.
  Result<CachedImage> fetch(const std::string& image_id, Timeline& timeline,
                            std::uint64_t max_virtual_size = 0);
  void release(const std::string& image_id);
  // Whether `user`'s project may boot the image, asked of the image service on every launch
  // (the "image.access" step); a base in the cache grants nothing by being there. A denied image
  // fails as a missing one.
  Result<void> checkAccess(const std::string& image_id, const ImageUser& user, Timeline& timeline);

  // Every cached base.
  std::vector<CachedImage> list();
  std::optional<CachedImage> find(const std::string& image_id);
  bool pinned(const std::string& image_id);

  // Removes one base; kConflict when it is pinned or in `in_use`, kNotFound when not cached.
  Result<void> evict(const std::string& image_id, const std::set<std::string>& in_use);
  // Removes every base that is neither pinned nor in `in_use` and was last used longer than
  // `min_age` ago. Returns the ids removed.
  std::vector<std::string> removeUnused(const std::set<std::string>& in_use,
                                        std::chrono::seconds min_age);

  std::string basePathFor(const std::string& image_id) const;

 private:
  Result<void> shareWithQemu(const std::string& path) const;
  Result<CachedImage> fetchUncached(const std::string& image_id, Timeline& timeline,
                                    std::uint64_t max_virtual_size);
  Result<CachedImage> loadCached(const std::string& image_id);
  Result<CachedImage> useCached(const std::string& image_id, Timeline& timeline);
  Result<void> removeLocked(const std::string& image_id);

  ImageSource& source_;
  QemuImg& qemu_img_;
  ImageCacheOptions options_;
  const Clock& clock_;
  std::counting_semaphore<64> download_slots_;
  std::mutex mutex_;
  std::map<std::string, std::shared_future<Result<CachedImage>>> in_flight_;
  std::map<std::string, int> pins_;
};

}  // namespace kiln::imagecache
