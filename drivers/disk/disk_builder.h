#pragma once
// Makes instance disks. The format is always given explicitly (-f, -F): a disk a guest can write
// to is never probed, since the guest could have written a qcow2 header into it.

#include <cstdint>
#include <string>

#include "common/qemu_img.h"

namespace kiln::drivers::disk {

// A LUKS cipher in QEMU's terms (qcow2's encrypt.* options).
struct LuksOptions {
  std::string cipher_alg = "aes-256";
  std::string cipher_mode = "xts";
  std::string ivgen_alg = "plain64";
  std::string ivgen_hash_alg;  // essiv only
};

// A fresh random passphrase of `bits` bits from the kernel's CSPRNG, as lower-case hex (QEMU
// takes a LUKS passphrase as text, as nova's hex-encoded keys are).
Result<std::string> newLuksPassphrase(unsigned bits);

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
  // A new empty qcow2 disk encrypted with LUKS under `passphrase` (UTF-8 text: QEMU reads a LUKS
  // passphrase as a string). The passphrase reaches qemu-img through a sealed memory-only file
  // (memfd) that it opens by its /proc path: never on a command line, never on a disk.
  Result<void> createEncryptedBlank(const std::string& path, std::uint64_t size_bytes,
                                    const LuksOptions& luks, const std::string& passphrase);
  // A standalone copy of a disk that a running (paused) guest holds open, e.g. for a snapshot.
  Result<void> exportDisk(const std::string& src, const std::string& src_format,
                          const std::string& dst, const std::string& dst_format);
  // The virtual size as qemu-img reports it, reading the file as `format`.
  Result<std::uint64_t> virtualSize(const std::string& path, const std::string& format);

 private:
  QemuImg& qemu_img_;
};

}  // namespace kiln::drivers::disk
