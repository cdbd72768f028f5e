#include "agent/rpc/http_connection.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "agent/rpc/http_tls.h"
#include "agent/rpc/json_response.h"
#include "common/log.h"
#include "common/strings.h"

namespace kiln::rpc::httpd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;

namespace {

// After a final response the connection half-closes and reads what the client still sends for at
// most this long: closing with unread bytes makes the kernel send a reset, which can destroy the
// response before the client reads it.
constexpr std::chrono::milliseconds kMaxLinger{1000};
constexpr std::size_t kFirstReadBytes = 4096;
// Room in a connection's input buffer beyond the header limit: Beast reads up to 64 KiB at a time.
// The buffer never needs more, so a client cannot make it grow however it sends.
constexpr std::size_t kReadChunkBytes = 64 * 1024;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

}  // namespace

template <typename Stream>
Connection<Stream>::Connection(Stream stream, std::shared_ptr<const ServerContext> context,
                               ConnectionTable::Slot slot, std::string peer)
    : stream_(std::move(stream)),
      context_(std::move(context)),
      slot_(std::move(slot)),
      peer_(std::move(peer)),
      buffer_(context_->limits.max_header_bytes + kReadChunkBytes),
      awaiting_response_(stream_.get_executor()) {}

template <typename Stream>
void Connection<Stream>::serve() {
  asio::dispatch(stream_.get_executor(),
                 beast::bind_front_handler(&Connection::begin, this->shared_from_this()));
}

template <typename Stream>
void Connection<Stream>::reject(HttpResponse response) {
  asio::dispatch(stream_.get_executor(),
                 [self = this->shared_from_this(), response = std::move(response)]() mutable {
                   self->request_start_ = SteadyClock::now();
                   self->send(std::move(response), /*keep_alive=*/false, /*head=*/false, 11,
                              std::min(self->limits().read_timeout, kMaxLinger));
                 });
}

template <typename Stream>
void Connection<Stream>::begin() {
  // One deadline from the accept: the TLS handshake and the first request share it. Until the
  // first request's headers are in it is the shorter header_timeout, so a client that connects
  // and never finishes the handshake or its headers gives its connection place back soon.
  request_start_ = SteadyClock::now();
  awaiting_first_header_ = true;
  lowest().expires_after(std::min(limits().header_timeout, limits().read_timeout));
  if constexpr (kTls) {
    beast::async_detect_ssl(
        lowest(), buffer_,
        beast::bind_front_handler(&Connection::onDetect, this->shared_from_this()));
  } else {
    readHeader();
  }
}

template <typename Stream>
void Connection<Stream>::onDetect([[maybe_unused]] beast::error_code ec,
                                  [[maybe_unused]] bool tls) {
  if constexpr (kTls) {
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
}

template <typename Stream>
void Connection<Stream>::onHandshake(beast::error_code ec, std::size_t bytes_used) {
  if (ec) {
    context_->warnings.warn("TLS handshake with {} failed: {}", peer_, describeTlsError(ec));
    return;
  }
  buffer_.consume(bytes_used);
  parseHeader();
}

// A plain HTTP client on the TLS port gets a plain answer saying so (as Go's server does),
// rather than TLS bytes it cannot read.
template <typename Stream>
void Connection<Stream>::rejectPlainHttp() {
  prepareResponse(errorResponse(400, "This port serves HTTPS; the request was plain HTTP"),
                  /*keep_alive=*/false, /*head=*/false, 11);
  log_method_ = "-";
  http::async_write(lowest(), response_,
                    [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                      if (!ec) self->halfCloseAndDrain();
                    });
}

template <typename Stream>
void Connection<Stream>::readHeader() {
  request_start_ = SteadyClock::now();
  // One deadline for the whole request: a client trickling bytes cannot extend it.
  lowest().expires_after(awaiting_first_header_
                             ? std::min(limits().header_timeout, limits().read_timeout)
                             : limits().read_timeout);
  parseHeader();
}

template <typename Stream>
void Connection<Stream>::parseHeader() {
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

template <typename Stream>
void Connection<Stream>::onHeader(beast::error_code ec, std::size_t) {
  if (ec) return failRead(ec);
  if (awaiting_first_header_) {
    // The body still has to arrive within read_timeout of the accept.
    awaiting_first_header_ = false;
    lowest().expires_at(request_start_ + limits().read_timeout);
  }
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

template <typename Stream>
void Connection<Stream>::onContinueSent(beast::error_code ec, std::size_t) {
  if (ec) return;
  readBody();
}

template <typename Stream>
void Connection<Stream>::readBody() {
  if (parser_->is_done()) return handleRequest();
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&Connection::onBody, this->shared_from_this()));
}

template <typename Stream>
void Connection<Stream>::onBody(beast::error_code ec, std::size_t) {
  if (ec) return failRead(ec);
  handleRequest();
}

template <typename Stream>
void Connection<Stream>::failRead(beast::error_code ec) {
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
      log::debug("HTTP connection from {} timed out before {}", peer_,
                 awaiting_first_header_ ? "its first request's headers arrived"
                                        : "a whole request arrived");
    }
    return;
  }
  // The framing is unknown after a parse error, so the connection cannot be reused.
  send(std::move(*response), /*keep_alive=*/false, /*head=*/false, 11, limits().read_timeout);
}

