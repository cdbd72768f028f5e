#pragma once
// A scripted HttpClient: each request takes the next reply from a queue and is recorded, so tests
// can say exactly what Glance answers and check exactly what kiln asked.

#include <algorithm>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "imagecache/http_client.h"

namespace kiln::testing {

struct FakeReply {
  // A transport failure (refused, reset, stalled). With `body` non-empty and status 2xx, the
  // first `fail_after` body bytes are delivered before the failure.
  std::optional<Error> error;
  std::size_t fail_after = 0;
  long status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  static FakeReply ok(std::string body, long status = 200) {
    FakeReply r;
    r.status = status;
    r.body = std::move(body);
    return r;
  }
  static FakeReply refused(const std::string& url = "http://glance") {
    FakeReply r;
    r.error = Error::unavailable("The request to '" + url + "' failed: Connection refused");
    return r;
  }
  // `prefix_bytes` of `body` arrive, then the connection drops.
  static FakeReply brokenAfter(std::string body, std::size_t prefix_bytes) {
    FakeReply r;
    r.body = std::move(body);
    r.fail_after = prefix_bytes;
    r.error = Error::unavailable("The request failed: Connection reset by peer (curl error 56)");
    return r;
  }
};

class FakeHttpClient final : public imagecache::HttpClient {
 public:
  void push(FakeReply reply) {
    std::lock_guard lock(mutex_);
    replies_.push_back(std::move(reply));
  }
  std::vector<imagecache::HttpRequestSpec> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::size_t pending() const {
    std::lock_guard lock(mutex_);
    return replies_.size();
  }
  // Bytes are handed to sinks in pieces of this size, to exercise reassembly.
  std::size_t chunk = 7;

  Result<imagecache::HttpResult> get(const imagecache::HttpRequestSpec& spec) override {
    FakeReply reply = next(spec);
    if (reply.error) return *reply.error;
    imagecache::HttpResult result{reply.status, reply.headers, reply.body};
    if (result.body.size() > spec.max_body_bytes) {
      return Error{ErrorCode::kTooLarge, "The response is larger than allowed"};
    }
    return result;
  }

  Result<imagecache::HttpResult> stream(const imagecache::HttpRequestSpec& spec,
                                        const imagecache::ByteSink& sink,
                                        const imagecache::ResponseHook& on_response) override {
    FakeReply reply = next(spec);
    bool partial = reply.error && reply.fail_after > 0;
    if (reply.error && !partial) return *reply.error;
    imagecache::HttpResult result{reply.status, reply.headers, ""};
    if (on_response) {
      if (auto r = on_response(result); !r) return std::move(r).error();
    }
    if (result.status < 200 || result.status >= 300) {
      result.body = reply.body.substr(0, spec.max_body_bytes);
      return result;
    }
    std::size_t end = partial ? reply.fail_after : reply.body.size();
    for (std::size_t pos = 0; pos < end; pos += chunk) {
      std::size_t len = std::min(chunk, end - pos);
      if (auto r = sink(reply.body.data() + pos, len); !r) return std::move(r).error();
    }
    if (partial) return *reply.error;
    return result;
  }

 private:
  FakeReply next(const imagecache::HttpRequestSpec& spec) {
    std::lock_guard lock(mutex_);
    requests_.push_back(spec);
    if (replies_.empty()) {
      FakeReply r;
      r.error = Error::internal("FakeHttpClient has no reply scripted for '" + spec.url + "'");
      return r;
    }
    FakeReply r = std::move(replies_.front());
    replies_.pop_front();
    return r;
  }

  mutable std::mutex mutex_;
  std::deque<FakeReply> replies_;
  std::vector<imagecache::HttpRequestSpec> requests_;
};

// The value of header `name` in a recorded request, if sent.
inline std::optional<std::string> sentHeader(const imagecache::HttpRequestSpec& spec,
                                             const std::string& name) {
  for (const auto& [n, v] : spec.headers) {
    if (n == name) return v;
  }
  return std::nullopt;
}

}  // namespace kiln::testing
