#include "imagecache/image_uploader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "common/fs.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/unique_fd.h"
#include "common/uuid.h"
#include "imagecache/glance_endpoint.h"
#include "imagecache/stream_hasher.h"

namespace kiln::imagecache {
namespace {

using glance::Failure;
using glance::printable;
template <typename T>
using Attempt = GlanceEndpoint::Attempt<T>;

constexpr std::size_t kCopyChunk = 1 << 20;
constexpr std::size_t kMaxNameChars = 255;
constexpr std::size_t kMaxOwnerChars = 255;  // Glance's owner column
constexpr std::size_t kMaxPropertyKeyChars = 255;
// Glance keeps property values in a TEXT column (65535 bytes on MySQL).
constexpr std::size_t kMaxPropertyValueBytes = 65535;
constexpr std::size_t kQueuedRecordMaxBytes = 4 << 20;

using Clock = std::chrono::steady_clock;

// Fields Glance owns: a property may not take one of these names (Glance answers 403 or 409).
const std::set<std::string, std::less<>>& glanceCoreFields() {
  static const std::set<std::string, std::less<>> fields = {
      "id",         "name",         "status",       "visibility",
      "protected",  "checksum",     "os_hash_algo", "os_hash_value",
      "size",       "virtual_size", "disk_format",  "container_format",
      "min_disk",   "min_ram",      "owner",        "created_at",
      "updated_at", "tags",         "self",         "file",
      "schema",     "direct_url",   "locations",    "os_hidden",
      "stores",     "deleted",      "deleted_at"};
  return fields;
}
// Glance reserves this namespace for itself (since Ussuri) and refuses such properties.
constexpr std::string_view kReservedPropertyPrefix = "os_glance_";

// UTF-8 characters, counted as Glance counts a name's length (the input is valid UTF-8).
std::size_t utf8Length(std::string_view s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

bool isPropertyKey(std::string_view key) {
  if (key.empty() || key.size() > kMaxPropertyKeyChars) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ':' || c == '.' ||
           c == '-';
  });
}

// Glance's error pages are small HTML documents, or JSON {"message": ...} when asked with
// Accept: application/json: only a short, tag-free, one-line ASCII excerpt goes into a message
// (the treatment GlanceSource gives them, after taking the JSON's message).
std::string snippet(std::string_view body) {
  auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_object() && doc.contains("message") && doc["message"].is_string()) {
    body = doc["message"].get_ref<const std::string&>();
  }
  return glance::snippet(body);
}

// A non-success answer from Glance to a request to `action` ("create image 'x'"). `image_id` is
// set when a 404 means that image is gone rather than a wrong endpoint.
Failure failureForStatus(long status, const std::string& body, const std::string& server,
                         const std::string& action, const std::string& image_id, bool sent_token) {
  return glance::failureForStatus(status, snippet(body),
                                  glance::Call::change(server, action, image_id, sent_token));
}

bool sentToken(const HttpRequestSpec& spec) {
  return std::any_of(spec.headers.begin(), spec.headers.end(),
                     [](const auto& h) { return h.first == "X-Auth-Token"; });
}

// The image's Glance fields and properties as one JSON object; `doc` gets the properties as
// top-level keys, as Glance takes and returns them.
nlohmann::json glanceFields(const NewImage& image) {
  nlohmann::json doc = image.properties.is_object() ? image.properties : nlohmann::json::object();
  doc["name"] = image.name;
  doc["disk_format"] = image.disk_format;
  doc["container_format"] = image.container_format;
  // A snapshot belongs to its project, private to it, as nova makes them.
  doc["visibility"] = "private";
  if (!image.owner.empty()) doc["owner"] = image.owner;
  return doc;
}

// What went out in one upload attempt: the bytes read from the file and their digests.
struct SentBytes {
  std::uint64_t size = 0;
  std::string md5;
  std::string sha512;
};

