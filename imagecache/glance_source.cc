#include "imagecache/glance_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "common/fs.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/unique_fd.h"
#include "imagecache/glance_endpoint.h"

namespace kiln::imagecache {
namespace {

using glance::Failure;
using glance::printable;
using glance::snippet;
template <typename T>
using Attempt = GlanceEndpoint::Attempt<T>;

constexpr std::size_t kDirectReadChunk = 1 << 20;

std::string urlEncode(std::string_view s) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += fmt::format("%{:02X}", u);
    }
  }
  return out;
}

// A non-success answer from Glance to a read of image `image_id`.
Failure failureForStatus(long status, const std::string& body, const std::string& server,
                         const std::string& image_id, bool sent_token) {
  return glance::failureForStatus(status, snippet(body),
                                  glance::Call::read(server, image_id, sent_token));
}

// The first byte of "bytes 1000-1048575/1048576".
std::optional<std::uint64_t> contentRangeStart(const std::optional<std::string>& value) {
  if (!value || value->rfind("bytes ", 0) != 0) return std::nullopt;
  std::uint64_t start = 0;
  std::size_t i = 6;
  for (; i < value->size() && std::isdigit(static_cast<unsigned char>((*value)[i])); ++i) {
    if (start > (UINT64_MAX - 9) / 10) return std::nullopt;
    start = start * 10 + static_cast<std::uint64_t>((*value)[i] - '0');
  }
  if (i == 6 || i >= value->size() || (*value)[i] != '-') return std::nullopt;
  return start;
}

// The path a descriptor really refers to, with every symlink and ".." resolved by the kernel at
// open time: checking this path instead of the location's text leaves no window for a swap.
std::optional<std::string> pathOfDescriptor(int fd) {
  std::error_code ec;
  auto target = std::filesystem::read_symlink(fmt::format("/proc/self/fd/{}", fd), ec);
  if (ec) return std::nullopt;
  return target.string();
}

bool isUnder(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

}  // namespace

Result<void> validateGlanceOptions(const GlanceOptions& o) {
  if (o.api_servers.empty()) {
    return Error::invalid("[glance] api_servers is empty; name at least one Glance endpoint");
  }
  for (const auto& server : o.api_servers) {
    if ((!strings::startsWithIgnoringCase(server, "http://") &&
         !strings::startsWithIgnoringCase(server, "https://")) ||
        glance::hasControlCharacter(server) || server.find_first_of(" ?#") != std::string::npos) {
      return Error::invalid(fmt::format(
          "Glance API server '{}' is not an http:// or https:// URL without query or fragment",
          printable(server)));
    }
  }
  if (!o.token.empty() && !o.token_file.empty()) {
    return Error::invalid("[glance] token and token_file are both set; use one of them");
  }
  if (glance::hasControlCharacter(o.token)) {
    return Error::invalid("[glance] token contains a line break or another control character");
  }
  if (o.connect_timeout.count() <= 0 || o.stall_timeout.count() <= 0 ||
      o.retry_backoff.count() < 0) {
    return Error::invalid(
        fmt::format("Glance timeouts must be positive: connect_timeout {} ms, stall_timeout {} s, "
                    "retry_backoff {} ms",
                    o.connect_timeout.count(), o.stall_timeout.count(), o.retry_backoff.count()));
  }
  for (const auto& scheme : o.allowed_direct_url_schemes) {
    if (scheme != "file") {
      return Error::invalid(fmt::format(
          "Direct download scheme '{}' is not supported; only 'file' is", printable(scheme)));
    }
  }
  for (const auto& dir : o.direct_download_dirs) {
    if (dir.empty() || dir.front() != '/') {
      return Error::invalid(
          fmt::format("Direct download directory '{}' is not an absolute path", printable(dir)));
    }
  }
  bool file_allowed = !o.allowed_direct_url_schemes.empty();
  if (file_allowed && o.direct_download_dirs.empty()) {
    return Error::invalid(
        "[glance] allowed_direct_url_schemes lists 'file' but direct_download_dirs is empty; "
        "name the directories kiln may read images from");
  }
  return success();
}

Result<std::unique_ptr<GlanceSource>> GlanceSource::create(GlanceOptions options, HttpClient& http,
                                                           Sleeper sleep) {
  auto endpoint = GlanceEndpoint::create(std::move(options), std::move(sleep));
  if (!endpoint) return endpoint.error();
  return std::unique_ptr<GlanceSource>(new GlanceSource(std::move(endpoint).value(), http));
}

