#include "imagecache/image_cache.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/fs.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/unique_fd.h"
#include "imagecache/format_inspector.h"
#include "imagecache/stream_hasher.h"

namespace kiln::imagecache {
namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

std::string sha256Hex(std::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return strings::hexEncode(digest);
}

json recordToJson(const ImageRecord& r) {
  json j = r.properties;
  j["id"] = r.id;
  j["name"] = r.name;
  j["status"] = r.status;
  j["disk_format"] = r.disk_format;
  j["container_format"] = r.container_format;
  if (r.size) j["size"] = *r.size;
  if (r.min_disk_gb) j["min_disk"] = *r.min_disk_gb;
  if (r.min_ram_mb) j["min_ram"] = *r.min_ram_mb;
  if (r.checksum) j["checksum"] = *r.checksum;
  if (r.os_hash_algo) j["os_hash_algo"] = *r.os_hash_algo;
  if (r.os_hash_value) j["os_hash_value"] = *r.os_hash_value;
  if (!r.owner.empty()) j["owner"] = r.owner;
  if (!r.visibility.empty()) j["visibility"] = r.visibility;
  return j;
}

Result<void> fsyncPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return Error::internal(fmt::format("Cannot fsync '{}': {}", path, fs::errnoText(errno)));
  }
  return success();
}

std::chrono::system_clock::time_point mtimeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return std::chrono::system_clock::time_point(std::chrono::seconds(st.st_mtim.tv_sec) +
                                               std::chrono::nanoseconds(st.st_mtim.tv_nsec));
}

Error tooLarge(const std::string& image_id, std::uint64_t virtual_size, std::uint64_t limit) {
  return Error{ErrorCode::kTooLarge,
               fmt::format("Image '{}' has a virtual size of {} bytes, larger than the flavor's "
                           "root disk of {} bytes",
                           image_id, virtual_size, limit)};
}

}  // namespace

ImageCache::ImageCache(ImageSource& source, QemuImg& qemu_img, ImageCacheOptions options,
                       const Clock& clock)
    : source_(source),
      qemu_img_(qemu_img),
      options_(std::move(options)),
      clock_(clock),
      download_slots_(
          static_cast<std::ptrdiff_t>(std::min(options_.max_concurrent_downloads, 64U))) {
  if (!options_.disk_reserve) {
    options_.disk_reserve = std::make_shared<DiskReserve>(options_.base_dir, 0);
  }
}

std::string ImageCache::basePathFor(const std::string& image_id) const {
  return options_.base_dir + "/" + sha256Hex(image_id);
}

Result<void> ImageCache::shareWithQemu(const std::string& path) const {
  // Readable by QEMU's group and nobody else, whatever umask kilnd runs under.
  if (options_.reader_group) {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(*options_.reader_group)) !=
        0) {
      return Error::internal(
          fmt::format("Cannot give '{}' to QEMU's group: {}", path, fs::errnoText(errno)));
    }
  }
  if (::chmod(path.c_str(), options_.reader_group ? 0640 : 0600) != 0) {
    return Error::internal(
        fmt::format("Cannot set the mode of '{}': {}", path, fs::errnoText(errno)));
  }
  return success();
}

Result<void> ImageCache::init() {
  // QEMU runs as another user and must traverse to the bases: o+x, but no listing.
  if (auto r = fs::makeDirectories(options_.base_dir, 0711); !r) return r;
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator(options_.base_dir, ec)) {
    std::string name = entry.path().filename().string();
    // Bases cached by an older kilnd were world-readable; sidecars (the image records) are kiln's.
    if (name.ends_with(".json")) {
      ::chmod(entry.path().c_str(), 0600);
    } else if (name.find('.') == std::string::npos) {
      if (auto r = shareWithQemu(entry.path().string()); !r) log::warn("{}", r.error().message);
    }
    bool partial = name.ends_with(".part") || name.ends_with(".converted") ||
                   name.find(".tmp-") != std::string::npos;
    bool orphan_sidecar =
        name.ends_with(".json") &&
        !stdfs::exists(entry.path().parent_path() / name.substr(0, name.size() - 5));
    if (partial || orphan_sidecar) {
      log::info("Removing leftover of an interrupted image download: {}", entry.path().string());
      stdfs::remove(entry.path(), ec);
    }
  }
  return success();
}

