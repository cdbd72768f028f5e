#include "imagecache/curl_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/fs.h"
#include "common/strings.h"
#include "common/unique_fd.h"

namespace kiln::imagecache {
namespace {

struct CurlEasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;

struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// A response with more header lines than this is hostile or broken; curl bounds each line.
constexpr std::size_t kMaxHeaderLines = 256;
// How much of a file upload() hands curl per read; curl's default (64 KiB) costs throughput.
constexpr long kUploadBufferBytes = 512 << 10;

CURLcode globalInitResult() {
  // curl_global_init is not thread-safe on every libcurl build: a function-local static runs it
  // exactly once, whichever thread gets here first.
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  return rc;
}

// Header lines arrive with their CRLF; values are padded with blanks.
std::string_view trim(std::string_view s) { return strings::trim(s, " \t\r\n"); }

enum class Mode { kCollect, kStream };

// The file upload() sends as the request body.
struct UploadFile {
  const std::string* path = nullptr;
  int fd = -1;
  std::uint64_t size = 0;  // at open; exactly this many bytes go out
  std::uint64_t sent = 0;
  const ByteSink* on_read = nullptr;
};

// What the callbacks share with perform(); lives on perform()'s stack.
struct Transfer {
  Mode mode = Mode::kCollect;
  const HttpRequestSpec* spec = nullptr;
  const ByteSink* sink = nullptr;
  const ResponseHook* on_response = nullptr;
  std::string method = "GET";
  const std::string* body = nullptr;  // send(): the request body
  std::optional<UploadFile> upload;   // upload(): the file
  HttpResult result;
  bool head_done = false;
  // stream(): a non-2xx body reached its bound; the transfer was cut on purpose.
  bool error_body_full = false;
  // Why a callback stopped the transfer; returned instead of curl's CURLE_WRITE_ERROR.
  std::optional<Error> abort;
};

long parseStatus(std::string_view status_line) {
  // "HTTP/1.1 206 Partial Content", "HTTP/2 200"
  auto space = status_line.find(' ');
  if (space == std::string_view::npos) return 0;
  long status = 0;
  for (std::size_t i = space + 1; i < status_line.size() && i < space + 4; ++i) {
    char c = status_line[i];
    if (c < '0' || c > '9') return 0;
    status = status * 10 + (c - '0');
  }
  return status;
}

std::size_t onHeader(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::size_t len = size * count;
  std::string_view line = trim(std::string_view(data, len));
  if (t->head_done) return len;  // trailers after a chunked body: not needed
  if (line.substr(0, 5) == "HTTP/") {
    // A new response begins: an interim 1xx is followed by the final one.
    t->result.status = parseStatus(line);
    t->result.headers.clear();
    return len;
  }
  if (line.empty()) {
    if (t->result.status < 200) return len;  // end of an interim response
    t->head_done = true;
    if (t->on_response != nullptr && *t->on_response) {
      if (auto r = (*t->on_response)(t->result); !r) {
        t->abort = std::move(r).error();
        return 0;
      }
    }
    return len;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return len;  // obsolete line folding: ignore
  if (t->result.headers.size() >= kMaxHeaderLines) {
    t->abort =
        Error::unavailable(fmt::format("The response from '{}' has more than {} header lines",
                                       redactUrl(t->spec->url), kMaxHeaderLines));
    return 0;
  }
  std::string name = strings::asciiLower(trim(line.substr(0, colon)));
  t->result.headers.emplace_back(std::move(name), std::string(trim(line.substr(colon + 1))));
  return len;
}

std::size_t onBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::size_t len = size * count;
  bool success_status = t->result.status >= 200 && t->result.status < 300;
  if (t->mode == Mode::kStream && success_status) {
    if (auto r = (*t->sink)(data, len); !r) {
      t->abort = std::move(r).error();
      return 0;
    }
    return len;
  }
  std::string& body = t->result.body;
  std::size_t room = t->spec->max_body_bytes - std::min(body.size(), t->spec->max_body_bytes);
  if (len <= room) {
    body.append(data, len);
    return len;
  }
  if (t->mode == Mode::kCollect) {
    t->abort = Error{ErrorCode::kTooLarge,
                     fmt::format("The response from '{}' is larger than the {} bytes allowed",
                                 redactUrl(t->spec->url), t->spec->max_body_bytes)};
    return 0;
  }
  // An error page only needs its start; stop reading instead of draining an endless body.
  body.append(data, room);
  t->error_body_full = true;
  return 0;
}

// Feeds upload()'s file to curl. Exactly `size` bytes go out: a file that grew meanwhile is cut
// there (Content-Length is already on the wire), one that shrank aborts the transfer, as the
// server would otherwise wait for the missing bytes until the stall timeout.
std::size_t onRead(char* buffer, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  UploadFile& f = *t->upload;
  std::uint64_t left = f.size - f.sent;
  if (left == 0) return 0;
  std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(size * count, left));
  ssize_t n = 0;
  do {
    n = ::read(f.fd, buffer, want);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    t->abort = Error::internal(fmt::format("Cannot read '{}' while sending it to '{}': {}", *f.path,
                                           redactUrl(t->spec->url), fs::errnoText(errno)));
    return CURL_READFUNC_ABORT;
  }
  if (n == 0) {
    t->abort = Error::internal(
        fmt::format("File '{}' ended after {} of its {} bytes while being sent to '{}'", *f.path,
                    f.sent, f.size, redactUrl(t->spec->url)));
    return CURL_READFUNC_ABORT;
  }
  auto len = static_cast<std::size_t>(n);
  if (f.on_read != nullptr && *f.on_read) {
    if (auto r = (*f.on_read)(buffer, len); !r) {
      t->abort = std::move(r).error();
      return CURL_READFUNC_ABORT;
    }
  }
  f.sent += len;
  return len;
}

bool isMethodToken(std::string_view method) {
  return !method.empty() && method.size() <= 16 &&
         std::all_of(method.begin(), method.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

bool namesHeader(const HttpRequestSpec& spec, std::string_view lowercase_name) {
  return std::any_of(spec.headers.begin(), spec.headers.end(), [&](const auto& h) {
    return strings::equalsIgnoringCase(h.first, lowercase_name);
  });
}

Error transportError(CURLcode rc, const char* errbuf, const std::string& url) {
  std::string detail = errbuf[0] != '\0' ? std::string(trim(errbuf)) : curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return Error::invalid(fmt::format("URL '{}' cannot be fetched: {}", redactUrl(url), detail));
    case CURLE_OUT_OF_MEMORY:
      return Error::exhausted(fmt::format("Out of memory while fetching '{}'", redactUrl(url)));
    case CURLE_OPERATION_TIMEDOUT:
      return Error::unavailable(
          fmt::format("The request to '{}' timed out or stalled: {}", redactUrl(url), detail));
    default:
      return Error::unavailable(fmt::format("The request to '{}' failed: {} (curl error {})",
                                            redactUrl(url), detail, static_cast<int>(rc)));
  }
}

// Collects the first failing curl_easy_setopt, so the options read as one list.
class Options {
 public:
  explicit Options(CURL* easy) : easy_(easy) {}
  template <typename T>
  void set(CURLoption option, T value) {
    if (rc_ == CURLE_OK) rc_ = curl_easy_setopt(easy_, option, value);
  }
  CURLcode result() const { return rc_; }

 private:
  CURL* easy_;
  CURLcode rc_ = CURLE_OK;
};

Result<HttpResult> perform(Transfer& t) {
  const HttpRequestSpec& spec = *t.spec;
  if (globalInitResult() != CURLE_OK) {
    return Error::internal(fmt::format("libcurl could not be initialised: {}",
                                       curl_easy_strerror(globalInitResult())));
  }
  // libcurl refuses other schemes too (CURLOPT_PROTOCOLS_STR); this gives the clearer message.
  if (!strings::startsWithIgnoringCase(spec.url, "http://") &&
      !strings::startsWithIgnoringCase(spec.url, "https://")) {
    return Error::invalid(
        fmt::format("URL '{}' is not an http:// or https:// URL", redactUrl(spec.url)));
  }
  if (!isMethodToken(t.method)) {
    return Error::invalid(fmt::format("HTTP method '{}' for '{}' is not an upper-case token",
                                      t.method.substr(0, 16), redactUrl(spec.url)));
  }
  CurlSlist header_list;
  auto appendHeaderLine = [&](const std::string& line) {
    curl_slist* head = curl_slist_append(header_list.get(), line.c_str());
    if (head != nullptr && !header_list) header_list.reset(head);
    return head != nullptr;
  };
  for (const auto& [name, value] : spec.headers) {
    // A line break would smuggle a second header (or request) in. The value is not quoted: it
    // may be a token.
    if (name.find_first_of("\r\n:") != std::string::npos || name.empty() ||
        value.find_first_of("\r\n") != std::string::npos) {
      return Error::invalid(fmt::format(
          "HTTP header '{}' for '{}' has an empty name or a line break or colon where none may be",
          name.find_first_of("\r\n") == std::string::npos ? name : "<unprintable>",
          redactUrl(spec.url)));
    }
    std::string line = value.empty() ? name + ";" : name + ": " + value;  // "X;" sends "X:"
    if (!appendHeaderLine(line)) {
      return Error::exhausted("Out of memory building HTTP request headers");
    }
  }
  if (t.body != nullptr || t.upload) {
    // "Name:" removes a header curl would add on its own: a form content type for a POST body,
    // and, for a small body, the extra round trip of Expect: 100-continue. An upload keeps the
    // Expect: the server may refuse it (401, 409, 413) before any byte of a big file is sent.
    bool ok = namesHeader(spec, "content-type") || appendHeaderLine("Content-Type:");
    if (t.body != nullptr && !namesHeader(spec, "expect")) ok = ok && appendHeaderLine("Expect:");
    if (!ok) return Error::exhausted("Out of memory building HTTP request headers");
  }

  CurlEasy easy(curl_easy_init());
  if (!easy) return Error::exhausted("libcurl could not create a transfer handle");
  char errbuf[CURL_ERROR_SIZE] = {};
  Options o(easy.get());
  o.set(CURLOPT_ERRORBUFFER, errbuf);
  o.set(CURLOPT_URL, spec.url.c_str());
  if (t.upload) {
    o.set(CURLOPT_UPLOAD, 1L);  // a PUT unless CUSTOMREQUEST names another method
    o.set(CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(t.upload->size));
    o.set(CURLOPT_READFUNCTION, &onRead);
    o.set(CURLOPT_READDATA, &t);
    o.set(CURLOPT_UPLOAD_BUFFERSIZE, kUploadBufferBytes);
    if (t.method != "PUT") o.set(CURLOPT_CUSTOMREQUEST, t.method.c_str());
  } else if (t.method == "HEAD") {
    o.set(CURLOPT_NOBODY, 1L);
  } else if (t.body != nullptr &&
             (!t.body->empty() || t.method == "POST" || t.method == "PUT" || t.method == "PATCH")) {
    // The body is sent from the caller's string, which outlives the transfer.
    o.set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t.body->size()));
    o.set(CURLOPT_POSTFIELDS, t.body->data());
    if (t.method != "POST") o.set(CURLOPT_CUSTOMREQUEST, t.method.c_str());
  } else {
    o.set(CURLOPT_HTTPGET, 1L);
    if (t.method != "GET") o.set(CURLOPT_CUSTOMREQUEST, t.method.c_str());
  }
  // Never another scheme (file://, gopher://, ...), neither directly nor through a redirect;
  // and no redirects at all: a 3xx to another host would carry the X-Auth-Token along.
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85.0
  o.set(CURLOPT_PROTOCOLS_STR, "http,https");
  o.set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  o.set(CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  o.set(CURLOPT_REDIR_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  o.set(CURLOPT_FOLLOWLOCATION, 0L);
  // kilnd is multi-threaded: libcurl must not use SIGALRM for DNS timeouts.
  o.set(CURLOPT_NOSIGNAL, 1L);
  o.set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(spec.connect_timeout.count()));
  o.set(CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(spec.low_speed_bytes_per_second));
  o.set(CURLOPT_LOW_SPEED_TIME, static_cast<long>(spec.low_speed_time.count()));
  o.set(CURLOPT_TIMEOUT_MS, static_cast<long>(spec.total_timeout.count()));
  // A peer that vanished without a FIN is noticed by the stall check; keepalive helps it along.
  o.set(CURLOPT_TCP_KEEPALIVE, 1L);
  o.set(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // a proxy's CONNECT reply is not the response
  o.set(CURLOPT_USERAGENT, "kiln/0.1");
  if (header_list) o.set(CURLOPT_HTTPHEADER, header_list.get());
  if (!spec.ca_file.empty()) o.set(CURLOPT_CAINFO, spec.ca_file.c_str());
  o.set(CURLOPT_HEADERFUNCTION, &onHeader);
  o.set(CURLOPT_HEADERDATA, &t);
  o.set(CURLOPT_WRITEFUNCTION, &onBody);
  o.set(CURLOPT_WRITEDATA, &t);
  if (o.result() != CURLE_OK) {
    return Error::internal(fmt::format("libcurl refused an option for '{}': {}",
                                       redactUrl(spec.url), curl_easy_strerror(o.result())));
  }

  CURLcode rc = curl_easy_perform(easy.get());
  if (t.abort) return std::move(*t.abort);
  if (rc == CURLE_WRITE_ERROR && t.error_body_full) return std::move(t.result);
  if (rc != CURLE_OK) return transportError(rc, errbuf, spec.url);
  return std::move(t.result);
}

}  // namespace

std::string redactUrl(std::string_view url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  std::size_t authority_start = scheme_end + 3;
  std::size_t authority_end = url.find_first_of("/?#", authority_start);
  if (authority_end == std::string_view::npos) authority_end = url.size();
  std::string_view authority = url.substr(authority_start, authority_end - authority_start);
  auto at = authority.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, authority_start)) + std::string(authority.substr(at + 1)) +
         std::string(url.substr(authority_end));
}

