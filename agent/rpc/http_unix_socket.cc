#include "agent/rpc/http_unix_socket.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/socket_base.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/unique_fd.h"

namespace kiln::rpc::httpd {

namespace asio = boost::asio;
using UnixProtocol = asio::local::stream_protocol;

namespace {

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

void setCloseOnExec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

void UnixSocketFile::remove() {
  if (path_.empty()) return;
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
      (!identity_ || (st.st_dev == identity_->first && st.st_ino == identity_->second))) {
    ::unlink(path_.c_str());
  }
  path_.clear();
}

Result<void> listenOnUnixSocket(UnixProtocol::acceptor& acceptor,
                                const UnixSocketSettings& settings, UnixSocketFile& file) {
  const std::string& path = settings.path;
  if (path.empty() || path.front() != '/' || path.size() >= sizeof(sockaddr_un::sun_path)) {
    return Error::invalid(
        fmt::format("[api] listen_unix_socket '{}' must be an absolute path shorter than {} bytes",
                    path, sizeof(sockaddr_un::sun_path)));
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
    // Only a socket left by a dead kilnd is removed; anything else at the path is the operator's,
    // and a live socket is another server's.
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
      return Error::unavailable(
          fmt::format("Cannot remove the stale unix socket '{}': {}", path, fs::errnoText(errno)));
    }
    log::info("Removed the stale unix socket '{}'", path);
  } else if (errno != ENOENT) {
    return Error::unavailable(
        fmt::format("Cannot inspect the unix socket path '{}': {}", path, fs::errnoText(errno)));
  }

  boost::system::error_code ec;
  auto fail = [&](std::string_view what, int err) {
    return Error::unavailable(fmt::format("Cannot {} the unix socket '{}': {}", what, path,
                                          err != 0 ? fs::errnoText(err) : ec.message()));
  };
  if (acceptor.open(UnixProtocol(), ec)) return fail("create", 0);
  setCloseOnExec(acceptor.native_handle());
  if (acceptor.bind(UnixProtocol::endpoint(path), ec)) return fail("bind", 0);
  file.path_ = path;  // from here on, the server removes the file when it stops
  if (group && ::lchown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
    return fail("set the group of", errno);
  }
  if (::chmod(path.c_str(), static_cast<mode_t>(settings.mode)) != 0) {
    return fail("set the mode of", errno);
  }
  if (::lstat(path.c_str(), &st) != 0) return fail("inspect", errno);
  file.identity_ = {st.st_dev, st.st_ino};
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec)) {
    return fail("listen on", 0);
  }
  return success();
}

}  // namespace kiln::rpc::httpd
