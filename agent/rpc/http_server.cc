#include "agent/rpc/http_server.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <exception>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "agent/rpc/json_response.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/unique_fd.h"

namespace kiln::rpc {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;
using SteadyClock = std::chrono::steady_clock;

using TcpStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using UnixStream =
    beast::basic_stream<unix_socket, asio::any_io_executor, beast::unlimited_rate_policy>;

// After a final response the connection half-closes and reads what the client still sends for at
// most this long: closing with unread bytes makes the kernel send a reset, which can destroy the
// response before the client reads it.
constexpr std::chrono::milliseconds kMaxLinger{1000};
// Connections refused with a 503 still hold a socket while the answer is written; past this many
// at once, further ones are closed without an answer so a flood cannot exhaust descriptors.
constexpr std::size_t kMaxRejectionsInFlight = 64;
constexpr std::chrono::milliseconds kAcceptRetryDelay{100};
constexpr std::chrono::seconds kLimitWarningInterval{10};
constexpr std::size_t kFirstReadBytes = 4096;
// Room in a connection's input buffer beyond the header limit: Beast reads up to 64 KiB at a time.
// The buffer never needs more, so a client cannot make it grow however it sends.
constexpr std::size_t kReadChunkBytes = 64 * 1024;
constexpr std::size_t kMaxPemFileBytes = 1024 * 1024;
// TLS 1.2 suites with forward secrecy and AEAD only (Mozilla's "intermediate" list); TLS 1.3 uses
// OpenSSL's defaults, which are all of that kind.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string_view toStd(beast::string_view s) { return {s.data(), s.size()}; }

std::string formatEndpoint(const std::string& host, std::uint16_t port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

// Request paths come from the network: escape anything unprintable before it reaches a log line.
std::string printableForLog(std::string_view s) {
  constexpr std::size_t kMaxLogged = 256;
  std::string out;
  for (char c : s.substr(0, kMaxLogged)) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7f || c == '\\') {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  if (s.size() > kMaxLogged) out += "...";
  return out;
}

std::optional<std::string> percentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int high = strings::hexDigitValue(s[i + 1]);
    int low = strings::hexDigitValue(s[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

// A header value from a handler goes onto the wire verbatim; a CR or LF in it would let the value
// start a new header or end the head early.
bool isSafeHeaderValue(std::string_view value) {
  return std::none_of(value.begin(), value.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return (byte < 0x20 && c != '\t') || byte == 0x7f;
  });
}

Result<HttpRequest> toHttpRequest(http::request<http::string_body>& message) {
  std::string_view target = toStd(message.target());
  std::size_t question = target.find('?');
  std::string_view raw_path = target.substr(0, question);
  if (raw_path.empty() || raw_path.front() != '/') {
    return Error::invalid("The request target must be a path starting with '/'");
  }
  std::optional<std::string> path = percentDecode(raw_path);
  if (!path) return Error::invalid("The request path has an invalid percent escape");
  if (path->find('\0') != std::string::npos) {
    return Error::invalid("The request path contains a NUL byte");
  }
  // Two Authorization headers could be read differently by a proxy and by us; refuse the doubt.
  if (message.count(http::field::authorization) > 1) {
    return Error::invalid("The request has more than one Authorization header");
  }
  HttpRequest request;
  request.method = std::string(toStd(message.method_string()));
  request.path = std::move(*path);
  if (question != std::string_view::npos) request.query = std::string(target.substr(question + 1));
  request.body = std::move(message.body());
  request.authorization = std::string(toStd(message[http::field::authorization]));
  request.x_auth_token = std::string(toStd(message["X-Auth-Token"]));
  request.content_type = std::string(toStd(message[http::field::content_type]));
  return request;
}

// Counts open connections in total and per peer address. Connections hold a Slot, whose
// destructor gives the place back however the connection ends.
class ConnectionTable : public std::enable_shared_from_this<ConnectionTable> {
 public:
  class Slot {
   public:
    Slot(std::shared_ptr<ConnectionTable> table, std::string address, bool rejection)
        : table_(std::move(table)), address_(std::move(address)), rejection_(rejection) {}
    Slot(Slot&&) noexcept = default;
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (table_) table_->release(address_, rejection_);
    }

   private:
    std::shared_ptr<ConnectionTable> table_;
    std::string address_;
    bool rejection_;
  };

  ConnectionTable(std::size_t max_total, std::size_t max_per_peer)
      : max_total_(max_total), max_per_peer_(max_per_peer) {}

  struct Admission {
    std::optional<Slot> slot;  // empty when the connection would pass a limit
    bool over_total = false;   // which limit: the total, or else the per-peer one
  };

  Admission admit(const std::string& address) {
    std::lock_guard lock(mutex_);
    std::size_t& from_peer = per_peer_[address];
    if (total_ >= max_total_ || from_peer >= max_per_peer_) {
      if (from_peer == 0) per_peer_.erase(address);
      return {std::nullopt, total_ >= max_total_};
    }
    ++total_;
    ++from_peer;
    return {Slot(shared_from_this(), address, false)};
  }

  std::optional<Slot> admitRejection() {
    std::lock_guard lock(mutex_);
    if (rejections_ >= kMaxRejectionsInFlight) return std::nullopt;
    ++rejections_;
    return Slot(shared_from_this(), {}, true);
  }

 private:
  void release(const std::string& address, bool rejection) {
    std::lock_guard lock(mutex_);
    if (rejection) {
      --rejections_;
      return;
    }
    --total_;
    auto it = per_peer_.find(address);
    if (it != per_peer_.end() && --it->second == 0) per_peer_.erase(it);
  }

  const std::size_t max_total_;
  const std::size_t max_per_peer_;
  std::mutex mutex_;
  std::size_t total_ = 0;
  std::size_t rejections_ = 0;
  std::unordered_map<std::string, std::size_t> per_peer_;
};

// Warnings about what clients do (limits hit, failed handshakes) are rate-limited: a flood must
// not turn into a flood of log lines.
class WarningLimiter {
 public:
  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    {
      std::lock_guard lock(mutex_);
      auto now = SteadyClock::now();
      if (now - last_warning_ < kLimitWarningInterval) return;
      last_warning_ = now;
    }
    log::warn(format, std::forward<Args>(args)...);
  }

 private:
  std::mutex mutex_;
  SteadyClock::time_point last_warning_{};
};

struct ServerContext {
  ServerLimits limits;
  RequestHandler handler;
  std::shared_ptr<ConnectionTable> connections;
  std::shared_ptr<ssl::context> tls;  // null: the TCP listener speaks plain HTTP
  mutable WarningLimiter warnings;
};

// "certificate verify failed", "peer did not return a certificate", ...: OpenSSL's reason, which
// is what an operator debugging a client needs.
std::string describeTlsError(const beast::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) {
    const char* reason = ::ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (reason != nullptr) return reason;
  }
  return ec.message();
}