CurlClient::CurlClient() { (void)globalInitResult(); }

Result<HttpResult> CurlClient::get(const HttpRequestSpec& spec) {
  Transfer t;
  t.mode = Mode::kCollect;
  t.spec = &spec;
  return perform(t);
}

Result<HttpResult> CurlClient::stream(const HttpRequestSpec& spec, const ByteSink& sink,
                                      const ResponseHook& on_response) {
  Transfer t;
  t.mode = Mode::kStream;
  t.spec = &spec;
  t.sink = &sink;
  t.on_response = &on_response;
  return perform(t);
}

Result<HttpResult> CurlClient::send(const HttpRequestSpec& spec, const std::string& method,
                                    const std::string& body) {
  Transfer t;
  t.mode = Mode::kCollect;
  t.spec = &spec;
  t.method = method;
  t.body = &body;
  return perform(t);
}

Result<HttpResult> CurlClient::upload(const HttpRequestSpec& spec, const std::string& method,
                                      const std::string& file_path, const ByteSink& on_read) {
  // O_NONBLOCK: a FIFO at the path must not hang the open; it is refused below.
  UniqueFd fd(::open(file_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int err = errno;
    return Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 fmt::format("Cannot open '{}' to send it to '{}': {}", file_path,
                             redactUrl(spec.url), fs::errnoText(err))};
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::internal(fmt::format("Cannot stat '{}': {}", file_path, fs::errnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::invalid(fmt::format("'{}' is not a regular file and cannot be sent to '{}'",
                                      file_path, redactUrl(spec.url)));
  }
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  Transfer t;
  t.mode = Mode::kCollect;
  t.spec = &spec;
  t.method = method;
  t.upload = UploadFile{&file_path, fd.get(), static_cast<std::uint64_t>(st.st_size), 0, &on_read};
  return perform(t);
}

}  // namespace kiln::imagecache