GlanceSource::GlanceSource(std::unique_ptr<GlanceEndpoint> endpoint, HttpClient& http)
    : endpoint_(std::move(endpoint)), http_(http) {}

GlanceSource::~GlanceSource() = default;

Result<ImageRecord> GlanceSource::getRecord(const std::string& image_id) {
  auto seen = recordSeenBy(image_id, "");
  if (!seen) return seen.error();
  return std::move(seen->record);
}

Result<GlanceSource::SeenRecord> GlanceSource::recordSeenBy(const std::string& image_id,
                                                            const std::string& token) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(image_id)));
  }
  const bool callers_token = !token.empty();
  return endpoint_->withRetries<SeenRecord>(
      fmt::format("Fetching the record of image '{}'", image_id),
      [&](const std::string& server) -> Attempt<SeenRecord> {
        auto spec = endpoint_->requestFor(server + "/v2/images/" + urlEncode(image_id), token);
        if (!spec) return {spec.error(), false};
        bool sent_token = !spec->headers.empty();
        spec->max_body_bytes = glance::kRecordMaxBytes;
        // A record is small: one that trickles in byte by byte must not hold a launch forever.
        spec->total_timeout =
            endpoint_->options().connect_timeout + endpoint_->options().stall_timeout;
        spec->headers.emplace_back("Accept", "application/json");
        auto reply = http_.get(*spec);
        if (!reply) return {reply.error(), reply.error().code == ErrorCode::kUnavailable};
        if (reply->status == 401 && callers_token) {
          return {Error{ErrorCode::kUnauthorized,
                        fmt::format("Glance at '{}' did not accept the caller's token for image "
                                    "'{}' (HTTP 401)",
                                    server, image_id)},
                  false};
        }
        // What Glance hides from the project's own token is, for that project, not there.
        if (reply->status == 403 && callers_token) {
          return {Error::notFound(
                      fmt::format("Image '{}' was not found in Glance at '{}'", image_id, server)),
                  false};
        }
        if (reply->status != 200) {
          Failure f = failureForStatus(reply->status, reply->body, server, image_id, sent_token);
          return {std::move(f.error), f.retryable};
        }
        auto doc = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
        if (doc.is_discarded()) {
          return {Error::unavailable(fmt::format(
                      "Glance at '{}' sent a record for image '{}' that is not valid JSON", server,
                      image_id)),
                  false};
        }
        // Whatever is cached is cached under the id kiln asked for: the answer must vouch for it.
        if (!doc.is_object() || !doc.contains("id") || !doc["id"].is_string() ||
            doc["id"] != image_id) {
          std::string other = doc.is_object() && doc.contains("id") && doc["id"].is_string()
                                  ? printable(doc["id"].get<std::string>())
                                  : std::string("none");
          return {Error::invalid(fmt::format(
                      "Glance at '{}' answered the request for image '{}' with a record of a "
                      "different id ('{}'); kiln refuses it",
                      server, image_id, other)),
                  false};
        }
        auto record = parseImageRecord(doc, image_id);
        if (!record) return {record.error(), false};
        return {SeenRecord{std::move(record).value(), server}, false};
      });
}

Result<std::string> GlanceSource::membershipOf(const std::string& image_id,
                                               const std::string& project_id,
                                               const std::string& token) {
  return endpoint_->withRetries<std::string>(
      fmt::format("Reading project '{}''s membership of image '{}'", printable(project_id),
                  image_id),
      [&](const std::string& server) -> Attempt<std::string> {
        auto spec = endpoint_->requestFor(
            server + "/v2/images/" + urlEncode(image_id) + "/members/" + urlEncode(project_id),
            token);
        if (!spec) return {spec.error(), false};
        bool sent_token = !spec->headers.empty();
        spec->max_body_bytes = glance::kRecordMaxBytes;
        spec->total_timeout =
            endpoint_->options().connect_timeout + endpoint_->options().stall_timeout;
        spec->headers.emplace_back("Accept", "application/json");
        auto reply = http_.get(*spec);
        if (!reply) return {reply.error(), reply.error().code == ErrorCode::kUnavailable};
        // Not a member, or not allowed to see the membership: either way, no accepted member.
        if (reply->status == 404 || reply->status == 403) return {std::string(), false};
        if (reply->status != 200) {
          Failure f = failureForStatus(reply->status, reply->body, server, image_id, sent_token);
          return {std::move(f.error), f.retryable};
        }
        auto doc = nlohmann::json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
        bool well_formed = doc.is_object() && doc.contains("status") && doc["status"].is_string() &&
                           doc.contains("member_id") && doc["member_id"].is_string() &&
                           doc.contains("image_id") && doc["image_id"].is_string();
        if (!well_formed) {
          return {Error::unavailable(fmt::format(
                      "Glance at '{}' sent a membership of image '{}' that kiln cannot read",
                      server, image_id)),
                  false};
        }
        // Another image's or another project's membership grants nothing.
        if (doc["image_id"] != image_id || doc["member_id"] != project_id) {
          return {Error::invalid(fmt::format(
                      "Glance at '{}' answered the request for project '{}''s membership of image "
                      "'{}' with a different membership; kiln refuses it",
                      server, printable(project_id), image_id)),
                  false};
        }
        return {doc["status"].get<std::string>(), false};
      });
}

