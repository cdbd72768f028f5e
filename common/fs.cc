#include "common/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/random.h"
#include "common/unique_fd.h"

namespace kiln::fs {

namespace stdfs = std::filesystem;

std::string errnoText(int err) { return std::strerror(err); }

Result<void> writeAll(int fd, std::string_view data, const stdfs::path& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      bool full = err == ENOSPC || err == EDQUOT || err == EFBIG;
      return Error{full ? ErrorCode::kResourceExhausted : ErrorCode::kInternal,
                   fmt::format("Cannot write '{}': {}", path.string(), errnoText(err))};
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return success();
}

namespace {

std::string randomSuffix() { return fmt::format("{:016x}", randomU64()); }

}  // namespace

Result<void> fsyncDirectory(const stdfs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return Error::internal(
        fmt::format("Cannot open directory '{}': {}", dir.string(), errnoText(errno)));
  }
  if (::fsync(fd.get()) != 0) {
    return Error::internal(
        fmt::format("Cannot fsync directory '{}': {}", dir.string(), errnoText(errno)));
  }
  return success();
}

Result<void> writeFileAtomically(const stdfs::path& path, std::string_view contents,
                                 unsigned mode) {
  stdfs::path tmp = path;
  tmp += ".tmp-" + randomSuffix();
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd.valid()) {
    return Error::internal(fmt::format("Cannot create '{}': {}", tmp.string(), errnoText(errno)));
  }
  auto cleanup_on_error = [&](Error e) -> Result<void> {
    ::unlink(tmp.c_str());
    return e;
  };
  if (::fchmod(fd.get(), mode) != 0) {
    return cleanup_on_error(
        Error::internal(fmt::format("Cannot chmod '{}': {}", tmp.string(), errnoText(errno))));
  }
  if (auto w = writeAll(fd.get(), contents, tmp); !w) return cleanup_on_error(w.error());
  if (::fsync(fd.get()) != 0) {
    return cleanup_on_error(
        Error::internal(fmt::format("Cannot fsync '{}': {}", tmp.string(), errnoText(errno))));
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return cleanup_on_error(Error::internal(fmt::format(
        "Cannot rename '{}' to '{}': {}", tmp.string(), path.string(), errnoText(errno))));
  }
  return fsyncDirectory(path.parent_path().empty() ? stdfs::path(".") : path.parent_path());
}

Result<std::string> readFile(const stdfs::path& path, std::uint64_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    return Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 fmt::format("Cannot open '{}': {}", path.string(), errnoText(err))};
  }
  return readAll(fd.get(), path, max_bytes);
}

Result<std::string> readAll(int fd, const stdfs::path& path, std::uint64_t max_bytes,
                            std::string_view what) {
  std::string out;
  char buf[4096];
  auto fail = [&](Error e) {
    ::explicit_bzero(out.data(), out.size());
    ::explicit_bzero(buf, sizeof buf);
    return e;
  };
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      return fail(Error::internal(
          fmt::format("Cannot read {} '{}': {}", what, path.string(), errnoText(err))));
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      std::string name(what);
      if (!name.empty() && name[0] >= 'a' && name[0] <= 'z')
        name[0] = static_cast<char>(name[0] - 32);
      return fail(Error{ErrorCode::kTooLarge, fmt::format("{} '{}' is larger than {} bytes", name,
                                                          path.string(), max_bytes)});
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::explicit_bzero(buf, sizeof buf);
  return out;
}

Result<std::string> readFileTail(const stdfs::path& path, std::uint64_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    return Error{err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 fmt::format("Cannot open '{}': {}", path.string(), errnoText(err))};
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::internal(fmt::format("Cannot stat '{}': {}", path.string(), errnoText(errno)));
  }
  auto size = static_cast<std::uint64_t>(st.st_size);
  off_t start = size > max_bytes ? static_cast<off_t>(size - max_bytes) : 0;
  std::string out;
  out.resize(static_cast<size_t>(size - static_cast<std::uint64_t>(start)));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n =
        ::pread(fd.get(), out.data() + got, out.size() - got, start + static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::internal(fmt::format("Cannot read '{}': {}", path.string(), errnoText(errno)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

Result<void> makeDirectories(const stdfs::path& dir, unsigned mode) {
  std::error_code ec;
  stdfs::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (stdfs::exists(partial, ec)) continue;
    if (::mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) {
      return Error::internal(
          fmt::format("Cannot create directory '{}': {}", partial.string(), errnoText(errno)));
    }
    ::chmod(partial.c_str(), mode);  // mkdir's mode is filtered by the umask
  }
  return success();
}

Result<void> removeTree(const stdfs::path& path) {
  std::error_code ec;
  stdfs::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Error::internal(fmt::format("Cannot remove '{}': {}", path.string(), ec.message()));
  }
  return success();
}

Result<std::uint64_t> freeBytes(const stdfs::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    return Error::internal(fmt::format("Cannot statvfs '{}': {}", path.string(), errnoText(errno)));
  }
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

Result<std::uint64_t> totalBytes(const stdfs::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    return Error::internal(fmt::format("Cannot statvfs '{}': {}", path.string(), errnoText(errno)));
  }
  return static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize;
}

}  // namespace kiln::fs