// One accepted connection. It owns itself through the shared_ptrs its pending operations hold,
// and every operation runs on the connection's strand. Any error ends the chain of operations,
// which frees the connection and closes its socket.
template <typename Stream>
class Connection : public std::enable_shared_from_this<Connection<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  Connection(Stream stream, std::shared_ptr<const ServerContext> context,
             ConnectionTable::Slot slot, std::string peer)
      : stream_(std::move(stream)),
        context_(std::move(context)),
        slot_(std::move(slot)),
        peer_(std::move(peer)),
        buffer_(context_->limits.max_header_bytes + kReadChunkBytes) {}

  // Serves requests until the client closes, a timeout, or an error that ends the connection.
  void serve() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Connection::begin, this->shared_from_this()));
  }

  // Answers with `response` before reading anything, then closes.
  void reject(HttpResponse response) {
    asio::dispatch(stream_.get_executor(),
                   [self = this->shared_from_this(), response = std::move(response)]() mutable {
                     self->request_start_ = SteadyClock::now();
                     self->send(std::move(response), /*keep_alive=*/false, /*head=*/false, 11,
                                std::min(self->limits().read_timeout, kMaxLinger));
                   });
  }

 private:
  const ServerLimits& limits() const { return context_->limits; }
  auto& lowest() { return beast::get_lowest_layer(stream_); }

  void begin() {
    // One deadline from the accept: the TLS handshake and the first request share it, so a client
    // that connects and never finishes the handshake is gone after read_timeout.
    request_start_ = SteadyClock::now();
    lowest().expires_after(limits().read_timeout);
    if constexpr (kTls) {
      beast::async_detect_ssl(
          lowest(), buffer_,
          beast::bind_front_handler(&Connection::onDetect, this->shared_from_this()));
    } else {
      readHeader();
    }
  }

  void onDetect(beast::error_code ec, bool tls) {
    if (ec) {
      if (ec == beast::error::timeout) {
        log::debug("HTTPS connection from {} timed out before the TLS handshake", peer_);
      }
      return;
    }
    if (!tls) return rejectPlainHttp();
    stream_.async_handshake(
        ssl::stream_base::server, buffer_.data(),
        beast::bind_front_handler(&Connection::onHandshake, this->shared_from_this()));
  }

  void onHandshake(beast::error_code ec, std::size_t bytes_used) {
    if (ec) {
      context_->warnings.warn("TLS handshake with {} failed: {}", peer_, describeTlsError(ec));
      return;
    }
    buffer_.consume(bytes_used);
    parseHeader();
  }

  // A plain HTTP client on the TLS port gets a plain answer saying so (as Go's server does),
  // rather than TLS bytes it cannot read.
  void rejectPlainHttp() {
    prepareResponse(errorResponse(400, "This port serves HTTPS; the request was plain HTTP"),
                    /*keep_alive=*/false, /*head=*/false, 11);
    log_method_ = "-";
    http::async_write(lowest(), response_,
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (!ec) self->halfCloseAndDrain();
                      });
  }

  void readHeader() {
    request_start_ = SteadyClock::now();
    // One deadline for the whole request: a client trickling bytes cannot extend it.
    lowest().expires_after(limits().read_timeout);
    parseHeader();
  }

  void parseHeader() {
    parser_.emplace();
    constexpr std::size_t kMaxHeaderLimit = std::numeric_limits<std::uint32_t>::max();
    parser_->header_limit(
        static_cast<std::uint32_t>(std::min(limits().max_header_bytes, kMaxHeaderLimit)));
    parser_->body_limit(static_cast<std::uint64_t>(limits().max_body_bytes));
    log_method_.clear();
    log_path_.clear();
    http::async_read_header(
        stream_, buffer_, *parser_,
        beast::bind_front_handler(&Connection::onHeader, this->shared_from_this()));
  }

  void onHeader(beast::error_code ec, std::size_t) {
    if (ec) return failRead(ec);
    const auto& message = parser_->get();
    log_method_ = std::string(toStd(message.method_string()));
    log_path_ = std::string(toStd(message.target()));
    // Clients such as curl wait for this before sending a large body.
    if (!parser_->is_done() && message.version() >= 11 &&
        strings::equalsIgnoringCase(toStd(message[http::field::expect]), "100-continue")) {
      asio::async_write(
          stream_, asio::buffer(kContinue.data(), kContinue.size()),
          beast::bind_front_handler(&Connection::onContinueSent, this->shared_from_this()));
      return;
    }
    readBody();
  }

  void onContinueSent(beast::error_code ec, std::size_t) {
    if (ec) return;
    readBody();
  }

  void readBody() {
    if (parser_->is_done()) return handleRequest();
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Connection::onBody, this->shared_from_this()));
  }

  void onBody(beast::error_code ec, std::size_t) {
    if (ec) return failRead(ec);
    handleRequest();
  }

  void failRead(beast::error_code ec) {
    const beast::error_category& http_errors =
        http::make_error_code(http::error::bad_method).category();
    std::optional<HttpResponse> response;
    if (ec == http::error::header_limit) {
      response = errorResponse(
          431, fmt::format("The request headers exceed {} bytes", limits().max_header_bytes));
    } else if (ec == http::error::body_limit) {
      response = errorResponse(
          413, fmt::format("The request body exceeds {} bytes", limits().max_body_bytes));
    } else if (ec.category() == http_errors && ec != http::error::end_of_stream &&
               ec != http::error::partial_message) {
      response =
          errorResponse(400, fmt::format("The request is not valid HTTP/1.1: {}", ec.message()));
    }
    if (!response) {
      // The client went away, timed out (the stream has closed the socket) or the server stops.
      if (ec == beast::error::timeout) {
        log::debug("HTTP connection from {} timed out before a whole request arrived", peer_);
      }
      return;
    }
    // The framing is unknown after a parse error, so the connection cannot be reused.
    send(std::move(*response), /*keep_alive=*/false, /*head=*/false, 11, limits().read_timeout);
  }

  void handleRequest() {
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    bool head = message.method() == http::verb::head;
    Result<HttpRequest> request = toHttpRequest(message);
    HttpResponse response;
    if (request) {
      request->peer = peer_;
      log_path_ = request->path;
      response = callHandler(*request);
    } else {
      response = errorResponse(request.error());
    }
    send(std::move(response), message.keep_alive(), head, message.version(), limits().read_timeout);
  }

  HttpResponse callHandler(const HttpRequest& request) {
    try {
      return context_->handler(request);
    } catch (const std::exception& e) {
      log::error("The handler for {} {} from {} threw: {}", printableForLog(request.method),
                 printableForLog(request.path), peer_, e.what());
    } catch (...) {
      log::error("The handler for {} {} from {} threw a non-standard exception",
                 printableForLog(request.method), printableForLog(request.path), peer_);
    }
    return errorResponse(500, "The server failed while handling the request");
  }

  void prepareResponse(HttpResponse response, bool keep_alive, bool head, unsigned version) {
    if (response.status < 200 || response.status > 599 ||
        !isSafeHeaderValue(response.content_type)) {
      log::error("The handler for {} {} returned an invalid response (status {})",
                 printableForLog(log_method_), printableForLog(log_path_), response.status);
      response = errorResponse(500, "The server failed while handling the request");
    }
    response_ = {};
    response_.version(version);
    response_.result(response.status);
    response_.set(http::field::server, "kiln");
    if (!response.content_type.empty()) {
      response_.set(http::field::content_type, response.content_type);
    }
    bool no_content = response.status == 204 || response.status == 304;
    if (!no_content) response_.body() = std::move(response.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    if (response.status == 204) response_.erase(http::field::content_length);
    // A HEAD answer announces the length of the body it would have sent, but sends none.
    if (head) response_.body().clear();
  }

  void send(HttpResponse response, bool keep_alive, bool head, unsigned version,
            std::chrono::milliseconds timeout) {
    prepareResponse(std::move(response), keep_alive, head, version);
    lowest().expires_after(timeout);
    http::async_write(stream_, response_,
                      beast::bind_front_handler(&Connection::onWrite, this->shared_from_this()));
  }

  void onWrite(beast::error_code ec, std::size_t) {
    if (log::enabled(log::Level::kDebug)) {
      auto elapsed = std::chrono::duration<double, std::milli>(SteadyClock::now() - request_start_);
      log::debug("HTTP {} {} {} -> {} in {:.1f} ms{}", peer_,
                 log_method_.empty() ? "-" : printableForLog(log_method_),
                 log_path_.empty() ? "-" : printableForLog(log_path_), response_.result_int(),
                 elapsed.count(), ec ? " (write failed)" : "");
    }
    if (ec) return;
    if (!response_.keep_alive()) return closeGracefully();
    waitForNextRequest();
  }

  // Waits (for idle_timeout) for the first byte of the next request; the request itself then
  // gets read_timeout from readHeader().
  void waitForNextRequest() {
    if (buffer_.size() > 0) return readHeader();  // a pipelined request is already here
    lowest().expires_after(limits().idle_timeout);
    stream_.async_read_some(
        buffer_.prepare(kFirstReadBytes),
        beast::bind_front_handler(&Connection::onFirstBytes, this->shared_from_this()));
  }

  void onFirstBytes(beast::error_code ec, std::size_t bytes) {
    if (ec) return;  // idle timeout, or the client closed the connection
    buffer_.commit(bytes);
    readHeader();
  }

  void closeGracefully() {
    if constexpr (kTls) {
      // close_notify tells the client the response is complete; waiting for its answer is bounded
      // like the plain linger below.
      lowest().expires_after(std::min(limits().read_timeout, kMaxLinger));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      halfCloseAndDrain();
    }
  }

  void halfCloseAndDrain() {
    beast::error_code ec;
    lowest().socket().shutdown(asio::socket_base::shutdown_send, ec);
    if (ec) return;
    lowest().expires_after(std::min(limits().read_timeout, kMaxLinger));
    drain();
  }

  void drain() {
    lowest().async_read_some(asio::buffer(drain_buffer_),
                             [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                               if (!ec) self->drain();
                             });
  }

  Stream stream_;
  std::shared_ptr<const ServerContext> context_;
  ConnectionTable::Slot slot_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  std::array<char, 4096> drain_buffer_{};
  // For the request's log line.
  std::string log_method_;
  std::string log_path_;
  SteadyClock::time_point request_start_;
};