template <typename Stream>
void Connection<Stream>::handleRequest() {
  BeastRequest message = parser_->release();
  parser_.reset();
  answer_head_ = message.method() == http::verb::head;
  answer_keep_alive_ = message.keep_alive();
  answer_version_ = message.version();
  Result<HttpRequest> request = toHttpRequest(message);
  if (!request) {
    return send(errorResponse(request.error()), answer_keep_alive_, answer_head_, answer_version_,
                limits().read_timeout);
  }
  request->peer = peer_;
  log_path_ = request->path;
  // The request is in: the handler may take as long as it needs (a slow Keystone is not the
  // client's fault), and writing the answer gets its own deadline in send().
  lowest().expires_never();
  // The one pending operation while the handler works: it keeps the connection alive, and
  // destroying the io_context (HttpServer::stop) still frees it.
  awaiting_response_.expires_at(SteadyClock::time_point::max());
  awaiting_response_.async_wait([self = this->shared_from_this()](beast::error_code) {});
  auto pending = std::make_shared<PendingResponse>(
      context_->gate, deliverer(),
      fmt::format("{} {} from {}", printableForLog(request->method), printableForLog(request->path),
                  peer_));
  callHandler(std::move(*request), pending);
}

template <typename Stream>
void Connection<Stream>::callHandler(HttpRequest request,
                                     const std::shared_ptr<PendingResponse>& pending) {
  try {
    context_->handler(std::move(request), respondTo(pending));
    return;
  } catch (const std::exception& e) {
    log::error("The handler for {} threw: {}", pending->requestName(), e.what());
  } catch (...) {
    log::error("The handler for {} threw a non-standard exception", pending->requestName());
  }
  pending->answerIfUnanswered(errorResponse(500, "The server failed while handling the request"));
}

template <typename Stream>
ResponseGate::Deliver Connection<Stream>::deliverer() {
  return [weak = this->weak_from_this()](HttpResponse response) {
    // The connection is alive: awaiting_response_ holds it until onResponse, and the gate is open,
    // so the io_context is too. The posted handler takes over `self`, so the connection is never
    // destroyed here.
    std::shared_ptr<Connection> self = weak.lock();
    if (!self) return;
    auto executor = self->stream_.get_executor();
    asio::post(executor, [self, response = std::move(response)]() mutable {
      self->onResponse(std::move(response));
    });
  };
}

template <typename Stream>
void Connection<Stream>::onResponse(HttpResponse response) {
  awaiting_response_.cancel();
  send(std::move(response), answer_keep_alive_, answer_head_, answer_version_,
       limits().read_timeout);
}

template <typename Stream>
void Connection<Stream>::prepareResponse(HttpResponse response, bool keep_alive, bool head,
                                         unsigned version) {
  if (!isSendable(response)) {
    log::error("The handler for {} {} returned an invalid response (status {})",
               printableForLog(log_method_), printableForLog(log_path_), response.status);
    response = errorResponse(500, "The server failed while handling the request");
  }
  response_ = toBeastResponse(std::move(response), keep_alive, head, version);
}

template <typename Stream>
void Connection<Stream>::send(HttpResponse response, bool keep_alive, bool head, unsigned version,
                              std::chrono::milliseconds timeout) {
  prepareResponse(std::move(response), keep_alive, head, version);
  lowest().expires_after(timeout);
  http::async_write(stream_, response_,
                    beast::bind_front_handler(&Connection::onWrite, this->shared_from_this()));
}

template <typename Stream>
void Connection<Stream>::onWrite(beast::error_code ec, std::size_t) {
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

// Waits (for idle_timeout) for the first byte of the next request; the request itself then gets
// read_timeout from readHeader().
template <typename Stream>
void Connection<Stream>::waitForNextRequest() {
  if (buffer_.size() > 0) return readHeader();  // a pipelined request is already here
  lowest().expires_after(limits().idle_timeout);
  stream_.async_read_some(
      buffer_.prepare(kFirstReadBytes),
      beast::bind_front_handler(&Connection::onFirstBytes, this->shared_from_this()));
}

template <typename Stream>
void Connection<Stream>::onFirstBytes(beast::error_code ec, std::size_t bytes) {
  if (ec) return;  // idle timeout, or the client closed the connection
  buffer_.commit(bytes);
  readHeader();
}

template <typename Stream>
void Connection<Stream>::closeGracefully() {
  if constexpr (kTls) {
    // close_notify tells the client the response is complete; waiting for its answer is bounded
    // like the plain linger below.
    lowest().expires_after(std::min(limits().read_timeout, kMaxLinger));
    stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
  } else {
    halfCloseAndDrain();
  }
}

template <typename Stream>
void Connection<Stream>::halfCloseAndDrain() {
  beast::error_code ec;
  lowest().socket().shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) return;
  lowest().expires_after(std::min(limits().read_timeout, kMaxLinger));
  drain();
}

template <typename Stream>
void Connection<Stream>::drain() {
  lowest().async_read_some(asio::buffer(drain_buffer_),
                           [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                             if (!ec) self->drain();
                           });
}

template class Connection<TcpStream>;
template class Connection<TlsStream>;
template class Connection<UnixStream>;

}  // namespace kiln::rpc::httpd
