#include "agent/rpc/http_server.h"

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <exception>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "agent/rpc/json_response.h"
#include "common/log.h"

namespace kiln::rpc {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

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

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
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
    int high = hexValue(s[i + 1]);
    int low = hexValue(s[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

bool equalsIgnoringCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    return lower(x) == lower(y);
  });
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

struct ServerContext {
  ServerLimits limits;
  RequestHandler handler;
  std::shared_ptr<ConnectionTable> connections;
};

// One accepted connection. It owns itself through the shared_ptrs its pending operations hold,
// and every operation runs on the connection's strand. Any error ends the chain of operations,
// which frees the connection and closes its socket.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, std::shared_ptr<const ServerContext> context,
             ConnectionTable::Slot slot, std::string peer)
      : stream_(std::move(socket)),
        context_(std::move(context)),
        slot_(std::move(slot)),
        peer_(std::move(peer)) {}

  // Serves requests until the client closes, a timeout, or an error that ends the connection.
  void serve() {
    asio::dispatch(stream_.get_executor(),
                   beast::bind_front_handler(&Connection::readHeader, shared_from_this()));
  }

  // Answers with `response` before reading anything, then closes.
  void reject(HttpResponse response) {
    asio::dispatch(stream_.get_executor(),
                   [self = shared_from_this(), response = std::move(response)]() mutable {
                     self->request_start_ = SteadyClock::now();
                     self->send(std::move(response), /*keep_alive=*/false, /*head=*/false, 11,
                                std::min(self->limits().read_timeout, kMaxLinger));
                   });
  }

 private:
  const ServerLimits& limits() const { return context_->limits; }

  void readHeader() {
    parser_.emplace();
    constexpr std::size_t kMaxHeaderLimit = std::numeric_limits<std::uint32_t>::max();
    parser_->header_limit(
        static_cast<std::uint32_t>(std::min(limits().max_header_bytes, kMaxHeaderLimit)));
    parser_->body_limit(static_cast<std::uint64_t>(limits().max_body_bytes));
    log_method_.clear();
    log_path_.clear();
    request_start_ = SteadyClock::now();
    // One deadline for the whole request: a client trickling bytes cannot extend it.
    stream_.expires_after(limits().read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Connection::onHeader, shared_from_this()));
  }

  void onHeader(beast::error_code ec, std::size_t) {
    if (ec) return failRead(ec);
    const auto& message = parser_->get();
    log_method_ = std::string(toStd(message.method_string()));
    log_path_ = std::string(toStd(message.target()));
    // Clients such as curl wait for this before sending a large body.
    if (!parser_->is_done() && message.version() >= 11 &&
        equalsIgnoringCase(toStd(message[http::field::expect]), "100-continue")) {
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        beast::bind_front_handler(&Connection::onContinueSent, shared_from_this()));
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
                     beast::bind_front_handler(&Connection::onBody, shared_from_this()));
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

  void send(HttpResponse response, bool keep_alive, bool head, unsigned version,
            std::chrono::milliseconds timeout) {
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

    stream_.expires_after(timeout);
    http::async_write(stream_, response_,
                      beast::bind_front_handler(&Connection::onWrite, shared_from_this()));
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
    stream_.expires_after(limits().idle_timeout);
    stream_.async_read_some(
        buffer_.prepare(kFirstReadBytes),
        beast::bind_front_handler(&Connection::onFirstBytes, shared_from_this()));
  }

  void onFirstBytes(beast::error_code ec, std::size_t bytes) {
    if (ec) return;  // idle timeout, or the client closed the connection
    buffer_.commit(bytes);
    readHeader();
  }

  void closeGracefully() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return;
    stream_.expires_after(std::min(limits().read_timeout, kMaxLinger));
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(drain_buffer_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (!ec) self->drain();
                            });
  }

  beast::tcp_stream stream_;
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

}  // namespace