// Hashes bytes as they pass by, for both digests a Glance record carries.
class DualHasher {
 public:
  static Result<DualHasher> create() {
    auto md5 = StreamHasher::create("md5");
    if (!md5) return md5.error();
    auto sha512 = StreamHasher::create("sha512");
    if (!sha512) return sha512.error();
    return DualHasher(std::move(md5).value(), std::move(sha512).value());
  }
  void update(const char* data, std::size_t len) {
    md5_.update(data, len);
    sha512_.update(data, len);
    size_ += len;
  }
  std::uint64_t size() const { return size_; }
  SentBytes finish() { return {size_, md5_.finalHex(), sha512_.finalHex()}; }

 private:
  DualHasher(StreamHasher md5, StreamHasher sha512)
      : md5_(std::move(md5)), sha512_(std::move(sha512)) {}
  StreamHasher md5_;
  StreamHasher sha512_;
  std::uint64_t size_ = 0;
};

// Why a record read back from Glance does not match the bytes sent, or nothing if it does.
std::optional<std::string> recordMismatch(const ImageRecord& record, const SentBytes& sent) {
  if (record.status != "active") {
    return fmt::format("its status is '{}', not 'active'", printable(record.status));
  }
  if (record.size != sent.size) {
    return fmt::format("Glance stored {} bytes but {} were sent",
                       record.size ? std::to_string(*record.size) : std::string("no"), sent.size);
  }
  if (record.checksum && strings::asciiLower(*record.checksum) != sent.md5) {
    return fmt::format("Glance's md5 checksum {} differs from the {} of the bytes sent",
                       printable(*record.checksum), sent.md5);
  }
  if (record.os_hash_algo == "sha512" &&
      (!record.os_hash_value || strings::asciiLower(*record.os_hash_value) != sent.sha512)) {
    return fmt::format("Glance's sha512 {} differs from the {} of the bytes sent",
                       printable(record.os_hash_value.value_or("(none)")), sent.sha512);
  }
  return std::nullopt;
}

// --- the local directory

std::string errnoMessage(const std::string& what, const std::string& path, int err) {
  return fmt::format("Cannot {} '{}': {}", what, path, fs::errnoText(err));
}

ErrorCode codeForWriteErrno(int err) {
  return (err == ENOSPC || err == EDQUOT || err == EFBIG) ? ErrorCode::kResourceExhausted
                                                          : ErrorCode::kInternal;
}

// Copies `from` to a new file `to` (which must not exist), hashing every byte on the way, and
// fsyncs it. On failure `to` may be left behind for the caller to remove.
Result<SentBytes> copyHashed(const std::string& from, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!in.valid()) {
    int err = errno;
    return Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 errnoMessage("open", from, err)};
  }
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Error::internal(errnoMessage("stat", from, errno));
  if (!S_ISREG(st.st_mode)) {
    return Error::invalid(fmt::format("'{}' is not a regular file", from));
  }
  (void)::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out.valid()) {
    int err = errno;
    return Error{codeForWriteErrno(err), errnoMessage("create", to, err)};
  }
  if (::fchmod(out.get(), 0644) != 0) return Error::internal(errnoMessage("chmod", to, errno));
  auto hasher = DualHasher::create();
  if (!hasher) return hasher.error();
  std::vector<char> buf(kCopyChunk);
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::internal(errnoMessage("read", from, errno));
    }
    if (n == 0) break;
    hasher->update(buf.data(), static_cast<std::size_t>(n));
    if (auto w =
            fs::writeAll(out.get(), std::string_view(buf.data(), static_cast<std::size_t>(n)), to);
        !w) {
      return std::move(w).error();
    }
  }
  if (hasher->size() != static_cast<std::uint64_t>(st.st_size)) {
    return Error::internal(fmt::format("'{}' changed size while being copied: {} bytes, then {}",
                                       from, st.st_size, hasher->size()));
  }
  if (::fsync(out.get()) != 0) {
    int err = errno;
    return Error{codeForWriteErrno(err), errnoMessage("fsync", to, err)};
  }
  if (::close(out.release()) != 0) {
    int err = errno;
    return Error{codeForWriteErrno(err), errnoMessage("close", to, err)};
  }
  return hasher->finish();
}