Result<CachedImage> ImageCache::loadCached(const std::string& image_id) {
  std::string base = basePathFor(image_id);
  auto text = fs::readFile(base + ".json", 4 * 1024 * 1024);
  if (!text) return text.error();
  auto doc = json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Error::internal(fmt::format("Cache entry of image '{}' is unreadable", image_id));
  }
  try {
    auto record = parseImageRecord(doc.at("record"), image_id);
    if (!record) return record.error();
    CachedImage img;
    img.image_id = image_id;
    img.path = base;
    img.format = doc.at("format").get<std::string>();
    img.source_format = doc.value("source_format", img.format);
    img.virtual_size = doc.at("virtual_size").get<std::uint64_t>();
    img.file_size = doc.at("file_size").get<std::uint64_t>();
    img.cached_at = doc.value("cached_at", "");
    img.last_used = mtimeOf(base + ".json");
    img.record = std::move(record).value();
    return img;
  } catch (const json::exception& e) {
    return Error::internal(
        fmt::format("Cache entry of image '{}' is unreadable: {}", image_id, e.what()));
  }
}

Result<CachedImage> ImageCache::useCached(const std::string& image_id, Timeline& timeline) {
  auto step = timeline.step("image.cache_hit");
  auto result = loadCached(image_id);
  if (result) {
    // Re-inspect the header on every use: checks added since the download apply, and a
    // tampered base is caught before libvirt reads it.
    auto info = inspectImageFile(result->path, std::nullopt);
    if (!info) {
      result = Error::invalid(fmt::format("Cached base of image '{}' failed inspection: {}",
                                          image_id, info.error().message));
    } else if (qemuFormatName(info->format) != result->format) {
      result = Error::internal(
          fmt::format("Cached base of image '{}' is now '{}' but was recorded as '{}'", image_id,
                      qemuFormatName(info->format), result->format));
    }
  }
  if (result) {
    // The sidecar's mtime is the base's last use; the base itself is never touched.
    ::utimensat(AT_FDCWD, (result->path + ".json").c_str(), nullptr, 0);
    result->last_used = clock_.wallNow();
  } else {
    step.fail();
  }
  return result;
}

Result<CachedImage> ImageCache::fetch(const std::string& image_id, Timeline& timeline,
                                      std::uint64_t max_virtual_size) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("Image id '{}' is not a valid image id", image_id));
  }
  for (int attempt = 0;; ++attempt) {
    std::shared_future<Result<CachedImage>> waiter;
    std::promise<Result<CachedImage>> promise;
    bool leader = false;
    bool cached = false;
    {
      std::lock_guard lock(mutex_);
      ++pins_[image_id];  // pinned before anything else can look at it
      auto it = in_flight_.find(image_id);
      if (it != in_flight_.end()) {
        waiter = it->second;
      } else if (stdfs::exists(basePathFor(image_id))) {
        cached = true;
      } else {
        leader = true;
        waiter = promise.get_future().share();
        in_flight_.emplace(image_id, waiter);
      }
    }
    Result<CachedImage> result = Error::internal("unreachable");
    if (cached) {
      result = useCached(image_id, timeline);
      if (result && max_virtual_size != 0 && result->virtual_size > max_virtual_size) {
        result = tooLarge(image_id, result->virtual_size, max_virtual_size);
      }
    } else if (!leader) {
      auto step = timeline.step("image.wait_for_download");
      result = waiter.get();
      if (!result) step.fail();
      if (result && max_virtual_size != 0 && result->virtual_size > max_virtual_size) {
        result = tooLarge(image_id, result->virtual_size, max_virtual_size);
      } else if (!result && result.error().code == ErrorCode::kTooLarge && attempt == 0) {
        // The download was refused for the leader's smaller flavor; ours may be bigger.
        release(image_id);
        continue;
      }
    } else {
      // Only a launch that really waits for a download slot shows the wait in its timeline.
      if (!download_slots_.try_acquire()) {
        auto step = timeline.step("image.wait_for_slot");
        download_slots_.acquire();
      }
      result = fetchUncached(image_id, timeline, max_virtual_size);
      download_slots_.release();
      promise.set_value(result);
      std::lock_guard lock(mutex_);
      in_flight_.erase(image_id);
    }
    if (!result) release(image_id);
    return result;
  }
}

