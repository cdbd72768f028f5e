#pragma once
// What GlanceSource and GlanceUploader share: the request every Glance call starts from (token,
// timeouts, CA file), the retry schedule with failover over the API servers described in
// glance_source.h, the errors Glance's HTTP statuses become, and the helpers that make Glance's
// text safe to quote in a message.

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "common/result.h"
#include "imagecache/glance_source.h"
#include "imagecache/http_client.h"

namespace kiln::imagecache {

namespace glance {

inline constexpr std::size_t kRecordMaxBytes = 16 << 20;
inline constexpr std::size_t kErrorPageMaxBytes = 64 << 10;

bool hasControlCharacter(std::string_view s);
// Untrusted or user-given text made safe to quote in a message or a log line.
std::string printable(std::string_view s);
// Glance's errors are small HTML pages. Only a short, tag-free, single-line, ASCII excerpt goes
// into a message: the page is the server's text, and messages end up in logs and API answers.
std::string snippet(std::string_view body);
std::string quotedList(const std::vector<std::string>& items);

// A non-success answer from Glance: the error to report, and whether another attempt may help.
struct Failure {
  Error error;
  bool retryable = false;
};

// A request to Glance, in the words its errors use. A read (GlanceSource) is "for image 'x'"; a
// change (GlanceUploader) is "when asked to create image 'x'".
struct Call {
  std::string server;
  std::string image_id;
  // A 404 means image `image_id` is not (or no longer) in Glance, rather than a wrong endpoint.
  bool not_found_on_404 = false;
  bool sent_token = false;
  // Glance refuses changes with 400, 409 and 413; to a read they are unexpected answers.
  bool changes_image = false;
  std::string action;       // "Glance at ... does not let this node <action>"
  std::string asked;        // "Glance at ... answered HTTP 500 <asked>"
  std::string wants_token;  // "Glance at ... wants a token <wants_token>"

  // Reading image `image_id`'s record or data.
  static Call read(std::string server, std::string image_id, bool sent_token);
  // `action` is what was asked, as "create image 'x'"; `image_id`, when not empty, is the image
  // a 404 says is gone.
  static Call change(std::string server, std::string action, std::string image_id, bool sent_token);
};

// The error for Glance's answer `status` to `call`; `excerpt` is the server's text, made safe
// (snippet()), or empty.
Failure failureForStatus(long status, std::string_view excerpt, const Call& call);

}  // namespace glance

// The API servers of one Glance, as one client sees them. Safe to use from several threads.
class GlanceEndpoint {
 public:
  // Waits between retries; tests pass one that records instead of sleeping.
  using Sleeper = std::function<void(std::chrono::milliseconds)>;

  // Validates the options (validateGlanceOptions) and drops trailing slashes from the servers.
  // An empty `sleep` sleeps for real.
  static Result<std::unique_ptr<GlanceEndpoint>> create(GlanceOptions options, Sleeper sleep);

  const GlanceOptions& options() const { return options_; }
  const Sleeper& sleeper() const { return sleep_; }

  // One attempt against one server: its result, and whether another attempt may help.
  template <typename T>
  struct Attempt {
    Result<T> result;
    bool retryable = false;
  };
  // Calls `once` until it succeeds or fails for good, moving to the next server on every
  // attempt. At most `max_attempts` attempts when not zero, otherwise num_retries + 1.
  template <typename T>
  Result<T> withRetries(const std::string& what,
                        const std::function<Attempt<T>(const std::string& server)>& once,
                        unsigned max_attempts = 0);

  // A request to `url` with the timeouts, CA file and X-Auth-Token: kiln's own (the token file
  // read now), or `token_instead` when it is not empty (a caller's token).
  Result<HttpRequestSpec> requestFor(const std::string& url,
                                     const std::string& token_instead = "") const;

 private:
  GlanceEndpoint(GlanceOptions options, Sleeper sleep);

  static constexpr unsigned kMaxBackoffDoublings = 4;

  GlanceOptions options_;
  Sleeper sleep_;
  // The index of the server that answered last; the next call starts there.
  std::atomic<std::size_t> preferred_server_{0};
};

template <typename T>
Result<T> GlanceEndpoint::withRetries(
    const std::string& what, const std::function<Attempt<T>(const std::string& server)>& once,
    unsigned max_attempts) {
  const auto& servers = options_.api_servers;
  const std::size_t count = servers.size();
  const std::size_t start = preferred_server_.load() % count;
  const unsigned attempts = max_attempts > 0 ? std::min(max_attempts, options_.num_retries + 1)
                                             : options_.num_retries + 1;
  unsigned waits = 0;
  std::vector<std::string> tried;
  std::string last_error;
  for (unsigned i = 0; i < attempts; ++i) {
    std::size_t index = (start + i) % count;
    // A server not yet tried in this call is asked at once (failover); going round again waits.
    if (i >= count) {
      sleep_(options_.retry_backoff * (1u << std::min(waits, kMaxBackoffDoublings)));
      ++waits;
    }
    Attempt<T> attempt = once(servers[index]);
    if (attempt.result || !attempt.retryable) {
      preferred_server_.store(index);
      return std::move(attempt.result);
    }
    last_error = attempt.result.error().message;
    if (std::find(tried.begin(), tried.end(), servers[index]) == tried.end()) {
      tried.push_back(servers[index]);
    }
    if (i + 1 < attempts) {
      log::warn("{} failed (attempt {} of {}): {}", what, i + 1, attempts, last_error);
    }
  }
  return Error::unavailable(fmt::format("{} failed after {} attempt(s) on Glance {}: {}", what,
                                        attempts, glance::quotedList(tried), last_error));
}

}  // namespace kiln::imagecache