// The size and digests of a file, read once more: only when an upload is repeated.
Result<SentBytes> hashFile(const std::string& path) {
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!in.valid()) {
    int err = errno;
    return Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 errnoMessage("open", path, err)};
  }
  auto hasher = DualHasher::create();
  if (!hasher) return hasher.error();
  std::vector<char> buf(kCopyChunk);
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::internal(errnoMessage("read", path, errno));
    }
    if (n == 0) return hasher->finish();
    hasher->update(buf.data(), static_cast<std::size_t>(n));
  }
}

// Removes `path`; a missing file is fine (removal must be repeatable).
Result<void> removeIfPresent(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error::internal(errnoMessage("remove", path, errno));
  }
  return success();
}

}  // namespace

Result<void> validateNewImage(const NewImage& image) {
  // nlohmann refuses to serialise invalid UTF-8 (by exception): find out here, not mid-request.
  try {
    (void)nlohmann::json(image.name).dump();
    (void)image.properties.dump();
  } catch (const nlohmann::json::exception&) {
    return Error::invalid(fmt::format("The name or a property of new image '{}' is not valid UTF-8",
                                      printable(image.name)));
  }
  if (image.name.empty() || utf8Length(image.name) > kMaxNameChars ||
      glance::hasControlCharacter(image.name)) {
    return Error::invalid(
        fmt::format("Image name '{}' must have 1 to {} characters and no control characters",
                    printable(image.name), kMaxNameChars));
  }
  if (image.owner.size() > kMaxOwnerChars || glance::hasControlCharacter(image.owner)) {
    return Error::invalid(
        fmt::format("Owner '{}' of new image '{}' must have at most {} characters and no control "
                    "characters",
                    printable(image.owner), printable(image.name), kMaxOwnerChars));
  }
  if (image.disk_format != "qcow2" && image.disk_format != "raw") {
    return Error::invalid(fmt::format("Disk format '{}' of new image '{}' is not 'qcow2' or 'raw'",
                                      printable(image.disk_format), printable(image.name)));
  }
  // kiln writes plain disk files; the other container formats describe wrappers it never makes.
  if (image.container_format != "bare") {
    return Error::invalid(fmt::format("Container format '{}' of new image '{}' is not 'bare'",
                                      printable(image.container_format), printable(image.name)));
  }
  if (image.properties.is_null()) return success();
  if (!image.properties.is_object()) {
    return Error::invalid(fmt::format("The properties of new image '{}' are not a JSON object",
                                      printable(image.name)));
  }
  for (const auto& [key, value] : image.properties.items()) {
    if (!isPropertyKey(key)) {
      return Error::invalid(
          fmt::format("Property name '{}' of new image '{}' is not 1 to {} of [a-z0-9_:.-]",
                      printable(key), printable(image.name), kMaxPropertyKeyChars));
    }
    if (glanceCoreFields().count(key) != 0 || key.rfind(kReservedPropertyPrefix, 0) == 0) {
      return Error::invalid(fmt::format(
          "Property '{}' of new image '{}' is a Glance field or reserved name, not a property", key,
          printable(image.name)));
    }
    if (!value.is_string()) {
      return Error::invalid(fmt::format("Property '{}' of new image '{}' is not a string", key,
                                        printable(image.name)));
    }
    if (value.get_ref<const std::string&>().size() > kMaxPropertyValueBytes) {
      return Error::invalid(fmt::format("Property '{}' of new image '{}' is longer than {} bytes",
                                        key, printable(image.name), kMaxPropertyValueBytes));
    }
  }
  return success();
}

// ---------------------------------------------------------------------------------------------
// LocalDirUploader

namespace {

std::string queuedPath(const std::string& dir, const std::string& id) {
  return dir + "/." + id + ".queued";
}

}  // namespace

Result<std::string> LocalDirUploader::create(const NewImage& image) {
  if (auto v = validateNewImage(image); !v) return std::move(v).error();
  std::string id = randomUuid();
  nlohmann::json queued = glanceFields(image);
  queued["id"] = id;
  queued["status"] = "queued";
  if (auto w = fs::writeFileAtomically(queuedPath(dir_, id), queued.dump(2) + "\n"); !w) {
    return std::move(w).error();
  }
  log::info("Created image '{}' ('{}') in '{}'", id, printable(image.name), dir_);
  return id;
}

