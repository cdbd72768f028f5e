#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): the unix socket listener's file, which kilnd
// creates with its final mode and group, replaces only when a dead kilnd left it, and removes
// when it stops.

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>

#include <boost/asio/local/stream_protocol.hpp>

#include "agent/rpc/http_server.h"
#include "common/result.h"

namespace kiln::rpc::httpd {

// Asio opens sockets without FD_CLOEXEC; a child process (qemu-img, ...) must not inherit the
// listener or a client connection.
void setCloseOnExec(int fd);

// The socket file a listener bound. Not removed by its destructor: the server removes it once no
// thread serves it any more.
class UnixSocketFile {
 public:
  const std::string& path() const { return path_; }
  bool bound() const { return !path_.empty(); }
  // Removes the file, unless something else has replaced it meanwhile. Idempotent.
  void remove();

 private:
  friend Result<void> listenOnUnixSocket(boost::asio::local::stream_protocol::acceptor& acceptor,
                                         const UnixSocketSettings& settings, UnixSocketFile& file);
  std::string path_;
  std::optional<std::pair<dev_t, ino_t>> identity_;
};

// Opens, binds and listens on settings.path with settings.mode and settings.group set before
// it listens, so that no client can connect through a looser mode in between. Once the file is
// bound, `file` records it, also when a later step fails (the caller then removes it). Errors name
// the option and the path.
Result<void> listenOnUnixSocket(boost::asio::local::stream_protocol::acceptor& acceptor,
                                const UnixSocketSettings& settings, UnixSocketFile& file);

}  // namespace kiln::rpc::httpd