void setCloseOnExec(int fd) {
  // Asio opens sockets without FD_CLOEXEC; a child process (qemu-img, ...) must not inherit the
  // listener or a client connection.
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

bool isLoopback(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return address.is_loopback();
}

struct BioFree {
  void operator()(BIO* bio) const { ::BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { ::X509_free(cert); }
};
using UniqueBio = std::unique_ptr<BIO, BioFree>;
using UniqueX509 = std::unique_ptr<X509, X509Free>;

// The reason of OpenSSL's most recent error on this thread, and the queue emptied.
std::string lastOpenSslError() {
  unsigned long code = ::ERR_peek_last_error();
  std::string reason = code != 0 && ::ERR_reason_error_string(code) != nullptr
                           ? ::ERR_reason_error_string(code)
                           : "unknown OpenSSL error";
  ::ERR_clear_error();
  return reason;
}

// Reads a PEM file given as `option` through one descriptor, so the file that is checked is the
// file that is read. A secret (the private key) must not be accessible by group or others.
Result<std::string> readPemFile(const std::string& path, std::string_view option, bool secret) {
  // O_NONBLOCK: opening a FIFO planted at the path must not hang the daemon.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int err = errno;
    std::string message = fmt::format("Cannot open {} '{}': {}", option, path, fs::errnoText(err));
    return err == ENOENT ? Error::notFound(std::move(message)) : Error::invalid(std::move(message));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::internal(
        fmt::format("Cannot stat {} '{}': {}", option, path, fs::errnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::invalid(fmt::format("{} '{}' is not a regular file", option, path));
  }
  if (secret && (st.st_mode & 077) != 0) {
    return Error::invalid(fmt::format(
        "{} '{}' has mode {:04o}; a private key must not be accessible by group or others "
        "(chmod 600)",
        option, path, st.st_mode & 07777));
  }
  return fs::readAll(fd.get(), path, kMaxPemFileBytes, option);
}

// Adds every certificate of the CA file to the trust store and to the list of acceptable issuers
// the server sends (so a client with several certificates picks the right one).
Result<void> loadClientCas(SSL_CTX* ctx, const std::string& pem, const std::string& path) {
  UniqueBio bio(::BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Error::internal("Cannot allocate an OpenSSL buffer");
  std::size_t count = 0;
  while (UniqueX509 cert{::PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (::X509_STORE_add_cert(::SSL_CTX_get_cert_store(ctx), cert.get()) != 1 ||
        ::SSL_CTX_add_client_CA(ctx, cert.get()) != 1) {
      return Error::invalid(fmt::format("Cannot use certificate {} of [api] ca_file '{}': {}",
                                        count + 1, path, lastOpenSslError()));
    }
    ++count;
  }
  ::ERR_clear_error();  // the read that ended the loop
  if (count == 0) {
    return Error::invalid(fmt::format("[api] ca_file '{}' holds no PEM certificate", path));
  }
  return success();
}

Result<std::shared_ptr<ssl::context>> makeTlsContext(const TlsSettings& settings) {
  if (settings.key_file.empty()) {
    return Error::invalid("[api] cert_file is set but [api] key_file is not");
  }
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();
  ::ERR_clear_error();
  ::SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  ::SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
  if (::SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
    return Error::internal(
        fmt::format("OpenSSL refused kiln's cipher list: {}", lastOpenSslError()));
  }
  // An encrypted key would make OpenSSL prompt on the terminal; a daemon fails instead.
  context->set_password_callback(
      [](std::size_t, ssl::context::password_purpose) { return std::string(); });

  Result<std::string> cert = readPemFile(settings.cert_file, "[api] cert_file", false);
  if (!cert) return cert.error();
  beast::error_code ec;
  context->use_certificate_chain(asio::buffer(*cert), ec);
  if (ec) {
    return Error::invalid(fmt::format("[api] cert_file '{}' holds no usable PEM certificate: {}",
                                      settings.cert_file, describeTlsError(ec)));
  }
  Result<std::string> key = readPemFile(settings.key_file, "[api] key_file", true);
  if (!key) return key.error();
  context->use_private_key(asio::buffer(*key), ssl::context::pem, ec);
  OPENSSL_cleanse(key->data(), key->size());
  // OpenSSL compares the key with the certificate as it loads it.
  bool mismatch =
      ec && ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH;
  if (mismatch || (!ec && ::SSL_CTX_check_private_key(ctx) != 1)) {
    ::ERR_clear_error();
    return Error::invalid(
        fmt::format("The private key in [api] key_file '{}' does not match the certificate in "
                    "[api] cert_file '{}'",
                    settings.key_file, settings.cert_file));
  }
  if (ec) {
    return Error::invalid(
        fmt::format("[api] key_file '{}' holds no usable unencrypted PEM private key: {}",
                    settings.key_file, describeTlsError(ec)));
  }
  if (X509* own = ::SSL_CTX_get0_certificate(ctx);
      own != nullptr && ::X509_cmp_current_time(X509_get0_notAfter(own)) < 0) {
    log::warn("The certificate in [api] cert_file '{}' has expired; clients will refuse it",
              settings.cert_file);
  }
  if (!settings.ca_file.empty()) {
    Result<std::string> cas = readPemFile(settings.ca_file, "[api] ca_file", false);
    if (!cas) return cas.error();
    if (auto loaded = loadClientCas(ctx, *cas, settings.ca_file); !loaded) return loaded.error();
    ::SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // Without an id context OpenSSL refuses to resume sessions of verified clients.
    static constexpr unsigned char kSessionContext[] = "kilnd";
    ::SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  }
  return context;
}

Result<gid_t> lookupGroup(const std::string& group) {
  gid_t numeric = 0;
  auto [end, ec] = std::from_chars(group.data(), group.data() + group.size(), numeric);
  if (ec == std::errc() && end == group.data() + group.size()) return numeric;
  std::vector<char> buffer(16384);
  struct group entry {};
  struct group* found = nullptr;
  int err = ::getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (err != 0 || found == nullptr) {
    return Error::invalid(fmt::format("[api] unix_socket_group '{}' is not a known group{}", group,
                                      err != 0 ? ": " + fs::errnoText(err) : std::string()));
  }
  return found->gr_gid;
}

// True when a server accepts connections on the socket file at `path`.
bool socketIsLive(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), address.sun_path);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
}

}  // namespace

struct HttpServer::Impl {
  explicit Impl(std::shared_ptr<const ServerContext> server_context)
      : context(std::move(server_context)) {}

  void acceptTcp() {
    acceptor.async_accept(asio::make_strand(ioc),
                          beast::bind_front_handler(&Impl::onAcceptTcp, this));
  }

  void acceptUnix() {
    unix_acceptor.async_accept(asio::make_strand(ioc),
                               beast::bind_front_handler(&Impl::onAcceptUnix, this));
  }

  // Typically out of descriptors: back off instead of spinning on the same failure.
  template <typename Retry>
  void retryLater(asio::steady_timer& timer, const std::string& name, beast::error_code ec,
                  Retry retry) {
    context->warnings.warn("Cannot accept an HTTP connection on {}: {}", name, ec.message());
    timer.expires_after(kAcceptRetryDelay);
    timer.async_wait([retry](beast::error_code wait_ec) {
      if (!wait_ec) retry();
    });
  }

  void onAcceptTcp(beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) return retryLater(retry_timer, listen_name, ec, [this] { acceptTcp(); });
    setCloseOnExec(socket.native_handle());
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (!ec) {
      std::string address = remote.address().to_string();
      std::string peer = formatEndpoint(address, remote.port());
      if (context->tls) {
        admit<TlsStream>(std::move(socket), address, std::move(peer));
      } else {
        admit<TcpStream>(std::move(socket), address, std::move(peer));
      }
    }
    acceptTcp();
  }

  void onAcceptUnix(beast::error_code ec, unix_socket::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) return retryLater(unix_retry_timer, unix_path, ec, [this] { acceptUnix(); });
    setCloseOnExec(socket.native_handle());
    // Every peer on the socket has the same (empty) address; its user is what tells them apart.
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0) {
      admit<UnixStream>(std::move(socket), fmt::format("uid:{}", credentials.uid),
                        fmt::format("unix:uid={},pid={}", credentials.uid, credentials.pid));
    }
    acceptUnix();
  }

  template <typename Stream, typename Socket>
  static Stream makeStream(Socket socket, const ServerContext& server) {
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      return Stream(std::move(socket), *server.tls);
    } else {
      return Stream(std::move(socket));
    }
  }

  template <typename Stream, typename Socket>
  void admit(Socket socket, const std::string& address, std::string peer) {
    ConnectionTable::Admission admission = context->connections->admit(address);
    if (admission.slot) {
      std::make_shared<Connection<Stream>>(makeStream<Stream>(std::move(socket), *context), context,
                                           std::move(*admission.slot), std::move(peer))
          ->serve();
      return;
    }
    bool total = admission.over_total;
    context->warnings.warn(
        "Refusing HTTP connections: {} (latest from {})",
        total ? fmt::format("{} are open", context->limits.max_connections)
              : fmt::format("{} are open from one peer", context->limits.max_connections_per_peer),
        peer);
    // A 503 over TLS would cost a handshake, the very work a flood wants to cause: TLS clients
    // see the connection close instead.
    if constexpr (std::is_same_v<Stream, TlsStream>) return;
    if (std::optional<ConnectionTable::Slot> rejection = context->connections->admitRejection()) {
      std::make_shared<Connection<Stream>>(makeStream<Stream>(std::move(socket), *context), context,
                                           std::move(*rejection), std::move(peer))
          ->reject(errorResponse(503, total
                                          ? "The server has too many open connections; retry later"
                                          : "Too many connections from this peer; retry later"));
    }
  }

  // Binds the unix socket with its final mode and group before it listens, so that no client can
  // connect through a looser mode in between.
  Result<void> listenUnix(const UnixSocketSettings& settings) {
    const std::string& path = settings.path;
    if (path.empty() || path.front() != '/' || path.size() >= sizeof(sockaddr_un::sun_path)) {
      return Error::invalid(fmt::format(
          "[api] listen_unix_socket '{}' must be an absolute path shorter than {} bytes", path,
          sizeof(sockaddr_un::sun_path)));
    }
    if (settings.mode > 0777) {
      return Error::invalid(
          fmt::format("[api] unix_socket_mode {:o} is not a file mode", settings.mode));
    }
    std::optional<gid_t> group;
    if (!settings.group.empty()) {
      Result<gid_t> gid = lookupGroup(settings.group);
      if (!gid) return gid.error();
      group = *gid;
    }
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      // Only a socket left by a dead kilnd is removed; anything else at the path is the
      // operator's, and a live socket is another server's.
      if (!S_ISSOCK(st.st_mode)) {
        return Error::conflict(fmt::format(
            "[api] listen_unix_socket '{}' exists and is not a socket; kilnd does not remove it",
            path));
      }
      if (socketIsLive(path)) {
        return Error::conflict(
            fmt::format("Another process is listening on the unix socket '{}'", path));
      }
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return Error::unavailable(fmt::format("Cannot remove the stale unix socket '{}': {}", path,
                                              fs::errnoText(errno)));
      }
      log::info("Removed the stale unix socket '{}'", path);
    } else if (errno != ENOENT) {
      return Error::unavailable(
          fmt::format("Cannot inspect the unix socket path '{}': {}", path, fs::errnoText(errno)));
    }

    beast::error_code ec;
    auto fail = [&](std::string_view what, int err) {
      return Error::unavailable(fmt::format("Cannot {} the unix socket '{}': {}", what, path,
                                            err != 0 ? fs::errnoText(err) : ec.message()));
    };
    if (unix_acceptor.open(unix_socket(), ec)) return fail("create", 0);
    setCloseOnExec(unix_acceptor.native_handle());
    if (unix_acceptor.bind(unix_socket::endpoint(path), ec)) return fail("bind", 0);
    unix_path = path;  // from here on, stop() removes the file
    if (group && ::lchown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
      return fail("set the group of", errno);
    }
    if (::chmod(path.c_str(), static_cast<mode_t>(settings.mode)) != 0) {
      return fail("set the mode of", errno);
    }
    if (::lstat(path.c_str(), &st) != 0) return fail("inspect", errno);
    unix_file = {st.st_dev, st.st_ino};
    if (unix_acceptor.listen(asio::socket_base::max_listen_connections, ec)) {
      return fail("listen on", 0);
    }
    return success();
  }

  // Removes the socket file, unless something else has replaced it meanwhile.
  void removeUnixSocket() {
    if (unix_path.empty()) return;
    struct stat st {};
    if (::lstat(unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
        (!unix_file || (st.st_dev == unix_file->first && st.st_ino == unix_file->second))) {
      ::unlink(unix_path.c_str());
    }
    unix_path.clear();
  }

  // Declared first so that it is destroyed last: destroying it destroys the pending handlers that
  // own the connections, which closes them.
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer retry_timer{ioc};
  unix_socket::acceptor unix_acceptor{ioc};
  asio::steady_timer unix_retry_timer{ioc};
  std::shared_ptr<const ServerContext> context;
  std::string listen_name;
  std::string unix_path;
  std::optional<std::pair<dev_t, ino_t>> unix_file;
};