Result<void> GlanceSource::checkAccess(const std::string& image_id, const ImageUser& user) {
  auto seen = recordSeenBy(image_id, user.token);
  if (!seen) return seen.error();
  const ImageRecord& record = seen->record;
  RecordAccess access = accessByRecord(record, user.project_id);
  std::string membership;
  if (access == RecordAccess::kNeedsMembership) {
    auto status = membershipOf(image_id, user.project_id, user.token);
    if (!status) return status.error();
    membership = *status;
    access = membership == "accepted" ? RecordAccess::kAllowed : RecordAccess::kDenied;
  }
  if (access == RecordAccess::kAllowed) return success();
  log::info(
      "Project '{}' may not use image '{}' (owner '{}', visibility '{}', membership '{}'); "
      "answered as missing",
      printable(user.project_id), image_id, printable(record.owner), printable(record.visibility),
      membership.empty() ? "none" : printable(membership));
  // The words of a 404 from the same server: a denied image and a missing one look alike.
  return Error::notFound(
      fmt::format("Image '{}' was not found in Glance at '{}'", image_id, seen->server));
}

Result<void> GlanceSource::download(const ImageRecord& record, const ByteSink& sink) {
  if (!isSafeImageId(record.id)) {
    return Error::invalid(
        fmt::format("Image id '{}' is not a valid image id", printable(record.id)));
  }
  std::uint64_t delivered = 0;
  if (!endpoint_->options().allowed_direct_url_schemes.empty()) {
    auto direct = downloadDirect(record, sink, delivered);
    if (!direct) return direct.error();
    if (*direct) return success();
  }
  return downloadOverHttp(record, sink, delivered);
}

// Why read() and not a reflink or copy_file_range into the cache: the cache hashes every byte on
// the way anyway (so the bytes must pass through this process), the sink takes bytes rather than
// files, and a Glance store is often another filesystem (NFS) where a reflink cannot exist.
Result<bool> GlanceSource::downloadDirect(const ImageRecord& record, const ByteSink& sink,
                                          std::uint64_t& delivered) {
  std::vector<std::string> roots;
  for (const auto& dir : endpoint_->options().direct_download_dirs) {
    std::error_code ec;
    auto canonical = std::filesystem::canonical(dir, ec);
    if (!ec) roots.push_back(canonical.string());
  }
  for (const std::string& location : record.locations) {
    if (!strings::startsWithIgnoringCase(location, "file://")) continue;
    std::string_view rest = std::string_view(location).substr(7);
    if (strings::startsWithIgnoringCase(rest, "localhost/")) rest.remove_prefix(9);
    if (rest.empty() || rest.front() != '/') {
      log::info("Image '{}' location '{}' is not a local path; ignoring it", record.id,
                printable(location));
      continue;
    }
    std::string path(rest);
    // O_NONBLOCK: a FIFO planted at the path must not hang the open; it is refused below.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd.valid()) {
      log::info("Cannot open image '{}' at '{}' ({}); downloading it through the Glance API",
                record.id, printable(path), fs::errnoText(errno));
      continue;
    }
    auto real = pathOfDescriptor(fd.get());
    bool allowed = real && std::any_of(roots.begin(), roots.end(), [&](const std::string& root) {
                     return isUnder(*real, root);
                   });
    if (!allowed) {
      log::warn(
          "Image '{}' location '{}' resolves to '{}', which is outside direct_download_dirs; "
          "downloading it through the Glance API",
          record.id, printable(path), real ? printable(*real) : std::string("?"));
      continue;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      log::warn("Image '{}' location '{}' is not a regular file; downloading it through the API",
                record.id, printable(*real));
      continue;
    }
    if (record.size && static_cast<std::uint64_t>(st.st_size) != *record.size) {
      log::warn(
          "Image '{}' at '{}' has {} bytes but Glance says {}; downloading it through the API",
          record.id, printable(*real), st.st_size, *record.size);
      continue;
    }
    log::info("Reading image '{}' directly from '{}'", record.id, printable(*real));
    std::vector<char> buf(kDirectReadChunk);
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        // The API continues from `delivered`: nothing is fed twice.
        log::warn(
            "Reading image '{}' from '{}' failed after {} bytes ({}); continuing through "
            "the Glance API",
            record.id, printable(*real), delivered, fs::errnoText(errno));
        return false;
      }
      if (n == 0) return true;
      if (auto r = sink(buf.data(), static_cast<std::size_t>(n)); !r) return std::move(r).error();
      delivered += static_cast<std::uint64_t>(n);
    }
  }
  return false;
}

