#include "common/disk_reserve.h"

#include <fmt/format.h>

#include <utility>

#include "common/fs.h"

namespace kiln {

namespace {
constexpr std::uint64_t kMiB = 1024 * 1024;
}

DiskReserve::DiskReserve(std::string path, std::uint64_t reserved_bytes, FreeBytes free_bytes)
    : path_(std::move(path)), reserved_bytes_(reserved_bytes), free_bytes_(std::move(free_bytes)) {}

DiskReserve::DiskReserve(std::string path, std::uint64_t reserved_bytes)
    : DiskReserve(std::move(path), reserved_bytes,
                  [](const std::string& p) { return fs::freeBytes(p); }) {}

Result<void> DiskReserve::admit(std::uint64_t bytes, std::string_view what) {
  // Under mutex_: the filesystem's free space, less the operator's reserve, less what writers
  // that have not finished yet still hold.
  auto free = free_bytes_(path_);
  if (!free) return free.error();
  const std::uint64_t spoken_for = reserved_bytes_ + held_;
  const std::uint64_t usable = *free > spoken_for ? *free - spoken_for : 0;
  if (bytes > usable) {
    return Error::exhausted(fmt::format(
        "Not enough space in '{}' for {}: {} MiB needed, {} MiB free of which {} MiB are "
        "reserved for the host ([DEFAULT] reserved_host_disk_mb) and {} MiB held by other "
        "downloads and disks in progress",
        path_, what, (bytes + kMiB - 1) / kMiB, *free / kMiB, reserved_bytes_ / kMiB,
        held_ / kMiB));
  }
  held_ += bytes;
  return success();
}

Result<DiskReserve::Hold> DiskReserve::take(std::uint64_t bytes, std::string_view what) {
  std::lock_guard lock(mutex_);
  if (auto r = admit(bytes, what); !r) return r.error();
  return Hold(this, bytes);
}

std::uint64_t DiskReserve::held() const {
  std::lock_guard lock(mutex_);
  return held_;
}

void DiskReserve::Hold::landed(std::uint64_t written) {
  if (owner_ == nullptr) return;
  const std::uint64_t n = written < bytes_ ? written : bytes_;
  bytes_ -= n;
  owner_->giveBack(n);
}

void DiskReserve::giveBack(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  held_ -= bytes;
}

DiskReserve::Hold::Hold(Hold&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DiskReserve::Hold& DiskReserve::Hold::operator=(Hold&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DiskReserve::Hold::~Hold() { release(); }

void DiskReserve::Hold::release() {
  if (owner_ != nullptr && bytes_ > 0) owner_->giveBack(bytes_);
  owner_ = nullptr;
  bytes_ = 0;
}

Result<void> DiskReserve::Hold::grow(std::uint64_t more, std::string_view what) {
  if (owner_ == nullptr) return Error::internal("A released disk reservation cannot grow");
  std::lock_guard lock(owner_->mutex_);
  if (auto r = owner_->admit(more, what); !r) return r;
  bytes_ += more;
  return success();
}

}  // namespace kiln