HttpServer::HttpServer(ListenSettings listen, ServerLimits limits, RequestHandler handler)
    : listen_(std::move(listen)), limits_(limits), handler_(std::move(handler)) {}

HttpServer::HttpServer(std::string host, std::uint16_t port, ServerLimits limits,
                       RequestHandler handler)
    : HttpServer(ListenSettings{std::move(host), port, {}, false, {}}, limits, std::move(handler)) {
}

HttpServer::~HttpServer() { stop(); }

Result<void> HttpServer::start(unsigned io_threads) {
  std::lock_guard lock(lifecycle_mutex_);
  const bool tcp_enabled = !listen_.host.empty();
  std::string name =
      tcp_enabled ? formatEndpoint(listen_.host, listen_.port) : listen_.unix_socket.path;
  if (started_)
    return Error::conflict(fmt::format("The HTTP server on {} was already started", name));
  if (!tcp_enabled && listen_.unix_socket.path.empty()) {
    return Error::invalid(
        "The API has nothing to listen on: set [api] listen, [api] listen_unix_socket or both");
  }
  if (!listen_.tls.enabled() && (!listen_.tls.key_file.empty() || !listen_.tls.ca_file.empty())) {
    return Error::invalid("[api] key_file and [api] ca_file need [api] cert_file");
  }

  std::shared_ptr<ssl::context> tls;
  if (tcp_enabled && listen_.tls.enabled()) {
    Result<std::shared_ptr<ssl::context>> made = makeTlsContext(listen_.tls);
    if (!made) return made.error();
    tls = std::move(made).value();
  }
  auto context = std::make_shared<ServerContext>();
  context->limits = limits_;
  context->handler = handler_;
  context->connections =
      std::make_shared<ConnectionTable>(limits_.max_connections, limits_.max_connections_per_peer);
  context->tls = tls;
  auto impl = std::make_unique<Impl>(std::move(context));

  if (tcp_enabled) {
    beast::error_code ec;
    tcp::resolver resolver(impl->ioc);
    auto endpoints = resolver.resolve(listen_.host, std::to_string(listen_.port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec) {
      return Error::invalid(fmt::format("Cannot listen on {}: {}", name, ec.message()));
    }
    // Tokens cross the wire in clear without TLS: only loopback is safe by default.
    if (!tls) {
      for (const auto& entry : endpoints) {
        if (isLoopback(entry.endpoint().address())) continue;
        if (!listen_.allow_insecure_http) {
          return Error::invalid(fmt::format(
              "Refusing plain HTTP on {}, which is not a loopback address: set [api] cert_file "
              "and key_file for TLS, or [api] allow_insecure_http = true",
              name));
        }
        log::warn(
            "Serving plain HTTP on {}, which is not a loopback address "
            "([api] allow_insecure_http): API tokens cross the network in clear",
            name);
        break;
      }
    }
    for (const auto& entry : endpoints) {
      impl->acceptor.close(ec);
      if (impl->acceptor.open(entry.endpoint().protocol(), ec)) continue;
      setCloseOnExec(impl->acceptor.native_handle());
      // Lets a restarted agent bind while old connections linger in TIME_WAIT; Linux still
      // refuses a second listener on the same port.
      impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
      if (impl->acceptor.bind(entry.endpoint(), ec)) continue;
      if (impl->acceptor.listen(asio::socket_base::max_listen_connections, ec)) continue;
      break;
    }
    if (ec || !impl->acceptor.is_open()) {
      if (!ec) ec = asio::error::host_not_found;
      return Error::unavailable(fmt::format("Cannot listen on {}: {}", name, ec.message()));
    }
    bound_port_ = impl->acceptor.local_endpoint().port();
    impl->listen_name = formatEndpoint(listen_.host, bound_port_);
  }
  if (!listen_.unix_socket.path.empty()) {
    if (auto listening = impl->listenUnix(listen_.unix_socket); !listening) {
      impl->removeUnixSocket();
      return listening.error();
    }
  }
  if (tcp_enabled) impl->acceptTcp();
  if (!impl->unix_path.empty()) impl->acceptUnix();

  started_ = true;
  impl_ = std::move(impl);
  asio::io_context& ioc = impl_->ioc;
  for (unsigned i = 0; i < std::max(io_threads, 1U); ++i) {
    threads_.emplace_back([&ioc] {
      // A handler that escapes an exception (it should not) must not take the process down.
      while (true) {
        try {
          ioc.run();
          return;
        } catch (const std::exception& e) {
          log::error("The HTTP server's I/O thread caught an exception: {}", e.what());
        }
      }
    });
  }
  if (tcp_enabled) {
    log::info("Listening for {} on {}{}", tls ? "HTTPS" : "HTTP", impl_->listen_name,
              listen_.tls.ca_file.empty() ? "" : " (client certificates required)");
  }
  if (!impl_->unix_path.empty()) {
    log::info("Listening for HTTP on the unix socket {} (mode {:04o}{})", impl_->unix_path,
              listen_.unix_socket.mode,
              listen_.unix_socket.group.empty() ? "" : ", group " + listen_.unix_socket.group);
  }
  return success();
}

void HttpServer::stop() {
  std::lock_guard lock(lifecycle_mutex_);
  if (!impl_) return;
  impl_->ioc.stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  std::string name = impl_->listen_name.empty() ? impl_->unix_path : impl_->listen_name;
  impl_->removeUnixSocket();
  // No thread runs the io_context any more, so tearing it down here is safe: the listener closes
  // and the destroyed pending handlers release every connection.
  impl_.reset();
  log::info("Stopped listening for API calls on {}", name);
}

std::uint16_t HttpServer::port() const { return bound_port_; }

}  // namespace kiln::rpc