Result<void> ImageCache::checkAccess(const std::string& image_id, const ImageUser& user,
                                     Timeline& timeline) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("Image id '{}' is not a valid image id", image_id));
  }
  auto step = timeline.step("image.access");
  auto allowed = source_.checkAccess(image_id, user);
  if (!allowed) step.fail();
  return allowed;
}

void ImageCache::release(const std::string& image_id) {
  std::lock_guard lock(mutex_);
  auto it = pins_.find(image_id);
  if (it != pins_.end() && --it->second <= 0) pins_.erase(it);
}

bool ImageCache::pinned(const std::string& image_id) {
  std::lock_guard lock(mutex_);
  return pins_.count(image_id) != 0 || in_flight_.count(image_id) != 0;
}

Result<CachedImage> ImageCache::fetchUncached(const std::string& image_id, Timeline& timeline,
                                              std::uint64_t max_virtual_size) {
  ImageRecord record;
  {
    auto step = timeline.step("image.record");
    auto r = source_.getRecord(image_id);
    if (!r) {
      step.fail();
      return r.error();
    }
    record = std::move(r).value();
  }
  if (record.status != "active") {
    return Error::invalid(fmt::format("Image '{}' is '{}', not 'active'", image_id, record.status));
  }
  if (!record.container_format.empty() && record.container_format != "bare") {
    return Error::invalid(
        fmt::format("Image '{}' has container_format '{}'; only 'bare' images can be launched",
                    image_id, record.container_format));
  }
  auto declared = diskFormatFromGlance(record.disk_format);
  if (!declared) {
    return Error::invalid(fmt::format("Image '{}' has disk_format '{}', which kiln cannot boot",
                                      image_id, record.disk_format));
  }
  ImageVerifier::Expectation expect;
  expect.hash_algo = record.os_hash_algo;
  expect.hash_value = record.os_hash_value;
  expect.md5_checksum = record.checksum;
  expect.size = record.size;
  auto verifier = ImageVerifier::create(expect);
  if (!verifier) {
    return Error::invalid(fmt::format("Image '{}' record cannot be verified: {}", image_id,
                                      verifier.error().message));
  }
  if (!verifier->hasHash()) {
    return Error::invalid(fmt::format(
        "Image '{}' has neither os_hash_value nor checksum; kiln refuses unverifiable images",
        image_id));
  }
  // The whole download is spoken for before its first byte, so concurrent launches cannot
  // together promise more than the disk holds; without a size, the hold grows as bytes arrive.
  const std::string what = fmt::format("image '{}'", image_id);
  auto download_hold = options_.disk_reserve->take(record.size.value_or(0), what);
  if (!download_hold) return download_hold.error();

  const std::string base = basePathFor(image_id);
  const std::string part = base + ".part";
  const std::string converted = base + ".converted";
  auto discard = [&](Error e) -> Result<CachedImage> {
    ::unlink(part.c_str());
    ::unlink(converted.c_str());
    return e;
  };
  {
    UniqueFd fd(::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) {
      return Error::internal(fmt::format("Cannot create '{}': {}", part, fs::errnoText(errno)));
    }
    auto step = timeline.step("image.download");
    const std::uint64_t limit = record.size.value_or(options_.max_unsized_image_bytes);
    auto copied = source_.download(record, [&](const char* data, std::size_t len) -> Result<void> {
      verifier->update(data, len);
      // More bytes than the record promised (or than any record without a size may bring):
      // stop now, not after filling the disk.
      if (verifier->bytesSeen() > limit) {
        return Error::invalid(
            record.size
                ? fmt::format("Image '{}' is larger than the {} bytes its record says", image_id,
                              limit)
                : fmt::format(
                      "Image '{}' has no size in its record and is larger than [image_cache] "
                      "max_image_size_gb ({} GiB)",
                      image_id, limit >> 30));
      }
      if (download_hold->bytes() < len) {
        constexpr std::uint64_t kGrowStep = 64ULL << 20;
        if (auto grown = download_hold->grow(std::max<std::uint64_t>(len, kGrowStep), what);
            !grown) {
          return grown;
        }
      }
      if (auto w = fs::writeAll(fd.get(), std::string_view(data, len), part); !w) return w;
      download_hold->landed(len);
      return success();
    });
    if (!copied) {
      step.fail();
      return discard(copied.error());
    }
    if (auto v = verifier->finish(); !v) {
      step.fail();
      return discard(Error::invalid(
          fmt::format("Image '{}' failed verification: {}", image_id, v.error().message)));
    }
    if (::fsync(fd.get()) != 0) {
      step.fail();
      return discard(
          Error::internal(fmt::format("Cannot fsync '{}': {}", part, fs::errnoText(errno))));
    }
  }

  ImageInfo info;
  {
    auto step = timeline.step("image.inspect");
    auto inspected = inspectImageFile(part, declared);
    if (!inspected) {
      step.fail();
      return discard(Error::invalid(
          fmt::format("Image '{}' was refused: {}", image_id, inspected.error().message)));
    }
    info = *inspected;
    // Checked in the header, before any conversion: a small compressed qcow2 can expand to
    // hundreds of GiB.
    if (max_virtual_size != 0 && info.virtual_size > max_virtual_size) {
      step.fail();
      return discard(tooLarge(image_id, info.virtual_size, max_virtual_size));
    }
    // qemu-img, under limits and with the format given, must agree with our own inspector.
    auto qinfo = qemu_img_.info(part, std::string(qemuFormatName(info.format)));
    if (!qinfo) {
      step.fail();
      return discard(Error::invalid(
          fmt::format("Image '{}' was refused: {}", image_id, qinfo.error().message)));
    }
    if (qinfo->backing_filename || qinfo->data_file || qinfo->virtual_size != info.virtual_size) {
      step.fail();
      return discard(Error::invalid(fmt::format(
          "Image '{}' was refused: qemu-img sees a backing file, a data file or another virtual "
          "size than kiln's inspector",
          image_id)));
    }
  }
  std::string format(qemuFormatName(info.format));
  const std::string source_format = format;
  std::string ready = part;
  if (options_.force_raw && format != "raw") {
    auto step = timeline.step("image.convert");
    // qemu-img writes the raw file sparse, but may write all of it: its whole virtual size.
    auto convert_hold = options_.disk_reserve->take(
        info.virtual_size, fmt::format("converting image '{}' to raw", image_id));
    if (!convert_hold) {
      step.fail();
      return discard(convert_hold.error());
    }
    if (auto c = qemu_img_.convert(part, format, converted, "raw"); !c) {
      step.fail();
      return discard(Error{c.error().code, fmt::format("Converting image '{}' to raw failed: {}",
                                                       image_id, c.error().message)});
    }
    if (auto s = fsyncPath(converted); !s) {
      step.fail();
      return discard(s.error());
    }
    ::unlink(part.c_str());
    ready = converted;
    format = "raw";
    auto raw_info = inspectImageFile(converted, DiskFormat::kRaw);
    if (!raw_info) {
      step.fail();
      return discard(raw_info.error());
    }
    info.file_size = raw_info->file_size;
  }
  if (auto r = shareWithQemu(ready); !r) return discard(r.error());

  CachedImage img;
  img.image_id = image_id;
  img.path = base;
  img.format = format;
  img.source_format = source_format;
  img.virtual_size = info.virtual_size;
  img.file_size = info.file_size;
  img.cached_at = formatUtc(clock_.wallNow());
  img.last_used = clock_.wallNow();
  img.record = record;
  json sidecar = {{"image_id", image_id},
                  {"format", img.format},
                  {"source_format", img.source_format},
                  {"virtual_size", img.virtual_size},
                  {"file_size", img.file_size},
                  {"cached_at", img.cached_at},
                  {"record", recordToJson(record)}};
  // The sidecar goes first; the base's rename is the commit point. init() removes a sidecar
  // whose base never arrived.
  if (auto w = fs::writeFileAtomically(base + ".json", sidecar.dump(2), 0600); !w) {
    return discard(w.error());
  }
  if (::rename(ready.c_str(), base.c_str()) != 0) {
    int err = errno;
    ::unlink((base + ".json").c_str());
    return discard(
        Error::internal(fmt::format("Cannot move '{}' into place: {}", ready, fs::errnoText(err))));
  }
  if (auto s = fs::fsyncDirectory(options_.base_dir); !s) return s.error();
  log::info("Cached image '{}' as {} ({} bytes, virtual size {}, delivered as {})", image_id,
            img.format, img.file_size, img.virtual_size, img.source_format);
  return img;
}