struct HttpServer::Impl {
  explicit Impl(std::shared_ptr<const ServerContext> server_context)
      : context(std::move(server_context)) {}

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), beast::bind_front_handler(&Impl::onAccept, this));
  }

  void onAccept(beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Typically out of descriptors: back off instead of spinning on the same failure.
      warnRateLimited("Cannot accept an HTTP connection on {}: {}", listen_name, ec.message());
      retry_timer.expires_after(kAcceptRetryDelay);
      retry_timer.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec) accept();
      });
      return;
    }
    setCloseOnExec(socket.native_handle());
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (!ec) {
      std::string address = remote.address().to_string();
      std::string peer = formatEndpoint(address, remote.port());
      ConnectionTable::Admission admission = context->connections->admit(address);
      if (admission.slot) {
        std::make_shared<Connection>(std::move(socket), context, std::move(*admission.slot),
                                     std::move(peer))
            ->serve();
      } else {
        bool total = admission.over_total;
        warnRateLimited("Refusing HTTP connections: {} (latest from {})",
                        total ? fmt::format("{} are open", context->limits.max_connections)
                              : fmt::format("{} are open from one address",
                                            context->limits.max_connections_per_peer),
                        peer);
        if (std::optional<ConnectionTable::Slot> rejection =
                context->connections->admitRejection()) {
          std::make_shared<Connection>(std::move(socket), context, std::move(*rejection),
                                       std::move(peer))
              ->reject(errorResponse(
                  503, total ? "The server has too many open connections; retry later"
                             : "Too many connections from this address; retry later"));
        }
      }
    }
    accept();
  }

  template <typename... Args>
  void warnRateLimited(fmt::format_string<Args...> format, Args&&... args) {
    // Only the accept chain calls this, one completion at a time, so no lock is needed.
    auto now = SteadyClock::now();
    if (now - last_warning < kLimitWarningInterval) return;
    last_warning = now;
    log::warn(format, std::forward<Args>(args)...);
  }

  // Declared first so that it is destroyed last: destroying it destroys the pending handlers that
  // own the connections, which closes them.
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer retry_timer{ioc};
  std::shared_ptr<const ServerContext> context;
  std::string listen_name;
  SteadyClock::time_point last_warning{};
};

HttpServer::HttpServer(std::string host, std::uint16_t port, ServerLimits limits,
                       RequestHandler handler)
    : host_(std::move(host)),
      requested_port_(port),
      limits_(limits),
      handler_(std::move(handler)) {}

HttpServer::~HttpServer() { stop(); }

Result<void> HttpServer::start(unsigned io_threads) {
  std::lock_guard lock(lifecycle_mutex_);
  std::string name = formatEndpoint(host_, requested_port_);
  if (started_)
    return Error::conflict(fmt::format("The HTTP server on {} was already started", name));

  auto context = std::make_shared<ServerContext>(
      ServerContext{limits_, handler_,
                    std::make_shared<ConnectionTable>(limits_.max_connections,
                                                      limits_.max_connections_per_peer)});
  auto impl = std::make_unique<Impl>(std::move(context));

  beast::error_code ec;
  tcp::resolver resolver(impl->ioc);
  auto endpoints = resolver.resolve(host_, std::to_string(requested_port_),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec) {
    return Error::invalid(fmt::format("Cannot listen on {}: {}", name, ec.message()));
  }
  for (const auto& entry : endpoints) {
    impl->acceptor.close(ec);
    if (impl->acceptor.open(entry.endpoint().protocol(), ec)) continue;
    setCloseOnExec(impl->acceptor.native_handle());
    // Lets a restarted agent bind while old connections linger in TIME_WAIT; Linux still refuses
    // a second listener on the same port.
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
  impl->listen_name = formatEndpoint(host_, bound_port_);
  impl->accept();

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
  log::info("Listening for HTTP on {}", impl_->listen_name);
  return success();
}

void HttpServer::stop() {
  std::lock_guard lock(lifecycle_mutex_);
  if (!impl_) return;
  impl_->ioc.stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  std::string name = impl_->listen_name;
  // No thread runs the io_context any more, so tearing it down here is safe: the listener closes
  // and the destroyed pending handlers release every connection.
  impl_.reset();
  log::info("Stopped listening for HTTP on {}", name);
}

std::uint16_t HttpServer::port() const { return bound_port_; }

}  // namespace kiln::rpc