Result<void> LocalDirUploader::upload(const std::string& image_id, const std::string& file_path) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(image_id)));
  }
  const std::string record_path = dir_ + "/" + image_id + ".json";
  const std::string image_path = dir_ + "/" + image_id + ".img";
  auto fail = [&](Error cause) -> Result<void> {
    if (auto d = discard(image_id); !d) {
      log::error("Image '{}' could not be removed after its upload failed: {}", image_id,
                 d.error().message);
      cause.message += fmt::format("; removing the image failed too: {}", d.error().message);
    }
    return cause;
  };
  struct stat st {};
  if (::stat(record_path.c_str(), &st) == 0) {
    // Already active: an upload repeated after a crash. The bytes are never replaced under a
    // record that a reader may be using; the repeat succeeds if they are this file's.
    auto source = LocalDirSource(dir_).getRecord(image_id);
    if (!source) return fail(source.error());
    auto sent = hashFile(file_path);
    if (!sent) return fail(sent.error());
    if (auto mismatch = recordMismatch(*source, *sent)) {
      return fail(Error::conflict(
          fmt::format("Image '{}' in '{}' is already active with other bytes than '{}': {}",
                      image_id, dir_, file_path, *mismatch)));
    }
    (void)removeIfPresent(queuedPath(dir_, image_id));
    return success();
  }
  auto text = fs::readFile(queuedPath(dir_, image_id), kQueuedRecordMaxBytes);
  if (!text) {
    if (text.error().code != ErrorCode::kNotFound) return fail(text.error());
    return Error::notFound(
        fmt::format("Image '{}' was not created in '{}' (or was discarded); nothing to upload to",
                    image_id, dir_));
  }
  auto queued = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (queued.is_discarded() || !queued.is_object() || !queued.contains("name") ||
      !queued["name"].is_string()) {
    return fail(Error::internal(
        fmt::format("The queued record of image '{}' in '{}' is damaged", image_id, dir_)));
  }

  auto start = Clock::now();
  // A hidden name (ids never start with a dot) that no reader looks at; removed on failure, and
  // by discard() after a crash.
  const std::string tmp_path = dir_ + "/." + image_id + ".img.tmp-" + randomUuid().substr(0, 8);
  auto copied = copyHashed(file_path, tmp_path);
  if (!copied) {
    (void)::unlink(tmp_path.c_str());
    return fail(
        Error{copied.error().code, fmt::format("Copying '{}' into image '{}' failed: {}", file_path,
                                               image_id, copied.error().message)});
  }
  if (::rename(tmp_path.c_str(), image_path.c_str()) != 0) {
    int err = errno;
    (void)::unlink(tmp_path.c_str());
    return fail(Error::internal(
        fmt::format("Cannot rename '{}' to '{}': {}", tmp_path, image_path, fs::errnoText(err))));
  }
  if (auto s = fs::fsyncDirectory(dir_); !s) return fail(std::move(s).error());

  // The record last: once it exists, all of the bytes do.
  nlohmann::json record = queued;
  record["id"] = image_id;
  record["status"] = "active";
  record["size"] = copied->size;
  record["checksum"] = copied->md5;
  record["os_hash_algo"] = "sha512";
  record["os_hash_value"] = copied->sha512;
  if (auto w = fs::writeFileAtomically(record_path, record.dump(2) + "\n"); !w) {
    return fail(std::move(w).error());
  }
  if (auto r = removeIfPresent(queuedPath(dir_, image_id)); !r) {
    log::warn("Image '{}' is active but its queued record stays: {}", image_id, r.error().message);
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  log::info("Image '{}' is active in '{}': {} bytes from '{}' in {:.1f} s", image_id, dir_,
            copied->size, file_path, seconds);
  return success();
}

Result<void> LocalDirUploader::discard(const std::string& image_id) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(image_id)));
  }
  // The record first: a reader must never find it without its bytes.
  for (const std::string& path : {dir_ + "/" + image_id + ".json", dir_ + "/" + image_id + ".img",
                                  queuedPath(dir_, image_id)}) {
    if (auto r = removeIfPresent(path); !r) return r;
  }
  // Temporary files an interrupted upload left behind (a crash mid-copy).
  const std::string tmp_prefixes[] = {"." + image_id + ".img.tmp-", image_id + ".json.tmp-"};
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    for (const auto& prefix : tmp_prefixes) {
      if (name.rfind(prefix, 0) == 0) {
        if (auto r = removeIfPresent(entry.path().string()); !r) return r;
      }
    }
  }
  return fs::fsyncDirectory(dir_);
}