std::optional<CachedImage> ImageCache::find(const std::string& image_id) {
  if (!isSafeImageId(image_id) || !stdfs::exists(basePathFor(image_id))) return std::nullopt;
  auto img = loadCached(image_id);
  if (!img) return std::nullopt;
  return *img;
}

std::vector<CachedImage> ImageCache::list() {
  std::vector<CachedImage> out;
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator(options_.base_dir, ec)) {
    std::string name = entry.path().filename().string();
    if (!name.ends_with(".json")) continue;
    auto text = fs::readFile(entry.path(), 4 * 1024 * 1024);
    if (!text) continue;
    auto doc = json::parse(*text, nullptr, false);
    if (doc.is_discarded() || !doc.contains("image_id") || !doc["image_id"].is_string()) continue;
    std::string id = doc["image_id"].get<std::string>();
    if (!isSafeImageId(id) || basePathFor(id) + ".json" != entry.path().string()) continue;
    if (!stdfs::exists(basePathFor(id))) continue;
    if (auto img = loadCached(id)) out.push_back(std::move(img).value());
  }
  return out;
}

Result<void> ImageCache::removeLocked(const std::string& image_id) {
  std::string base = basePathFor(image_id);
  // The base first: without it the sidecar is an orphan that init() clears.
  if (::unlink(base.c_str()) != 0 && errno != ENOENT) {
    return Error::internal(fmt::format("Cannot remove '{}': {}", base, fs::errnoText(errno)));
  }
  ::unlink((base + ".json").c_str());
  return fs::fsyncDirectory(options_.base_dir);
}

