#pragma once
// qemu-img, always with the format given explicitly and under resource limits: nova's lesson
// (CVE-2015-5162) is that a crafted image can make qemu-img spin or allocate without bound, and
// that a probed format lets a guest-written header change what a file is taken for.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/command_runner.h"

namespace kiln {

struct QemuImgLimits {
  ResourceLimits inspect{30, 1ULL << 30};    // info, create: nova's 30 s CPU and 1 GiB
  ResourceLimits convert{1800, 2ULL << 30};  // a large image takes long to copy; still bounded
};

struct QemuImgInfo {
  std::string format;
  std::uint64_t virtual_size = 0;
  std::optional<std::string> backing_filename;
  std::optional<std::string> data_file;
};

class QemuImg {
 public:
  explicit QemuImg(CommandRunner& runner, QemuImgLimits limits = {},
                   std::string binary = "qemu-img")
      : runner_(runner), limits_(limits), binary_(std::move(binary)) {}

  Result<QemuImgInfo> info(const std::string& path, const std::string& format);
  Result<void> create(const std::string& path, const std::string& format, std::uint64_t size_bytes,
                      const std::string& backing_path = "", const std::string& backing_format = "");
  // A new empty qcow2 encrypted with LUKS. qemu-img reads the passphrase from `secret_file`, so
  // it never appears on a command line; `encrypt_options` are qcow2's encrypt.* options
  // (cipher-alg, cipher-mode, ...) without the format and key-secret, which this sets.
  Result<void> createEncrypted(
      const std::string& path, std::uint64_t size_bytes, const std::string& secret_file,
      const std::vector<std::pair<std::string, std::string>>& encrypt_options);
  Result<void> convert(const std::string& src, const std::string& src_format,
                       const std::string& dst, const std::string& dst_format);
  // Copies a disk a running (paused) QEMU holds open: -U shares its lock; the chain's formats
  // come from the overlay's header, which kiln wrote with -F.
  Result<void> exportImage(const std::string& src, const std::string& src_format,
                           const std::string& dst, const std::string& dst_format);
  Result<void> resize(const std::string& path, const std::string& format, std::uint64_t size_bytes);

 private:
  Result<CommandOutput> run(std::vector<std::string> args, const ResourceLimits& limits);
  CommandRunner& runner_;
  QemuImgLimits limits_;
  std::string binary_;
};

}  // namespace kiln