Result<void> LocalDirUploader::adopt(const std::string& image_id, const std::string&,
                                     const std::string&) {
  return Error::invalid(fmt::format(
      "Image '{}' was created by another service, and kiln's images are in the local directory "
      "'{}': an image service's snapshots need [glance] api_servers",
      printable(image_id), dir_));
}

// ---------------------------------------------------------------------------------------------
// GlanceUploader

Result<std::unique_ptr<GlanceUploader>> GlanceUploader::make(GlanceOptions options,
                                                             HttpClient& http, Sleeper sleep) {
  auto endpoint = GlanceEndpoint::create(std::move(options), std::move(sleep));
  if (!endpoint) return endpoint.error();
  GlanceOptions record_options = (*endpoint)->options();
  record_options.allowed_direct_url_schemes.clear();
  record_options.direct_download_dirs.clear();
  auto records = GlanceSource::create(std::move(record_options), http, (*endpoint)->sleeper());
  if (!records) return records.error();
  return std::unique_ptr<GlanceUploader>(
      new GlanceUploader(std::move(endpoint).value(), http, std::move(records).value()));
}

GlanceUploader::GlanceUploader(std::unique_ptr<GlanceEndpoint> endpoint, HttpClient& http,
                               std::unique_ptr<GlanceSource> records)
    : endpoint_(std::move(endpoint)), http_(http), records_(std::move(records)) {}

GlanceUploader::~GlanceUploader() = default;

Result<std::string> GlanceUploader::create(const NewImage& image) {
  if (auto v = validateNewImage(image); !v) return std::move(v).error();
  // kiln picks the id: a POST whose answer was lost can then be recognised on the next attempt
  // (Glance answers 409 for an id it has) instead of leaving a second, orphaned image.
  const std::string id = randomUuid();
  nlohmann::json doc = glanceFields(image);
  doc["id"] = id;
  const std::string body = doc.dump();
  const std::string action = fmt::format("create image '{}'", printable(image.name));
  // Whether an earlier attempt may have reached Glance (a broken transfer, a 5xx).
  bool maybe_created = false;
  auto created = endpoint_->withRetries<std::string>(
      fmt::format("Creating image '{}' ({})", printable(image.name), id),
      [&](const std::string& server) -> Attempt<std::string> {
        auto spec = endpoint_->requestFor(server + "/v2/images");
        if (!spec) return {spec.error(), false};
        bool sent_token = sentToken(*spec);
        spec->max_body_bytes = glance::kRecordMaxBytes;
        spec->total_timeout =
            endpoint_->options().connect_timeout + endpoint_->options().stall_timeout;
        spec->headers.emplace_back("Content-Type", "application/json");
        spec->headers.emplace_back("Accept", "application/json");
        auto reply = http_.send(*spec, "POST", body);
        if (!reply) {
          bool retryable = reply.error().code == ErrorCode::kUnavailable;
          maybe_created = maybe_created || retryable;
          return {reply.error(), retryable};
        }
        if (reply->status == 201 || reply->status == 200) {
          auto answer = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
          if (answer.is_object() && answer.contains("id") && answer["id"].is_string() &&
              answer["id"] != id) {
            // Glance created an image, just not under our id: use it if it can be one of ours.
            const auto& other = answer["id"].get_ref<const std::string&>();
            if (isSafeImageId(other)) return {other, false};
            return {Error::unavailable(fmt::format(
                        "Glance at '{}' created image '{}' under an id kiln cannot use ('{}')",
                        server, printable(image.name), printable(other))),
                    false};
          }
          return {id, false};
        }
        if (reply->status == 409 && maybe_created) {
          // Most likely our own earlier attempt, whose answer was lost.
          auto record = records_->getRecord(id);
          if (record && record->status == "queued" && record->name == image.name) {
            log::info("Image '{}' was created by an earlier attempt whose answer was lost", id);
            return {id, false};
          }
        }
        Failure f = failureForStatus(reply->status, reply->body, server, action, "", sent_token);
        maybe_created = maybe_created || f.retryable;
        return {std::move(f.error), f.retryable};
      });
  if (!created) {
    // A queued image may exist after all; removing it is worth one quick try per server.
    if (maybe_created) {
      if (auto d = remove(id, static_cast<unsigned>(endpoint_->options().api_servers.size())); !d) {
        log::warn("Image '{}' may be left queued in Glance after its creation failed: {}", id,
                  d.error().message);
      }
    }
    return created;
  }
  log::info("Created image '{}' ('{}') in Glance", *created, printable(image.name));
  return created;
}

