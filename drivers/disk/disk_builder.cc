#include "drivers/disk/disk_builder.h"

namespace kiln::drivers::disk {

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
