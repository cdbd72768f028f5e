#pragma once
// A scripted HttpClient: each request takes the next reply from a queue and is recorded, so tests
// can say exactly what Glance answers and check exactly what kiln asked.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "imagecache/http_client.h"

namespace kiln::testing {

struct FakeReply {
  // A transport failure (refused, reset, stalled). With `body` non-empty and status 2xx, the
  // first `fail_after` body bytes are delivered before the failure. For upload(), `fail_after`
  // counts the file's bytes read (and shown to on_read) before the failure instead.
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

// What a request carried besides its spec; recorded alongside requests().
struct SentRequest {
  std::string method;     // "GET" for get() and stream()
  std::string body;       // send(): the body; upload(): the bytes read from the file
  std::string file_path;  // upload() only
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
  std::vector<SentRequest> sent() const {
    std::lock_guard lock(mutex_);
    return sent_;
  }
  std::size_t pending() const {
    std::lock_guard lock(mutex_);
    return replies_.size();
  }
  // Bytes are handed to sinks in pieces of this size, to exercise reassembly.
  std::size_t chunk = 7;
  // upload() reads the file in pieces of this size.
  std::size_t upload_chunk = 4096;

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

  Result<imagecache::HttpResult> send(const imagecache::HttpRequestSpec& spec,
                                      const std::string& method, const std::string& body) override {
    FakeReply reply = next(spec, {method, body, ""});
    if (reply.error) return *reply.error;
    return imagecache::HttpResult{reply.status, reply.headers, reply.body};
  }

  // Reads the file the way the real client does (in pieces, each shown to on_read once) and
  // records the bytes; a reply with `error` and `fail_after` breaks after that many file bytes.
  Result<imagecache::HttpResult> upload(const imagecache::HttpRequestSpec& spec,
                                        const std::string& method, const std::string& file_path,
                                        const imagecache::ByteSink& on_read) override {
    std::size_t index = 0;
    FakeReply reply = next(spec, {method, "", file_path}, &index);
    if (reply.error && reply.fail_after == 0) return *reply.error;
    UniqueFd fd(::open(file_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      return Error{errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                   "Cannot open '" + file_path + "' to send it"};
    }
    std::string read_bytes;
    std::vector<char> buf(upload_chunk);
    for (;;) {
      std::size_t want = buf.size();
      if (reply.error) want = std::min(want, reply.fail_after - read_bytes.size());
      if (want == 0) break;
      ssize_t n = ::read(fd.get(), buf.data(), want);
      if (n < 0) return Error::internal("Cannot read '" + file_path + "'");
      if (n == 0) break;
      if (on_read) {
        if (auto r = on_read(buf.data(), static_cast<std::size_t>(n)); !r) {
          return std::move(r).error();
        }
      }
      read_bytes.append(buf.data(), static_cast<std::size_t>(n));
    }
    {
      std::lock_guard lock(mutex_);
      sent_[index].body = read_bytes;
    }
    if (reply.error) return *reply.error;
    return imagecache::HttpResult{reply.status, reply.headers, reply.body};
  }

 private:
  FakeReply next(const imagecache::HttpRequestSpec& spec, SentRequest sent = {"GET", "", ""},
                 std::size_t* index = nullptr) {
    std::lock_guard lock(mutex_);
    if (index != nullptr) *index = requests_.size();
    requests_.push_back(spec);
    sent_.push_back(std::move(sent));
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
  std::vector<SentRequest> sent_;
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
