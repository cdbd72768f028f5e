#include "imagecache/image_cache.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/fs.h"
#include "common/log.h"
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
  std::string hex;
  for (unsigned char b : digest) hex += fmt::format("{:02x}", b);
  return hex;
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
  return j;
}

Result<void> writeAll(int fd, const char* data, std::size_t len, const std::string& path) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      return Error{err == ENOSPC ? ErrorCode::kResourceExhausted : ErrorCode::kInternal,
                   fmt::format("Cannot write '{}': {}", path, fs::errnoText(err))};
    }
    data += n;
    len -= static_cast<std::size_t>(n);
  }
  return success();
}

}  // namespace

ImageCache::ImageCache(ImageSource& source, ImageCacheOptions options, const Clock& clock)
    : source_(source), options_(std::move(options)), clock_(clock) {}

std::string ImageCache::basePathFor(const std::string& image_id) const {
  return options_.base_dir + "/" + sha256Hex(image_id);
}

Result<void> ImageCache::init() {
  // QEMU runs as another user and must traverse to the bases: o+x, but no listing.
  if (auto r = fs::makeDirectories(options_.base_dir, 0711); !r) return r;
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator(options_.base_dir, ec)) {
    std::string name = entry.path().filename().string();
    bool partial = name.ends_with(".part") || name.find(".tmp-") != std::string::npos;
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
    img.virtual_size = doc.at("virtual_size").get<std::uint64_t>();
    img.file_size = doc.at("file_size").get<std::uint64_t>();
    img.record = std::move(record).value();
    return img;
  } catch (const json::exception& e) {
    return Error::internal(
        fmt::format("Cache entry of image '{}' is unreadable: {}", image_id, e.what()));
  }
}

Result<CachedImage> ImageCache::fetch(const std::string& image_id, Timeline& timeline) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("Image id '{}' is not a valid image id", image_id));
  }
  std::shared_future<Result<CachedImage>> waiter;
  std::promise<Result<CachedImage>> promise;
  bool leader = false;
  {
    std::lock_guard lock(mutex_);
    auto it = in_flight_.find(image_id);
    if (it != in_flight_.end()) {
      waiter = it->second;
    } else {
      leader = true;
      waiter = promise.get_future().share();
      in_flight_.emplace(image_id, waiter);
    }
  }
  if (!leader) {
    auto step = timeline.step("image.wait_for_download");
    auto result = waiter.get();
    if (!result) step.fail();
    return result;
  }
  Result<CachedImage> result = Error::internal("unreachable");
  if (stdfs::exists(basePathFor(image_id))) {
    auto step = timeline.step("image.cache_hit");
    result = loadCached(image_id);
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
    if (!result) step.fail();
  } else {
    result = fetchUncached(image_id, timeline);
  }
  promise.set_value(result);
  {
    std::lock_guard lock(mutex_);
    in_flight_.erase(image_id);
  }
  return result;
}

Result<CachedImage> ImageCache::fetchUncached(const std::string& image_id, Timeline& timeline) {
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
  if (!verifier) return verifier.error();
  if (!verifier->hasHash()) {
    return Error::invalid(fmt::format(
        "Image '{}' has neither os_hash_value nor checksum; kiln refuses unverifiable images",
        image_id));
  }
  if (record.size) {
    auto free = fs::freeBytes(options_.base_dir);
    if (free && *free < *record.size) {
      return Error::exhausted(
          fmt::format("Not enough space in '{}' for image '{}': {} bytes free, {} needed",
                      options_.base_dir, image_id, *free, *record.size));
    }
  }

  std::string base = basePathFor(image_id);
  std::string part = base + ".part";
  UniqueFd fd(::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd.valid()) {
    return Error::internal(fmt::format("Cannot create '{}': {}", part, fs::errnoText(errno)));
  }
  auto discard = [&](Error e) -> Result<CachedImage> {
    ::unlink(part.c_str());
    return e;
  };
  {
    auto step = timeline.step("image.download");
    auto copied = source_.download(record, [&](const char* data, std::size_t len) -> Result<void> {
      verifier->update(data, len);
      return writeAll(fd.get(), data, len, part);
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
    fd.reset();
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
  }
  if (info.format == DiskFormat::kIso) {
    return discard(Error::invalid(fmt::format(
        "Image '{}' is an ISO; booting from ISO images is not supported yet", image_id)));
  }
  CachedImage img;
  img.image_id = image_id;
  img.path = base;
  img.format = std::string(qemuFormatName(info.format));
  img.virtual_size = info.virtual_size;
  img.file_size = info.file_size;
  img.record = record;
  json sidecar = {{"image_id", image_id},
                  {"format", img.format},
                  {"virtual_size", img.virtual_size},
                  {"file_size", img.file_size},
                  {"cached_at", formatUtc(clock_.wallNow())},
                  {"record", recordToJson(record)}};
  // The sidecar goes first; the base's rename is the commit point. init() removes a sidecar
  // whose base never arrived.
  if (auto w = fs::writeFileAtomically(base + ".json", sidecar.dump(2), 0644); !w) {
    return discard(w.error());
  }
  if (::rename(part.c_str(), base.c_str()) != 0) {
    int err = errno;
    ::unlink((base + ".json").c_str());
    return discard(
        Error::internal(fmt::format("Cannot move '{}' into place: {}", part, fs::errnoText(err))));
  }
  if (auto s = fs::fsyncDirectory(options_.base_dir); !s) return s.error();
  log::info("Cached image '{}' as {} ({} bytes, virtual size {})", image_id, img.format,
            img.file_size, img.virtual_size);
  return img;
}

}  // namespace kiln::imagecache
