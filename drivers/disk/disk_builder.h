#pragma once
// Makes instance disks with qemu-img. The format is always given explicitly (-f, -F): a disk a
// guest can write to is never probed, since the guest could have written a qcow2 header into it.

#include <cstdint>
#include <string>

#include "common/command_runner.h"

namespace kiln::drivers::disk {

struct QemuImgOptions {
  std::string binary = "qemu-img";
  // As nova does with prlimit: qemu-img reading an image must not spin or allocate without bound.
  ResourceLimits limits{30, 1ULL << 30};
};

class DiskBuilder {
 public:
  DiskBuilder(CommandRunner& runner, QemuImgOptions options)
      : runner_(runner), options_(std::move(options)) {}

  // A qcow2 file backed by `base_path` (whose format is `base_format`), `size_bytes` large.
  Result<void> createOverlay(const std::string& path, const std::string& base_path,
                             const std::string& base_format, std::uint64_t size_bytes);
  // A new empty disk.
  Result<void> createBlank(const std::string& path, const std::string& format,
                           std::uint64_t size_bytes);
  // The virtual size as qemu-img reports it, reading the file as `format`.
  Result<std::uint64_t> virtualSize(const std::string& path, const std::string& format);

 private:
  Result<CommandOutput> qemuImg(std::vector<std::string> args);
  CommandRunner& runner_;
  QemuImgOptions options_;
};

}  // namespace kiln::drivers::disk