Result<void> ImageCache::evict(const std::string& image_id, const std::set<std::string>& in_use) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("Image id '{}' is not a valid image id", image_id));
  }
  std::lock_guard lock(mutex_);
  if (!stdfs::exists(basePathFor(image_id))) {
    return Error::notFound(fmt::format("Image '{}' is not in the cache", image_id));
  }
  if (pins_.count(image_id) != 0 || in_flight_.count(image_id) != 0 || in_use.count(image_id)) {
    return Error::conflict(
        fmt::format("Image '{}' is in use by an instance on this host", image_id));
  }
  if (auto r = removeLocked(image_id); !r) return r;
  log::info("Evicted image '{}' from the cache", image_id);
  return success();
}

std::vector<std::string> ImageCache::removeUnused(const std::set<std::string>& in_use,
                                                  std::chrono::seconds min_age) {
  std::vector<std::string> removed;
  for (const auto& img : list()) {
    if (in_use.count(img.image_id)) continue;
    std::lock_guard lock(mutex_);
    // Re-checked under the lock: a launch that pinned the image since list() keeps it.
    if (pins_.count(img.image_id) != 0 || in_flight_.count(img.image_id) != 0) continue;
    auto age = clock_.wallNow() - mtimeOf(img.path + ".json");
    if (age < min_age) continue;
    if (auto r = removeLocked(img.image_id); !r) {
      log::error("Cache manager: {}", r.error().message);
      continue;
    }
    log::info("Cache manager removed unused image '{}' ({} bytes)", img.image_id, img.file_size);
    removed.push_back(img.image_id);
  }
  return removed;
}

}  // namespace kiln::imagecache
