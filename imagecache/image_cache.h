#pragma once
// The per-host cache of base images. A base is fetched once, verified while it streams (hash
// and size), inspected by kiln's own format inspector, fsynced and only then renamed into place:
// a file named like a base is always a whole, verified base. Concurrent launches of one image
// share one download. Bases are named by the SHA-256 of the image id, so no id ever becomes a
// path component.

#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/clock.h"
#include "common/timeline.h"
#include "imagecache/image_source.h"

namespace kiln::imagecache {

struct CachedImage {
  std::string image_id;
  std::string path;    // the base file
  std::string format;  // qemu's name: raw, qcow2, ...
  std::uint64_t virtual_size = 0;
  std::uint64_t file_size = 0;
  ImageRecord record;
};

struct ImageCacheOptions {
  std::string base_dir;  // state_path/_base
};

class ImageCache {
 public:
  ImageCache(ImageSource& source, ImageCacheOptions options, const Clock& clock);

  // Creates the cache directory, removes leftovers of interrupted downloads.
  Result<void> init();

  // Returns the verified base for `image_id`, fetching it if it is not cached yet.
  Result<CachedImage> fetch(const std::string& image_id, Timeline& timeline);

  // Where the base of `image_id` lives (whether or not it is cached).
  std::string basePathFor(const std::string& image_id) const;

 private:
  Result<CachedImage> fetchUncached(const std::string& image_id, Timeline& timeline);
  Result<CachedImage> loadCached(const std::string& image_id);

  ImageSource& source_;
  ImageCacheOptions options_;
  const Clock& clock_;
  std::mutex mutex_;
  std::map<std::string, std::shared_future<Result<CachedImage>>> in_flight_;
};

}  // namespace kiln::imagecache
