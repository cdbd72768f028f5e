#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): what every connection shares with the
// listener that accepted it, and the three kinds of stream a connection can be.

#include <chrono>
#include <memory>
#include <mutex>
#include <utility>

#include <fmt/format.h>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/rate_policy.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "agent/rpc/http_connection_table.h"
#include "agent/rpc/http_responder.h"
#include "agent/rpc/http_server.h"
#include "common/log.h"

namespace kiln::rpc::httpd {

using SteadyClock = std::chrono::steady_clock;
using UnixProtocol = boost::asio::local::stream_protocol;

using TcpStream = boost::beast::tcp_stream;
using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
using UnixStream = boost::beast::basic_stream<UnixProtocol, boost::asio::any_io_executor,
                                              boost::beast::unlimited_rate_policy>;

// Warnings about what clients do (limits hit, failed handshakes) are rate-limited: a flood must
// not turn into a flood of log lines.
class WarningLimiter {
 public:
  static constexpr std::chrono::seconds kInterval{10};

  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    {
      std::lock_guard lock(mutex_);
      auto now = SteadyClock::now();
      if (now - last_warning_ < kInterval) return;
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
  AsyncRequestHandler handler;
  // Closed by HttpServer::stop() before the io_context goes; every answer passes it.
  std::shared_ptr<ResponseGate> gate;
  std::shared_ptr<ConnectionTable> connections;
  std::shared_ptr<boost::asio::ssl::context> tls;  // null: the TCP listener speaks plain HTTP
  mutable WarningLimiter warnings;
};

}  // namespace kiln::rpc::httpd
