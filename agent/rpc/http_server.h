#pragma once
// The agent's HTTP/1.1 listener. This header is all the rest of kiln sees of HTTP: the Boost.Beast
// types stay in agent/rpc/http_*.{h,cc}, whose headers only those files include, so nothing else
// depends on (or recompiles for) the HTTP library.
//
// The pieces, one job each: http_messages (Beast's messages <-> HttpRequest/HttpResponse),
// http_tls (the TLS context from PEM files), http_connection_table (connection limits),
// http_connection (one connection's state machine), http_unix_socket (the socket file) and
// http_server.cc (listeners, accept loops, start and stop).
//
// The server faces the network, so every input is hostile until parsed: header and body sizes are
// capped before a byte is read, every read and write (and a TLS handshake) runs under a deadline,
// connections are counted in total and per peer, and nothing a client sends can crash the process
// (a handler exception becomes a 500 response).
//
// It listens on TCP (plain HTTP, or TLS with optional client certificates) and/or on a unix
// socket. Plain HTTP is only served on loopback addresses unless allow_insecure_http is set. A
// unix peer's HttpRequest::peer reads "unix:uid=U,pid=P".

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/result.h"

namespace kiln::rpc {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded path without query, e.g. "/v1/instances/abc"
  std::string query;   // raw query string without '?', may be empty
  std::string body;
  std::string authorization;  // raw Authorization header value, may be empty
  std::string x_auth_token;   // raw X-Auth-Token header value (OpenStack clients), may be empty
  std::string content_type;
  std::string peer;  // remote address, for logs
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Further response headers, such as Retry-After on a 503. Checked like content_type (no CR, LF
  // or other control byte in a value, a name that is an HTTP token); Content-Type,
  // Content-Length, Transfer-Encoding and Connection are the server's to set. A response that
  // breaks a rule is replaced by a logged 500. The "= {}" lets {status, type, body} still
  // initialise a response without a warning.
  std::vector<std::pair<std::string, std::string>> headers = {};
};

// Called on an I/O thread, possibly on several at once when start() was given more than one.
// A handler that blocks holds up every connection served by its thread, so slow work belongs
// elsewhere (an AsyncRequestHandler, or a job queue answering 202). A thrown exception becomes a
// logged 500.
using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;

// How an asynchronous handler answers. Call it once, from any thread; copies share one answer, so
// only the first call counts (a second is logged and dropped). When the last copy is destroyed
// without a call, the client gets a 500. It finishes the response on the connection's own strand
// and never blocks on the network. After HttpServer::stop() it does nothing.
using Respond = std::function<void(HttpResponse)>;

// Called on an I/O thread once a whole request has been read; it hands the request on (to a
// worker pool, say) and returns at once, and whoever holds `respond` answers later. While the
// handler works the connection has no read deadline (the write of the answer gets its own), and
// the connection's next request is read only after this answer is written. A thrown exception
// becomes a logged 500.
using AsyncRequestHandler = std::function<void(HttpRequest, Respond)>;

// Request paths and methods come from the network: anything unprintable is escaped (and a long
// value cut) before it reaches a log line.
std::string printableForLog(std::string_view s);

struct ServerLimits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  // The whole request (headers and body) must arrive in this time, counted from the connection's
  // accept (so a TLS handshake counts against it too) or, on a kept-alive connection, from the
  // request's first byte. Writing a response gets the same allowance, so a client that never
  // reads cannot pin a connection either.
  std::chrono::milliseconds read_timeout{30000};
  // A new connection's TLS handshake and its first request's headers must arrive in this time
  // (and within read_timeout), counted from the accept: a client that connects and says nothing
  // cannot hold one of the peer's or the server's connection places for long. Once the headers
  // are in, the body has the rest of read_timeout.
  std::chrono::milliseconds header_timeout{10000};
  std::chrono::milliseconds idle_timeout{60000};  // kept-alive connection waiting for a request
  std::size_t max_connections = 1024;
  // A peer is a remote IPv4 address or IPv6 /64 on TCP (peerKey()), a user id (SO_PEERCRED) on
  // the unix socket.
  std::size_t max_connections_per_peer = 128;
};

// Whom a TCP connection counts against for max_connections_per_peer: an IPv4 address as itself
// (also when written as an IPv4-mapped IPv6 address), an IPv6 address as its /64
// ("2001:db8:1:2::/64"), since one host is usually given a whole /64 and could otherwise open
// max_connections_per_peer connections from each of its addresses. Text that is not an IP
// address is its own key.
std::string peerKey(std::string_view ip_address);

// PEM files. The key file must not be readable by group or others. A non-empty ca_file turns on
// mutual TLS: every client must present a certificate that chains to one of its certificates.
struct TlsSettings {
  std::string cert_file;  // the server certificate, then any intermediates
  std::string key_file;
  std::string ca_file;

  bool enabled() const { return !cert_file.empty(); }
};

struct UnixSocketSettings {
  std::string path;  // empty: no unix socket listener
  unsigned mode = 0660;
  std::string group;  // empty: the daemon's group
};

struct ListenSettings {
  std::string host = "127.0.0.1";  // empty: no TCP listener
  std::uint16_t port = 0;          // 0 picks an ephemeral port
  TlsSettings tls;                 // TCP only; the unix socket is guarded by its file mode
  // Plain HTTP on an address that is not loopback carries tokens in clear; it takes this flag.
  bool allow_insecure_http = false;
  UnixSocketSettings unix_socket;
};

class HttpServer {
 public:
  HttpServer(ListenSettings listen, ServerLimits limits, RequestHandler handler);
  HttpServer(ListenSettings listen, ServerLimits limits, AsyncRequestHandler handler);
  // Plain HTTP on TCP only.
  HttpServer(std::string host, std::uint16_t port, ServerLimits limits, RequestHandler handler);
  HttpServer(std::string host, std::uint16_t port, ServerLimits limits,
             AsyncRequestHandler handler);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the TLS files, resolves, binds and listens, then serves on `io_threads` background
  // threads. Can be called once. The error names the file and why it is refused (missing, readable
  // by others, key and certificate mismatch), host:port (e.g. address in use), or the socket path.
  Result<void> start(unsigned io_threads = 1);

  // Closes the listeners and every connection, removes the unix socket file and joins the I/O
  // threads. Idempotent. It waits for handlers running on the I/O threads, so it must not be
  // called from inside a handler. It does not wait for answers still to come from elsewhere: a
  // Respond called (or dropped) after stop() does nothing, and one being called at that moment
  // finishes before stop() tears the connections down (http_responder.h says how).
  void stop();

  std::uint16_t port() const;  // the bound TCP port, valid after a successful start()

 private:
  struct Impl;  // the Asio machinery, so that this header stays free of Boost

  ListenSettings listen_;
  ServerLimits limits_;
  AsyncRequestHandler handler_;

  std::mutex lifecycle_mutex_;  // serialises start() and stop()
  std::unique_ptr<Impl> impl_;
  std::vector<std::thread> threads_;
  std::atomic<std::uint16_t> bound_port_{0};
  bool started_ = false;
};

}  // namespace kiln::rpc
