#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): one accepted connection and the state machine
// that serves it, for each kind of stream (plain TCP, TLS, unix socket).
//
//   begin --(TLS: detect, handshake)--> readHeader --> [100 Continue] --> readBody
//     readBody --> handleRequest --> (the handler works; no deadline) --Respond--> onResponse
//     onResponse --> send --> onWrite --keep-alive--> waitForNextRequest
//     waitForNextRequest --first byte--> readHeader;  onWrite --close--> closeGracefully
//   A parse error is answered (400, 413, 431) and closes; a timeout or a client that goes away
//   ends the chain without an answer.
//   Deadlines: from the accept to the first request's headers, header_timeout (at most
//   read_timeout); the whole request, read_timeout from the accept or from its first byte;
//   waitForNextRequest, idle_timeout; each response, read_timeout.
//
// The connection owns itself through the shared_ptrs its pending operations hold, and every
// operation runs on the connection's strand. Any error ends the chain of operations, which frees
// the connection and closes its socket. While the handler works, the pending operation is a wait
// on awaiting_response_ that only the answer (or the server's stop) ends; the handler's Respond
// holds a weak reference only (http_responder.h). Requests on one connection are served one at a
// time: the next is read only once the previous response is written, so pipelined requests wait
// in the socket, not in memory.

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "agent/rpc/http_messages.h"
#include "agent/rpc/http_responder.h"
#include "agent/rpc/http_server_context.h"

namespace kiln::rpc::httpd {

template <typename Stream>
class Connection : public std::enable_shared_from_this<Connection<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  Connection(Stream stream, std::shared_ptr<const ServerContext> context,
             ConnectionTable::Slot slot, std::string peer);

  // Serves requests until the client closes, a timeout, or an error that ends the connection.
  void serve();
  // Answers with `response` before reading anything, then closes.
  void reject(HttpResponse response);

 private:
  const ServerLimits& limits() const { return context_->limits; }
  auto& lowest() { return boost::beast::get_lowest_layer(stream_); }

  void begin();
  void onDetect(boost::beast::error_code ec, bool tls);
  void onHandshake(boost::beast::error_code ec, std::size_t bytes_used);
  void rejectPlainHttp();
  void readHeader();
  void parseHeader();
  void onHeader(boost::beast::error_code ec, std::size_t);
  void onContinueSent(boost::beast::error_code ec, std::size_t);
  void readBody();
  void onBody(boost::beast::error_code ec, std::size_t);
  void failRead(boost::beast::error_code ec);
  void handleRequest();
  void callHandler(HttpRequest request, const std::shared_ptr<PendingResponse>& pending);
  // What a Respond calls, on whichever thread answers, with the server's ResponseGate held open.
  ResponseGate::Deliver deliverer();
  void onResponse(HttpResponse response);
  void prepareResponse(HttpResponse response, bool keep_alive, bool head, unsigned version);
  void send(HttpResponse response, bool keep_alive, bool head, unsigned version,
            std::chrono::milliseconds timeout);
  void onWrite(boost::beast::error_code ec, std::size_t);
  void waitForNextRequest();
  void onFirstBytes(boost::beast::error_code ec, std::size_t bytes);
  void closeGracefully();
  void halfCloseAndDrain();
  void drain();

  Stream stream_;
  std::shared_ptr<const ServerContext> context_;
  ConnectionTable::Slot slot_;
  std::string peer_;
  boost::beast::flat_buffer buffer_;
  std::optional<beast_http::request_parser<beast_http::string_body>> parser_;
  BeastResponse response_;
  boost::asio::steady_timer awaiting_response_;
  // How the answer to the request being handled is framed.
  bool answer_keep_alive_ = false;
  bool answer_head_ = false;
  unsigned answer_version_ = 11;
  // From the accept until the first request's headers are in: the deadline is header_timeout.
  bool awaiting_first_header_ = false;
  std::array<char, 4096> drain_buffer_{};
  // For the request's log line.
  std::string log_method_;
  std::string log_path_;
  SteadyClock::time_point request_start_;
};

extern template class Connection<TcpStream>;
extern template class Connection<TlsStream>;
extern template class Connection<UnixStream>;

}  // namespace kiln::rpc::httpd
