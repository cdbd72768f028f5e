#include "drivers/disk/disk_purge.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "common/fs.h"
#include "common/unique_fd.h"

namespace kiln::drivers::disk {
namespace {

constexpr std::size_t kZeroChunk = 1 << 20;

Error ioError(std::string_view what, const std::string& path, int err) {
  ErrorCode code =
      (err == ENOSPC || err == EDQUOT) ? ErrorCode::kResourceExhausted : ErrorCode::kInternal;
  return Error{code, fmt::format("{} '{}' failed: {}", what, path, fs::errnoText(err))};
}

Result<void> zeroRange(int fd, const std::string& path, off_t from, off_t to) {
  static const std::vector<char> zeros(kZeroChunk, 0);
  while (from < to) {
    auto want = static_cast<std::size_t>(std::min<off_t>(to - from, kZeroChunk));
    ssize_t n = ::pwrite(fd, zeros.data(), want, from);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ioError("Zeroing", path, errno);
    }
    from += n;
  }
  return success();
}

// Overwrites every range SEEK_DATA reports; a filesystem without SEEK_DATA reports the whole
// file as data, which is still correct, only slower.
Result<std::uint64_t> zeroAllocated(int fd, const std::string& path, off_t size) {
  std::uint64_t written = 0;
  off_t pos = 0;
  while (pos < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only holes from here to the end
      return ioError("Finding the data of", path, errno);
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return ioError("Finding the holes of", path, errno);
    hole = std::min(hole, size);
    if (auto r = zeroRange(fd, path, data, hole); !r) return r.error();
    written += static_cast<std::uint64_t>(hole - data);
    pos = hole;
  }
  return written;
}

struct PhysicalRange {
  std::uint64_t start = 0;
  std::uint64_t length = 0;
};

// Where the file's blocks are on the device. Empty when the filesystem cannot say (no FIEMAP):
// the punch still frees them, only the targeted discard is skipped.
std::vector<PhysicalRange> physicalExtents(int fd) {
  constexpr unsigned kBatch = 64;
  std::vector<PhysicalRange> out;
  std::vector<char> buf(sizeof(fiemap) + kBatch * sizeof(fiemap_extent));
  std::uint64_t next = 0;
  for (;;) {
    std::fill(buf.begin(), buf.end(), 0);
    auto* map = reinterpret_cast<fiemap*>(buf.data());
    map->fm_start = next;
    map->fm_length = FIEMAP_MAX_OFFSET - next;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, map) < 0) return {};
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& e = map->fm_extents[i];
      next = e.fe_logical + e.fe_length;
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
      // Extents whose device position is unknown or shared with other data cannot be trimmed.
      if (e.fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED |
                        FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_NOT_ALIGNED)) {
        continue;
      }
      if (!out.empty() && out.back().start + out.back().length == e.fe_physical) {
        out.back().length += e.fe_length;
      } else {
        out.push_back({e.fe_physical, e.fe_length});
      }
    }
    if (last) break;
  }
  return out;
}

Result<void> clearOpenFile(int fd, const std::string& path, ClearMethod method, ClearStats& stats) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ioError("Reading", path, errno);
  if (!S_ISREG(st.st_mode)) return success();
  ++stats.files;
  if (st.st_nlink > 1) {
    ++stats.skipped_linked;
    return success();
  }
  if (method == ClearMethod::kNone || st.st_size == 0) return success();
  if (method == ClearMethod::kDiscard) {
    auto ranges = physicalExtents(fd);
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, st.st_size) != 0) {
      if (errno != EOPNOTSUPP) return ioError("Punching out", path, errno);
      // A filesystem that cannot punch holes gets the zeros instead: the data must go.
      auto zeroed = zeroAllocated(fd, path, st.st_size);
      if (!zeroed) return zeroed.error();
      stats.bytes_zeroed += *zeroed;
    } else {
      for (const auto& r : ranges) stats.bytes_punched += r.length;
    }
    // The freed blocks return to the filesystem's free space at the journal commit fsync forces;
    // only then can they be trimmed.
    if (::fsync(fd) != 0) return ioError("Syncing", path, errno);
    for (const auto& r : ranges) {
      if (stats.trim_unsupported) break;
      fstrim_range range{r.start, r.length, 0};
      if (::ioctl(fd, FITRIM, &range) != 0) {
        // Not every filesystem or device can discard (tmpfs frees its pages on the punch; a
        // device without discard support keeps the blocks until they are overwritten).
        stats.trim_unsupported = true;
        break;
      }
      stats.bytes_trimmed += range.len;
    }
    return success();
  }
  auto zeroed = zeroAllocated(fd, path, st.st_size);
  if (!zeroed) return zeroed.error();
  stats.bytes_zeroed += *zeroed;
  if (::fsync(fd) != 0) return ioError("Syncing", path, errno);
  return success();
}

void add(ClearStats& total, const ClearStats& one) {
  total.files += one.files;
  total.bytes_zeroed += one.bytes_zeroed;
  total.bytes_punched += one.bytes_punched;
  total.bytes_trimmed += one.bytes_trimmed;
  total.trim_unsupported = total.trim_unsupported || one.trim_unsupported;
  total.skipped_linked += one.skipped_linked;
}

}  // namespace

std::optional<ClearMethod> clearMethodFromName(std::string_view name) {
  for (auto m : {ClearMethod::kNone, ClearMethod::kDiscard, ClearMethod::kZero}) {
    if (clearMethodName(m) == name) return m;
  }
  return std::nullopt;
}

std::string_view clearMethodName(ClearMethod method) {
  switch (method) {
    case ClearMethod::kNone:
      return "none";
    case ClearMethod::kDiscard:
      return "discard";
    case ClearMethod::kZero:
      return "zero";
  }
  return "none";
}

Result<ClearStats> clearFile(const std::string& path, ClearMethod method) {
  ClearStats stats;
  // O_NOFOLLOW: a symlink planted in place of a disk must not turn the clear onto another file.
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    // Gone already, a symlink, or a directory: nothing of a disk to clear here.
    if (errno == ENOENT || errno == ELOOP || errno == EISDIR) return stats;
    return ioError("Opening", path, errno);
  }
  if (auto r = clearOpenFile(fd.get(), path, method, stats); !r) return r.error();
  return stats;
}

Result<ClearStats> clearDirectory(const std::string& dir, ClearMethod method) {
  ClearStats total;
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) {
    if (errno == ENOENT) return total;
    return ioError("Listing", dir, errno);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d.get())) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  for (const auto& name : names) {
    auto one = clearFile(dir + "/" + name, method);
    if (!one) return one.error();
    add(total, *one);
  }
  return total;
}

}  // namespace kiln::drivers::disk
