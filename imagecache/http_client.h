#pragma once
// The HTTP edge of the image cache. GlanceSource speaks to this interface so that unit tests can
// script the image service; CurlClient (curl_client.h) is the real one and the only code in kiln
// that includes libcurl.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "imagecache/image_source.h"

namespace kiln::imagecache {

struct HttpRequestSpec {
  std::string url;  // http:// or https:// only; anything else is kInvalidArgument
  // Request headers as (name, value). Values may be secrets (X-Auth-Token): clients never log
  // them and never quote them in errors. A CR or LF in either is refused.
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  // A stalled transfer aborts when fewer than low_speed_bytes_per_second arrive for
  // low_speed_time (libcurl's LOW_SPEED pair; it averages over the last few seconds, so bytes
  // that arrived just before a stall delay the abort by up to ~6 s). There is deliberately no
  // total timeout by default: a 20 GiB image on a slow link is fine as long as it keeps moving.
  std::uint64_t low_speed_bytes_per_second = 1;
  std::chrono::seconds low_speed_time{60};
  // Zero means none. Worth setting for small requests (a record), never for image bytes.
  std::chrono::milliseconds total_timeout{0};
  std::string ca_file;  // PEM bundle for https; empty means the system store
  // get(), send(), upload(): a longer body fails with kTooLarge. stream(): the bound on a non-2xx
  // body kept for the error message (the rest is dropped, the transfer still ends cleanly).
  std::size_t max_body_bytes = 16 << 20;
};

struct HttpResult {
  long status = 0;
  // Response headers as received, names lower-cased, values trimmed; in order.
  std::vector<std::pair<std::string, std::string>> headers;
  // get(), send(), upload(): the body. stream(): empty for a 2xx (the bytes went to the sink),
  // otherwise the start of the error page, at most max_body_bytes.
  std::string body;

  // The first header called `lowercase_name`, if any.
  std::optional<std::string> header(std::string_view lowercase_name) const {
    auto it = std::find_if(headers.begin(), headers.end(),
                           [&](const auto& h) { return h.first == lowercase_name; });
    if (it == headers.end()) return std::nullopt;
    return it->second;
  }
};

// Sees the final response's status and headers (body empty) before the first body byte reaches
// the sink; an error aborts the transfer and is what stream() returns.
using ResponseHook = std::function<Result<void>(const HttpResult& head)>;

// Implementations must be safe to call from several threads at once (two launches may fetch two
// images); no call follows redirects, which come back as a 3xx status.
class HttpClient {
 public:
  virtual ~HttpClient() = default;

  // The whole response, body bounded by spec.max_body_bytes. Transport failures (refused,
  // reset, timed out, stalled) are kUnavailable; any status, 5xx included, is a successful result
  // for the caller to judge.
  virtual Result<HttpResult> get(const HttpRequestSpec& spec) = 0;

  // Streams a 2xx body to `sink` in arrival order, each byte exactly once; other statuses keep
  // their body in HttpResult::body and never reach the sink. `on_response` (may be empty) runs
  // first. When the sink or the hook returns an error the transfer is aborted and that very
  // error is returned. A transport failure after some bytes reached the sink is kUnavailable too:
  // callers that need to know how far it got count the bytes in their sink.
  virtual Result<HttpResult> stream(const HttpRequestSpec& spec, const ByteSink& sink,
                                    const ResponseHook& on_response) = 0;

  // A request with a small body held in memory (a JSON document to POST, nothing for a DELETE),
  // answered like get(). `method` is an upper-case token ("POST", "DELETE", "PATCH"); anything
  // else is kInvalidArgument. POST, PUT and PATCH always send their body, even an empty one
  // (Content-Length: 0); other methods send none when `body` is empty. Name the body's type in
  // spec.headers ("Content-Type"): the client adds none of its own.
  virtual Result<HttpResult> send(const HttpRequestSpec& spec, const std::string& method,
                                  const std::string& body) = 0;

  // Sends the regular file at `file_path` as the request body ("PUT" for Glance), streamed in
  // pieces and never read whole, with Content-Length set from its size when opened; the answer
  // comes back like get(). `on_read` (may be empty) sees each byte of the file exactly once, in
  // order, as it goes out, so the caller can hash what was sent; its error aborts the transfer
  // and is returned. A file that cannot be opened is kNotFound (missing) or kInternal, one that
  // is not a regular file kInvalidArgument, one that shrinks while being sent kInternal: none of
  // these is worth retrying. Transport failures are kUnavailable, and a new call starts again
  // from the first byte.
  virtual Result<HttpResult> upload(const HttpRequestSpec& spec, const std::string& method,
                                    const std::string& file_path, const ByteSink& on_read) = 0;
};

}  // namespace kiln::imagecache
