#pragma once
// Free space on state_path's filesystem, handed out by reservation. Image downloads and
// conversions, and disk creations, take what they will write before they write it, so two
// launches that each fit alone cannot both start when together they do not fit (a free-space
// check once per request lets both begin and fails one halfway, with ENOSPC). What the operator
// reserved for the database and the logs ([DEFAULT] reserved_host_disk_mb) is never handed out.

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kiln {

class DiskReserve {
 public:
  using FreeBytes = std::function<Result<std::uint64_t>(const std::string& path)>;
  // `free_bytes` reads what the filesystem has left (statvfs; a test's fake).
  DiskReserve(std::string path, std::uint64_t reserved_bytes, FreeBytes free_bytes);
  DiskReserve(std::string path, std::uint64_t reserved_bytes);

  // Bytes held for one writer, given back when it is destroyed (by then what it wrote is on the
  // filesystem, or was removed). Movable, not copyable.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& other) noexcept;
    Hold& operator=(Hold&& other) noexcept;
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold();
    // Holds `more` bytes beyond what it holds (a download whose size was not known).
    Result<void> grow(std::uint64_t more, std::string_view what);
    // `written` of the held bytes are on the filesystem now, so its free space counts them: the
    // hold shrinks by as much (never below zero), and nothing is counted twice.
    void landed(std::uint64_t written);
    std::uint64_t bytes() const { return bytes_; }
    void release();

   private:
    friend class DiskReserve;
    Hold(DiskReserve* owner, std::uint64_t bytes) : owner_(owner), bytes_(bytes) {}
    DiskReserve* owner_ = nullptr;
    std::uint64_t bytes_ = 0;
  };

  // `what` names the writer in the error ("image 'x'", "the root disk of instance 'u'").
  Result<Hold> take(std::uint64_t bytes, std::string_view what);
  std::uint64_t held() const;
  const std::string& path() const { return path_; }

 private:
  Result<void> admit(std::uint64_t bytes, std::string_view what);
  void giveBack(std::uint64_t bytes);

  const std::string path_;
  const std::uint64_t reserved_bytes_;
  const FreeBytes free_bytes_;
  mutable std::mutex mutex_;
  std::uint64_t held_ = 0;
};

}  // namespace kiln
