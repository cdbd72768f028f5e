#pragma once
// Makes instance disks. The format is always given explicitly (-f, -F): a disk a guest can write
// to is never probed, since the guest could have written a qcow2 header into it.

#include <cstdint>
#include <string>

#include "common/qemu_img.h"

namespace kiln::drivers::disk {

class DiskBuilder {
 public:
  explicit DiskBuilder(QemuImg& qemu_img) : qemu_img_(qemu_img) {}

  // A qcow2 file backed by `base_path` (whose format is `base_format`), `size_bytes` large.
  Result<void> createOverlay(const std::string& path, const std::string& base_path,
                             const std::string& base_format, std::uint64_t size_bytes);
  // A qcow2 file holding a full copy of the base, grown to `size_bytes` (use_cow_images=false).
  Result<void> createCopy(const std::string& path, const std::string& base_path,
                          const std::string& base_format, std::uint64_t size_bytes);
  // A new empty disk.
  Result<void> createBlank(const std::string& path, const std::string& format,
                           std::uint64_t size_bytes);
  // A standalone copy of a disk that a running (paused) guest holds open, e.g. for a snapshot.
  Result<void> exportDisk(const std::string& src, const std::string& src_format,
                          const std::string& dst, const std::string& dst_format);
  // The virtual size as qemu-img reports it, reading the file as `format`.
  Result<std::uint64_t> virtualSize(const std::string& path, const std::string& format);

 private:
  QemuImg& qemu_img_;
};

}  // namespace kiln::drivers::disk
