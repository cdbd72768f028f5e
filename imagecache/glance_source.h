#pragma once
// Base images from OpenStack Glance (API v2), the way nova-compute fetches them: the record from
// GET /v2/images/{id}, the bytes from GET /v2/images/{id}/file, retries with failover over several
// API servers, and optionally a direct read of a file:// location that the node can see (a shared
// or local Glance filesystem store). The cache verifies size and hash of whatever arrives.
//
// Retries (both calls): a refused or reset connection, a timeout or stall, HTTP 5xx and 429 are
// retried up to num_retries times. Each attempt moves to the next API server; a server that
// answered last time is tried first next time. Going round to a server already tried in this
// call waits first: retry_backoff, then twice that, and so on (at most 16 times it).
//
//   attempt 1: server A   attempt 2: server B   (wait 1x)  attempt 3: A   (wait 2x)  attempt 4: B
//
// 404, 401, 403 and other answers are final at once.
//
// Access (checkAccess, on every launch): GET /v2/images/{id} with the caller's Keystone token
// when it speaks for the instance's project (Glance then applies its own rules and policy to that
// project), otherwise with kiln's token; in both cases the record's owner and visibility are
// then judged for the project (accessByRecord), and a `shared` image needs
// GET /v2/images/{id}/members/{project} to answer status `accepted`. What Glance hides from the
// caller's token (404, 403) and what the rules deny are all answered as a missing image.
//
// A record whose `id` is absent or another image's is refused: kiln caches nothing under an id
// Glance did not vouch for.
//
// Downloads continue instead of restarting: when a transfer breaks after N bytes reached the
// sink, the next attempt asks for `Range: bytes=N-` (Glance answers 206) and feeds the sink from
// byte N on; if a server ignores the range and sends everything (200), the first N bytes are
// dropped. The sink sees every byte of the image once, in order, or the download fails.

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "imagecache/http_client.h"
#include "imagecache/image_source.h"

namespace kiln::imagecache {

class GlanceEndpoint;

struct GlanceOptions {
  // Endpoints such as "http://glance.example:9292" or "https://cloud.example/image"; the
  // /v2/... paths are appended.
  std::vector<std::string> api_servers;
  unsigned num_retries = 3;  // 0: one attempt only (nova's [glance]num_retries)
  std::chrono::milliseconds retry_backoff{1000};
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  // A transfer that moves no byte for this long is aborted (and retried); there is no total
  // timeout, so big images on slow links are fine.
  std::chrono::seconds stall_timeout{60};
  // Sent as X-Auth-Token. token_file is read on every request, so a rotated token is picked up
  // without a restart. At most one of the two; neither means no header (a Glance without
  // Keystone).
  std::string token;
  std::string token_file;
  std::string ca_file;  // PEM bundle for https api_servers; empty: the system store
  // Location schemes the node may read directly, bypassing the API; only "file" is supported
  // (nova's removed [glance]allowed_direct_url_schemes).
  std::vector<std::string> allowed_direct_url_schemes;
  // Absolute directories under which a file:// location may be read (after resolving symlinks
  // and ".."), e.g. the Glance store's mount point on this node.
  std::vector<std::string> direct_download_dirs;
};

// Checks what can be checked without the network: at least one http(s) server, directories
// absolute, not both token and token_file, only known direct schemes.
Result<void> validateGlanceOptions(const GlanceOptions& options);

// Safe to use from several threads at once if the HttpClient is.
class GlanceSource final : public ImageSource {
 public:
  // Waits between retries; tests pass one that records instead of sleeping.
  using Sleeper = std::function<void(std::chrono::milliseconds)>;

  // Validates the options (validateGlanceOptions). `http` must outlive the source. An empty
  // `sleep` sleeps for real.
  static Result<std::unique_ptr<GlanceSource>> create(GlanceOptions options, HttpClient& http,
                                                      Sleeper sleep = {});

  ~GlanceSource() override;

  Result<ImageRecord> getRecord(const std::string& image_id) override;
  Result<void> download(const ImageRecord& record, const ByteSink& sink) override;
  Result<void> checkAccess(const std::string& image_id, const ImageUser& user) override;

 private:
  // The record as Glance shows it to `token` (empty: kiln's own), and the server that answered.
  struct SeenRecord {
    ImageRecord record;
    std::string server;
  };
  Result<SeenRecord> recordSeenBy(const std::string& image_id, const std::string& token);
  // The status of `project_id`'s membership of image `image_id` ("accepted", "pending",
  // "rejected"), or "" when it is no member.
  Result<std::string> membershipOf(const std::string& image_id, const std::string& project_id,
                                   const std::string& token);

  GlanceSource(std::unique_ptr<GlanceEndpoint> endpoint, HttpClient& http);

  // Reads a permitted file:// location into the sink: true when the whole file went through.
  // False when no location may be read, or a read broke off: the API then serves the image from
  // byte `delivered` on (the bytes the sink accepted so far). An error is the sink's, and final.
  Result<bool> downloadDirect(const ImageRecord& record, const ByteSink& sink,
                              std::uint64_t& delivered);
  Result<void> downloadOverHttp(const ImageRecord& record, const ByteSink& sink,
                                std::uint64_t& delivered);

  // The options, the requests and the retries with failover.
  std::unique_ptr<GlanceEndpoint> endpoint_;
  HttpClient& http_;
};

}  // namespace kiln::imagecache
