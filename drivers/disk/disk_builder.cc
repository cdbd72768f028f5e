#include "drivers/disk/disk_builder.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "common/fs.h"
#include "common/strings.h"
#include "common/unique_fd.h"

namespace kiln::drivers::disk {
namespace {

constexpr int kLuksIterTimeMs = 10;
constexpr int kLuksCreateAttempts = 20;

}  // namespace

Result<std::string> newLuksPassphrase(unsigned bits) {
  std::vector<unsigned char> raw(std::max(bits / 8, 16U));
  std::size_t got = 0;
  while (got < raw.size()) {
    ssize_t n = ::getrandom(raw.data() + got, raw.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::internal(
          fmt::format("Cannot draw a disk key from the kernel: {}", fs::errnoText(errno)));
    }
    got += static_cast<std::size_t>(n);
  }
  std::string hex = strings::hexEncode(raw);
  std::fill(raw.begin(), raw.end(), 0);
  return hex;
}

Result<void> DiskBuilder::createOverlay(const std::string& path, const std::string& base_path,
                                        const std::string& base_format, std::uint64_t size_bytes) {
  return qemu_img_.create(path, "qcow2", size_bytes, base_path, base_format);
}

Result<void> DiskBuilder::createCopy(const std::string& path, const std::string& base_path,
                                     const std::string& base_format, std::uint64_t size_bytes) {
  if (auto r = qemu_img_.convert(base_path, base_format, path, "qcow2"); !r) return r;
  return qemu_img_.resize(path, "qcow2", size_bytes);
}

Result<void> DiskBuilder::createBlank(const std::string& path, const std::string& format,
                                      std::uint64_t size_bytes) {
  return qemu_img_.create(path, format, size_bytes);
}

Result<void> DiskBuilder::createEncryptedBlank(const std::string& path, std::uint64_t size_bytes,
                                               const LuksOptions& luks,
                                               const std::string& passphrase) {
  if (passphrase.empty() || passphrase.find('\0') != std::string::npos) {
    return Error::internal("A LUKS passphrase must be non-empty text");
  }
  // Close-on-exec: only the qemu-img this call starts reads it, by path, while we hold it open.
  UniqueFd key(::memfd_create("kiln-luks-passphrase", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!key.valid()) {
    return Error::internal(
        fmt::format("Cannot make a memory file for a disk key: {}", fs::errnoText(errno)));
  }
  if (auto w = fs::writeAll(key.get(), passphrase, "memfd:kiln-luks-passphrase"); !w) return w;
  // Nobody (qemu-img included) may change the key while it is in use.
  ::fcntl(key.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  std::vector<std::pair<std::string, std::string>> options = {
      {"cipher-alg", luks.cipher_alg},
      {"cipher-mode", luks.cipher_mode},
      {"ivgen-alg", luks.ivgen_alg},
      // PBKDF2 stretching protects a guessable passphrase; this one is key_size random bits, so
      // the default 2 s of key derivation would only slow down every create and every start.
      {"iter-time", std::to_string(kLuksIterTimeMs)},
  };
  if (!luks.ivgen_hash_alg.empty()) options.emplace_back("ivgen-hash-alg", luks.ivgen_hash_alg);
  std::string key_path = fmt::format("/proc/{}/fd/{}", ::getpid(), key.get());
  Result<void> made = success();
  for (int attempt = 1; attempt <= kLuksCreateAttempts; ++attempt) {
    made = qemu_img_.createEncrypted(path, size_bytes, key_path, options);
    // QEMU's PBKDF2 benchmark (Debian 12's 7.2 backport of "run qcrypto_pbkdf2_count_iters in a
    // new thread") fails at random when its first round takes under a scheduler tick; the
    // upstream fix only makes it try again, so kiln does.
    if (made ||
        made.error().message.find("Unable to get accurate CPU usage") == std::string::npos) {
      break;
    }
  }
  return made;
}

Result<void> DiskBuilder::exportDisk(const std::string& src, const std::string& src_format,
                                     const std::string& dst, const std::string& dst_format) {
  return qemu_img_.exportImage(src, src_format, dst, dst_format);
}

Result<std::uint64_t> DiskBuilder::virtualSize(const std::string& path, const std::string& format) {
  auto info = qemu_img_.info(path, format);
  if (!info) return info.error();
  return info->virtual_size;
}

}  // namespace kiln::drivers::disk
