#pragma once
// Disk image format detection and safety checks, done in kiln's own code before anything runs
// qemu-img on the bytes (after oslo.utils' format_inspector, which nova uses for the same job).
//
// Images are untrusted: whoever can upload one can try to make the compute host read its own
// files through it (a qcow2 whose backing file is /etc/shadow, a VMDK descriptor whose extent is
// a host device). qemu-img follows such references as soon as it opens the image, so the check
// cannot be delegated to it. The inspector reads only the headers it needs, bounds every read by
// a small constant, and refuses anything it does not fully understand.
//
// The verdict is only as good as the -f that follows it: callers must always pass
// qemuFormatName(info.format) to qemu-img and libvirt, never let them probe.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"
#include "common/unique_fd.h"

namespace kiln::imagecache {

enum class DiskFormat { kRaw, kQcow2, kVmdk, kVdi, kVhd, kVhdx, kIso, kGpt, kUnknown };

// The name Glance uses for the format ("vhd" for kVhd); kGpt is "gpt", a raw whole disk with a
// GUID partition table, which Glance calls "raw".
std::string_view diskFormatName(DiskFormat format);

// Glance's disk_format values that kiln can inspect. Others (ami, aki, ari, ploop, ...) give
// nullopt: there is no inspector for them, so they cannot be proven safe.
std::optional<DiskFormat> diskFormatFromGlance(std::string_view glance_disk_format);

// The -f argument for qemu-img and the libvirt <driver type=...>: "vpc" for kVhd, "raw" for
// kIso and kGpt. Empty for kUnknown.
std::string_view qemuFormatName(DiskFormat format);

struct ImageInfo {
  DiskFormat format = DiskFormat::kUnknown;
  std::uint64_t virtual_size = 0;  // bytes the guest sees, as qemu computes them
  std::uint64_t file_size = 0;
};

// Random-access reads, so the inspector works on a file, on a buffer (tests, fuzzing) and later
// on a download in progress.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual std::uint64_t size() const = 0;
  // Reads up to `len` bytes at `offset`; fewer only at the end of the source.
  virtual Result<std::size_t> readAt(std::uint64_t offset, void* buf, std::size_t len) const = 0;
};

class FileByteSource final : public ByteSource {
 public:
  // Refuses anything but a regular file: a device or FIFO has no trustworthy size.
  static Result<FileByteSource> open(const std::string& path);

  std::uint64_t size() const override { return size_; }
  Result<std::size_t> readAt(std::uint64_t offset, void* buf, std::size_t len) const override;

 private:
  FileByteSource(UniqueFd fd, std::uint64_t size, std::string path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}

  UniqueFd fd_;
  std::uint64_t size_;
  std::string path_;
};

// Does not own the bytes: they must outlive the source.
class BufferByteSource final : public ByteSource {
 public:
  BufferByteSource(const void* data, std::size_t len)
      : data_(static_cast<const unsigned char*>(data)), len_(len) {}
  explicit BufferByteSource(std::string_view bytes)
      : BufferByteSource(bytes.data(), bytes.size()) {}

  std::uint64_t size() const override { return len_; }
  Result<std::size_t> readAt(std::uint64_t offset, void* buf, std::size_t len) const override;

 private:
  const unsigned char* data_;
  std::size_t len_;
};

// Detects the format, runs its safety checks and compares it with the format the image record
// declares (nullopt: nothing declared, report what was found). Refusals are kInvalidArgument
// with a whole sentence, e.g. "Image is a qcow2 with a backing file ('/etc/passwd'); images with
// backing files are refused". A raw disk with a GPT that is declared raw is reported as kRaw.
Result<ImageInfo> inspectImage(const ByteSource& src, std::optional<DiskFormat> declared);
Result<ImageInfo> inspectImageFile(const std::string& path, std::optional<DiskFormat> declared);

}  // namespace kiln::imagecache
