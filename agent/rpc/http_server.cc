#include "agent/rpc/http_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <exception>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>

#include "agent/rpc/http_connection.h"
#include "agent/rpc/http_connection_table.h"
#include "agent/rpc/http_server_context.h"
#include "agent/rpc/http_tls.h"
#include "agent/rpc/http_unix_socket.h"
#include "agent/rpc/json_response.h"
#include "common/log.h"

namespace kiln::rpc {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using httpd::Connection;
using httpd::ConnectionTable;
using httpd::listenOnUnixSocket;
using httpd::makeTlsContext;
using httpd::ServerContext;
using httpd::setCloseOnExec;
using httpd::TcpStream;
using httpd::TlsStream;
using httpd::UnixProtocol;
using httpd::UnixSocketFile;
using httpd::UnixStream;

constexpr std::chrono::milliseconds kAcceptRetryDelay{100};

std::string formatEndpoint(const std::string& host, std::uint16_t port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

bool isLoopback(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return address.is_loopback();
}

}  // namespace

std::string peerKey(std::string_view ip_address) {
  beast::error_code ec;
  asio::ip::address address = asio::ip::make_address(std::string(ip_address), ec);
  if (ec) return std::string(ip_address);
  if (address.is_v4()) return address.to_string();
  asio::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).to_string();
  asio::ip::address_v6::bytes_type bytes = v6.to_bytes();
  std::fill(bytes.begin() + 8, bytes.end(), 0);
  return asio::ip::address_v6(bytes).to_string() + "/64";
}

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
      std::string key = peerKey(address);
      if (context->tls) {
        admit<TlsStream>(std::move(socket), key, std::move(peer));
      } else {
        admit<TcpStream>(std::move(socket), key, std::move(peer));
      }
    }
    acceptTcp();
  }

  void onAcceptUnix(beast::error_code ec, UnixProtocol::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      return retryLater(unix_retry_timer, unix_file.path(), ec, [this] { acceptUnix(); });
    }
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

  // Declared first so that it is destroyed last: destroying it destroys the pending handlers that
  // own the connections, which closes them.
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer retry_timer{ioc};
  UnixProtocol::acceptor unix_acceptor{ioc};
  asio::steady_timer unix_retry_timer{ioc};
  std::shared_ptr<const ServerContext> context;
  std::string listen_name;
  UnixSocketFile unix_file;
};

namespace {

// A synchronous handler answers before it returns, on the I/O thread that called it.
AsyncRequestHandler answeringAtOnce(RequestHandler handler) {
  return [handler = std::move(handler)](HttpRequest request, Respond respond) {
    respond(handler(request));
  };
}

}  // namespace

HttpServer::HttpServer(ListenSettings listen, ServerLimits limits, RequestHandler handler)
    : HttpServer(std::move(listen), limits, answeringAtOnce(std::move(handler))) {}

HttpServer::HttpServer(ListenSettings listen, ServerLimits limits, AsyncRequestHandler handler)
    : listen_(std::move(listen)), limits_(limits), handler_(std::move(handler)) {}

HttpServer::HttpServer(std::string host, std::uint16_t port, ServerLimits limits,
                       RequestHandler handler)
    : HttpServer(std::move(host), port, limits, answeringAtOnce(std::move(handler))) {}

HttpServer::HttpServer(std::string host, std::uint16_t port, ServerLimits limits,
                       AsyncRequestHandler handler)
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
  context->gate = std::make_shared<httpd::ResponseGate>();
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
    if (auto listening =
            listenOnUnixSocket(impl->unix_acceptor, listen_.unix_socket, impl->unix_file);
        !listening) {
      impl->unix_file.remove();
      return listening.error();
    }
  }
  if (tcp_enabled) impl->acceptTcp();
  if (impl->unix_file.bound()) impl->acceptUnix();

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
  if (impl_->unix_file.bound()) {
    log::info("Listening for HTTP on the unix socket {} (mode {:04o}{})", impl_->unix_file.path(),
              listen_.unix_socket.mode,
              listen_.unix_socket.group.empty() ? "" : ", group " + listen_.unix_socket.group);
  }
  return success();
}

void HttpServer::stop() {
  std::lock_guard lock(lifecycle_mutex_);
  if (!impl_) return;
  // First, so that no Respond touches the io_context or a connection from here on: one being
  // called now finishes its post before close() returns, later ones do nothing.
  impl_->context->gate->close();
  impl_->ioc.stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  std::string name = impl_->listen_name.empty() ? impl_->unix_file.path() : impl_->listen_name;
  impl_->unix_file.remove();
  // No thread runs the io_context any more, so tearing it down here is safe: the listener closes
  // and the destroyed pending handlers release every connection.
  impl_.reset();
  log::info("Stopped listening for API calls on {}", name);
}

std::uint16_t HttpServer::port() const { return bound_port_; }

}  // namespace kiln::rpc