Result<void> GlanceUploader::upload(const std::string& image_id, const std::string& file_path) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(image_id)));
  }
  auto start = Clock::now();
  struct stat st {};
  if (::stat(file_path.c_str(), &st) != 0) {
    int err = errno;
    return deleteAfterFailure(
        image_id, Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                        fmt::format("Cannot upload '{}' to image '{}': {}", file_path, image_id,
                                    fs::errnoText(err))});
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  const std::string action = fmt::format("upload the data of image '{}'", image_id);
  // The digests of an attempt that read the whole file: what Glance must show afterwards.
  std::optional<SentBytes> complete;
  bool conflict = false;
  auto put = endpoint_->withRetries<void>(
      fmt::format("Uploading '{}' to image '{}'", file_path, image_id),
      [&](const std::string& server) -> Attempt<void> {
        auto spec = endpoint_->requestFor(server + "/v2/images/" + image_id + "/file");
        if (!spec) return {spec.error(), false};
        bool sent_token = sentToken(*spec);
        spec->max_body_bytes = glance::kErrorPageMaxBytes;
        spec->headers.emplace_back("Content-Type", "application/octet-stream");
        auto hasher = DualHasher::create();
        if (!hasher) return {hasher.error(), false};
        // Every attempt starts from the first byte: Glance has no resumable upload.
        ByteSink on_read = [&](const char* data, std::size_t len) -> Result<void> {
          hasher->update(data, len);
          return success();
        };
        auto reply = http_.upload(*spec, "PUT", file_path, on_read);
        bool succeeded = reply && reply->status >= 200 && reply->status < 300;
        if (succeeded || hasher->size() == file_size) complete = hasher->finish();
        if (!reply) return {reply.error(), reply.error().code == ErrorCode::kUnavailable};
        if (succeeded) return {success(), false};
        Failure f =
            failureForStatus(reply->status, reply->body, server, action, image_id, sent_token);
        conflict = reply->status == 409;
        return {std::move(f.error), f.retryable};
      });
  const bool uploaded = put.ok();
  if (!uploaded && !conflict) return deleteAfterFailure(image_id, std::move(put).error());
  if (!uploaded && !complete) {
    // A 409 before any attempt sent the whole file: an upload repeated after a crash finds the
    // image active. Hash the file to compare it with what Glance holds.
    auto hashed = hashFile(file_path);
    if (!hashed) return deleteAfterFailure(image_id, hashed.error());
    complete = std::move(hashed).value();
  }
  // After a 409, the record read back decides: the image may be active with exactly these bytes
  // (an earlier attempt completed but its answer was lost, or the upload is a repeat).

  auto record = records_->getRecord(image_id);
  if (!record) {
    Error cause = uploaded ? Error{record.error().code,
                                   fmt::format("Image '{}' was uploaded but its record cannot be "
                                               "read back to check it: {}",
                                               image_id, record.error().message)}
                           : std::move(put).error();
    return deleteAfterFailure(image_id, std::move(cause));
  }
  if (auto mismatch = recordMismatch(*record, *complete)) {
    Error cause = uploaded ? Error::unavailable(fmt::format(
                                 "Image '{}' does not hold what was uploaded from '{}': {}",
                                 image_id, file_path, *mismatch))
                           : std::move(put).error();
    if (!uploaded) cause.message += "; and " + *mismatch;
    return deleteAfterFailure(image_id, std::move(cause));
  }
  if (!uploaded) log::info("Image '{}' already holds the bytes of '{}'", image_id, file_path);
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  log::info("Image '{}' is active in Glance: {} bytes from '{}' in {:.1f} s", image_id,
            complete->size, file_path, seconds);
  return success();
}