Result<void> GlanceSource::downloadOverHttp(const ImageRecord& record, const ByteSink& sink,
                                            std::uint64_t& delivered) {
  return endpoint_->withRetries<void>(
      fmt::format("Downloading image '{}'", record.id),
      [&](const std::string& server) -> Attempt<void> {
        auto spec = endpoint_->requestFor(server + "/v2/images/" + urlEncode(record.id) + "/file");
        if (!spec) return {spec.error(), false};
        bool sent_token = !spec->headers.empty();
        spec->max_body_bytes = glance::kErrorPageMaxBytes;
        const std::uint64_t resume_from = delivered;
        if (resume_from > 0) {
          spec->headers.emplace_back("Range", fmt::format("bytes={}-", resume_from));
        }
        std::uint64_t skip = 0;
        std::optional<Error> sink_error;
        std::optional<Error> hook_error;
        ResponseHook check_range = [&](const HttpResult& head) -> Result<void> {
          if (resume_from == 0) return success();
          if (head.status == 200) {
            skip = resume_from;  // the server ignored the range: drop what the sink already has
          } else if (head.status == 206) {
            auto range = head.header("content-range");
            auto start = contentRangeStart(range);
            if (!start || *start != resume_from) {
              hook_error = Error::unavailable(
                  fmt::format("Glance at '{}' answered a request for image '{}' from byte {} with "
                              "Content-Range '{}'",
                              server, record.id, resume_from, printable(range.value_or(""))));
              return *hook_error;
            }
          }
          return success();
        };
        ByteSink counting = [&](const char* data, std::size_t len) -> Result<void> {
          if (skip > 0) {
            std::size_t drop = static_cast<std::size_t>(std::min<std::uint64_t>(skip, len));
            skip -= drop;
            data += drop;
            len -= drop;
            if (len == 0) return success();
          }
          if (auto r = sink(data, len); !r) {
            sink_error = r.error();
            return r;
          }
          delivered += len;
          return success();
        };
        auto reply = http_.stream(*spec, counting, check_range);
        // The sink's own error (disk full, a failed check) is final and returned as it is.
        if (sink_error) return {std::move(*sink_error), false};
        if (hook_error) return {std::move(*hook_error), false};
        if (!reply) {
          if (delivered > resume_from) {
            log::info(
                "The download of image '{}' broke after {} bytes; the next attempt "
                "continues from there",
                record.id, delivered);
          }
          return {reply.error(), reply.error().code == ErrorCode::kUnavailable};
        }
        if (reply->status == 200 || reply->status == 206) {
          if (skip > 0) {
            return {Error::unavailable(fmt::format(
                        "Glance at '{}' sent image '{}' shorter than the {} bytes already "
                        "received",
                        server, record.id, resume_from)),
                    false};
          }
          return {success(), false};
        }
        if (reply->status == 204) {
          return {Error::conflict(fmt::format("Image '{}' has no data in Glance at '{}' (HTTP 204)",
                                              record.id, server)),
                  false};
        }
        if (reply->status == 416 && resume_from > 0 && record.size && resume_from == *record.size) {
          return {success(), false};  // the break came after the last byte
        }
        Failure f = failureForStatus(reply->status, reply->body, server, record.id, sent_token);
        return {std::move(f.error), f.retryable};
      });
}

}  // namespace kiln::imagecache