Result<void> GlanceUploader::discard(const std::string& image_id) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(image_id)));
  }
  return remove(image_id, 0);
}

Result<void> GlanceUploader::adopt(const std::string& image_id, const std::string& disk_format,
                                   const std::string& container_format) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(image_id)));
  }
  auto record = records_->getRecord(image_id);
  if (!record) return record.error();
  if (record->status != "queued") {
    return Error::conflict(fmt::format("Image '{}' is {}, not queued: it cannot take a snapshot",
                                       image_id, printable(record->status)));
  }
  nlohmann::json patch = nlohmann::json::array();
  for (const auto& [field, value] :
       {std::pair{"/disk_format", disk_format}, std::pair{"/container_format", container_format}}) {
    patch.push_back({{"op", "replace"}, {"path", field}, {"value", value}});
  }
  const std::string body = patch.dump();
  const std::string action = fmt::format("set the formats of image '{}'", image_id);
  auto patched = endpoint_->withRetries<void>(
      fmt::format("Setting the formats of image '{}'", image_id),
      [&](const std::string& server) -> Attempt<void> {
        auto spec = endpoint_->requestFor(server + "/v2/images/" + image_id);
        if (!spec) return {spec.error(), false};
        bool sent_token = sentToken(*spec);
        spec->max_body_bytes = glance::kRecordMaxBytes;
        spec->total_timeout =
            endpoint_->options().connect_timeout + endpoint_->options().stall_timeout;
        spec->headers.emplace_back("Content-Type", "application/openstack-images-v2.1-json-patch");
        spec->headers.emplace_back("Accept", "application/json");
        auto reply = http_.send(*spec, "PATCH", body);
        // A replace is idempotent: repeating it after a lost answer does no harm.
        if (!reply) return {reply.error(), reply.error().code == ErrorCode::kUnavailable};
        if (reply->status == 200) return {success(), false};
        Failure f =
            failureForStatus(reply->status, reply->body, server, action, image_id, sent_token);
        return {std::move(f.error), f.retryable};
      });
  if (patched) {
    log::info("Image '{}' in Glance takes a {}/{} snapshot", image_id, disk_format,
              container_format);
  }
  return patched;
}

Result<void> GlanceUploader::remove(const std::string& image_id, unsigned max_attempts) {
  const std::string action = fmt::format("delete image '{}'", image_id);
  return endpoint_->withRetries<void>(
      fmt::format("Deleting image '{}'", image_id),
      [&](const std::string& server) -> Attempt<void> {
        auto spec = endpoint_->requestFor(server + "/v2/images/" + image_id);
        if (!spec) return {spec.error(), false};
        bool sent_token = sentToken(*spec);
        spec->max_body_bytes = glance::kErrorPageMaxBytes;
        spec->total_timeout =
            endpoint_->options().connect_timeout + endpoint_->options().stall_timeout;
        auto reply = http_.send(*spec, "DELETE", "");
        if (!reply) return {reply.error(), reply.error().code == ErrorCode::kUnavailable};
        // 404: already gone, which is what was asked for.
        if (reply->status == 204 || reply->status == 200 || reply->status == 404) {
          return {success(), false};
        }
        Failure f =
            failureForStatus(reply->status, reply->body, server, action, image_id, sent_token);
        return {std::move(f.error), f.retryable};
      },
      max_attempts);
}

Error GlanceUploader::deleteAfterFailure(const std::string& image_id, Error cause) {
  auto deleted = discard(image_id);
  if (!deleted) {
    log::error("Image '{}' could not be deleted from Glance after a failed upload: {}", image_id,
               deleted.error().message);
    cause.message += fmt::format("; deleting image '{}' failed too, so it is left in Glance: {}",
                                 image_id, deleted.error().message);
  } else {
    log::info("Deleted image '{}' from Glance after a failed upload", image_id);
  }
  return cause;
}

}  // namespace kiln::imagecache
