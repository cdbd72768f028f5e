#include "imagecache/format_inspector.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "common/fs.h"
#include "common/strings.h"

namespace kiln::imagecache {

std::string_view diskFormatName(DiskFormat format) {
  switch (format) {
    case DiskFormat::kRaw:
      return "raw";
    case DiskFormat::kQcow2:
      return "qcow2";
    case DiskFormat::kVmdk:
      return "vmdk";
    case DiskFormat::kVdi:
      return "vdi";
    case DiskFormat::kVhd:
      return "vhd";
    case DiskFormat::kVhdx:
      return "vhdx";
    case DiskFormat::kIso:
      return "iso";
    case DiskFormat::kGpt:
      return "gpt";
    case DiskFormat::kUnknown:
      return "unknown";
  }
  return "unknown";
}

std::optional<DiskFormat> diskFormatFromGlance(std::string_view glance_disk_format) {
  static constexpr std::pair<std::string_view, DiskFormat> kKnown[] = {
      {"raw", DiskFormat::kRaw}, {"qcow2", DiskFormat::kQcow2}, {"vmdk", DiskFormat::kVmdk},
      {"vdi", DiskFormat::kVdi}, {"vhd", DiskFormat::kVhd},     {"vhdx", DiskFormat::kVhdx},
      {"iso", DiskFormat::kIso},
  };
  for (const auto& [name, format] : kKnown) {
    if (name == glance_disk_format) return format;
  }
  return std::nullopt;
}

std::string_view qemuFormatName(DiskFormat format) {
  switch (format) {
    case DiskFormat::kRaw:
    case DiskFormat::kIso:
    case DiskFormat::kGpt:
      return "raw";
    case DiskFormat::kQcow2:
      return "qcow2";
    case DiskFormat::kVmdk:
      return "vmdk";
    case DiskFormat::kVdi:
      return "vdi";
    case DiskFormat::kVhd:
      return "vpc";
    case DiskFormat::kVhdx:
      return "vhdx";
    case DiskFormat::kUnknown:
      return "";
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Byte sources

Result<FileByteSource> FileByteSource::open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) {
    int err = errno;
    std::string message = fmt::format("Cannot open image '{}': {}", path, fs::errnoText(err));
    if (err == ENOENT) return Error::notFound(std::move(message));
    return Error::internal(std::move(message));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::internal(fmt::format("Cannot stat image '{}': {}", path, fs::errnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::invalid(fmt::format("Image '{}' is not a regular file", path));
  }
  return FileByteSource(std::move(fd), static_cast<std::uint64_t>(st.st_size), path);
}

Result<std::size_t> FileByteSource::readAt(std::uint64_t offset, void* buf, std::size_t len) const {
  auto* out = static_cast<unsigned char*>(buf);
  std::size_t done = 0;
  while (done < len) {
    std::uint64_t at = offset + done;
    if (at > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) break;
    ssize_t n = ::pread(fd_.get(), out + done, len - done, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::internal(
          fmt::format("Cannot read image '{}' at offset {}: {}", path_, at, fs::errnoText(errno)));
    }
    if (n == 0) break;  // end of file
    done += static_cast<std::size_t>(n);
  }
  return done;
}

Result<std::size_t> BufferByteSource::readAt(std::uint64_t offset, void* buf,
                                             std::size_t len) const {
  if (offset >= len_) return std::size_t{0};
  std::size_t n = std::min<std::uint64_t>(len, len_ - offset);
  if (n > 0) std::memcpy(buf, data_ + offset, n);
  return n;
}

namespace {

// Every read is bounded by this, whatever a header claims: a descriptor, a header extension
// area, a metadata table. Legitimate images need far less; a hostile one must not make kiln
// allocate gigabytes.
constexpr std::size_t kMaxRead = 64 * 1024;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;
constexpr std::uint64_t kGiB = 1024 * kMiB;
constexpr std::uint64_t kTiB = 1024 * kGiB;

Error refuse(std::string message) { return Error::invalid(std::move(message)); }

// A bounds-checked view of bytes read from the image. Loads outside the view return 0; callers
// check has() first wherever an offset comes from the image, so that fallback is a last line of
// defence and never the logic.
class View {
 public:
  View() = default;
  View(const unsigned char* data, std::size_t size) : data_(data), size_(size) {}
  explicit View(const std::vector<unsigned char>& bytes) : View(bytes.data(), bytes.size()) {}

  std::size_t size() const { return size_; }
  bool has(std::uint64_t offset, std::uint64_t len) const {
    return offset <= size_ && len <= size_ - offset;
  }
  std::uint64_t be(std::size_t offset, std::size_t width) const {
    if (!has(offset, width)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < width; ++i) v = (v << 8) | data_[offset + i];
    return v;
  }
  std::uint64_t le(std::size_t offset, std::size_t width) const {
    if (!has(offset, width)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = width; i > 0; --i) v = (v << 8) | data_[offset + i - 1];
    return v;
  }
  std::uint32_t be32(std::size_t offset) const { return static_cast<std::uint32_t>(be(offset, 4)); }
  std::uint64_t be64(std::size_t offset) const { return be(offset, 8); }
  std::uint16_t le16(std::size_t offset) const { return static_cast<std::uint16_t>(le(offset, 2)); }
  std::uint32_t le32(std::size_t offset) const { return static_cast<std::uint32_t>(le(offset, 4)); }
  std::uint64_t le64(std::size_t offset) const { return le(offset, 8); }
  unsigned char byte(std::size_t offset) const { return has(offset, 1) ? data_[offset] : 0; }
  bool matches(std::uint64_t offset, std::string_view magic) const {
    return has(offset, magic.size()) &&
           std::memcmp(data_ + offset, magic.data(), magic.size()) == 0;
  }
  std::string_view text(std::size_t offset, std::size_t len) const {
    if (!has(offset, len)) return {};
    return {reinterpret_cast<const char*>(data_ + offset), len};
  }
  View sub(std::size_t offset, std::size_t len) const {
    if (!has(offset, len)) return {};
    return {data_ + offset, len};
  }

 private:
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// Reads exactly `len` bytes (at most kMaxRead) or says which structure the file cuts off.
Result<std::vector<unsigned char>> readExact(const ByteSource& src, std::uint64_t offset,
                                             std::size_t len, std::string_view format,
                                             std::string_view what) {
  if (len > kMaxRead) {
    return Error::internal(
        fmt::format("Inspector asked for {} bytes of the {} {}", len, format, what));
  }
  std::uint64_t file_size = src.size();
  if (offset > file_size || len > file_size - offset) {
    return refuse(fmt::format(
        "Image is a truncated {}: its {} ({} bytes at offset {}) lies past the end of the "
        "{}-byte file",
        format, what, len, offset, file_size));
  }
  std::vector<unsigned char> bytes(len);
  Result<std::size_t> n = src.readAt(offset, bytes.data(), len);
  if (!n) return n.error();
  if (*n != len) {
    return refuse(fmt::format("Image is a truncated {}: its {} at offset {} is cut short", format,
                              what, offset));
  }
  return bytes;
}

// Reads up to `len` bytes (at most kMaxRead); fewer at the end of the file.
Result<std::vector<unsigned char>> readUpTo(const ByteSource& src, std::uint64_t offset,
                                            std::size_t len) {
  len = std::min(len, kMaxRead);
  std::uint64_t file_size = src.size();
  if (offset >= file_size) return std::vector<unsigned char>{};
  len = static_cast<std::size_t>(std::min<std::uint64_t>(len, file_size - offset));
  std::vector<unsigned char> bytes(len);
  Result<std::size_t> n = src.readAt(offset, bytes.data(), len);
  if (!n) return n.error();
  bytes.resize(*n);
  return bytes;
}

// A name taken from an image, fit to be quoted in an error message and a log line: printable
// ASCII only, at most 64 characters.
std::string sanitizeForMessage(std::string_view raw) { return strings::printableExcerpt(raw, 64); }

// fmt rather than "'" + s + "'": GCC 12 at -O3 warns falsely (-Wrestrict, GCC bug 105329) about
// the insert at the front that operator+(const char*, std::string&&) does.
std::string quoteForMessage(std::string_view raw) {
  return fmt::format("'{}'", sanitizeForMessage(raw));
}

std::string_view asText(const std::vector<unsigned char>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

using strings::equalsIgnoringCase;
using strings::findIgnoringCase;
using strings::trim;

// ---------------------------------------------------------------------------------------------
// qcow2 (big-endian; docs/interop/qcow2.txt in the QEMU tree)

constexpr std::string_view kQcowMagic{"QFI\xfb", 4};
constexpr std::uint64_t kQcowIncompatDirty = 1u << 0;
constexpr std::uint64_t kQcowIncompatCorrupt = 1u << 1;
constexpr std::uint64_t kQcowIncompatDataFile = 1u << 2;
constexpr std::uint64_t kQcowIncompatCompression = 1u << 3;
constexpr std::uint64_t kQcowIncompatExtendedL2 = 1u << 4;
constexpr std::uint64_t kQcowIncompatKnown = kQcowIncompatDirty | kQcowIncompatCorrupt |
                                             kQcowIncompatDataFile | kQcowIncompatCompression |
                                             kQcowIncompatExtendedL2;
constexpr std::uint32_t kQcowExtEnd = 0;
constexpr std::uint32_t kQcowExtDataFile = 0x44415441;
constexpr std::uint32_t kQcowExtCryptoHeader = 0x0537be77;
constexpr std::uint64_t kQcowMaxL1Bytes = 32 * kMiB;            // QCOW_MAX_L1_SIZE in QEMU
constexpr std::uint64_t kQcowMaxRefcountTableBytes = 8 * kMiB;  // QCOW_MAX_REFTABLE_SIZE
constexpr std::uint32_t kQcowMaxSnapshots = 65536;
constexpr std::size_t kQcowMaxBackingName = 1023;  // QEMU refuses longer names

// What the header extensions told us; the safety verdict is made by the caller.
struct Qcow2Extensions {
  std::optional<std::string> data_file;
  bool crypto_header = false;
};

Result<Qcow2Extensions> readQcow2Extensions(const ByteSource& src, std::uint64_t start,
                                            std::uint64_t cluster_size) {
  // QEMU reads extensions from the end of the header to the end of the first cluster; past the
  // end of the file it reads zeros, which is the end marker.
  std::uint64_t end = std::min(cluster_size, src.size());
  Qcow2Extensions found;
  if (start >= end) return found;
  std::uint64_t area = end - start;
  Result<std::vector<unsigned char>> bytes =
      readUpTo(src, start, static_cast<std::size_t>(std::min<std::uint64_t>(area, kMaxRead)));
  if (!bytes) return bytes.error();
  View v(*bytes);
  std::size_t pos = 0;
  while (true) {
    if (!v.has(pos, 8)) {
      if (v.size() < area) {
        return refuse(fmt::format(
            "Image is a qcow2 whose header extensions run past the first {} KiB; kiln cannot "
            "check them and refuses the image",
            kMaxRead / kKiB));
      }
      return found;  // the cluster ended; QEMU stops there too
    }
    std::uint32_t type = v.be32(pos);
    std::uint32_t len = v.be32(pos + 4);
    if (type == kQcowExtEnd) return found;
    pos += 8;
    if (!v.has(pos, len)) {
      if (pos + std::uint64_t{len} > area) {
        return refuse(fmt::format(
            "Image is a qcow2 whose header extension 0x{:08x} ({} bytes) runs past the first "
            "cluster",
            type, len));
      }
      return refuse(fmt::format(
          "Image is a qcow2 whose header extensions run past the first {} KiB; kiln cannot "
          "check them and refuses the image",
          kMaxRead / kKiB));
    }
    if (type == kQcowExtDataFile) found.data_file = std::string(v.text(pos, len));
    if (type == kQcowExtCryptoHeader) found.crypto_header = true;
    pos += (std::size_t{len} + 7) & ~std::size_t{7};
  }
}

Result<std::uint64_t> inspectQcow2(const ByteSource& src) {
  const std::uint64_t file_size = src.size();
  Result<std::vector<unsigned char>> v2 = readExact(src, 0, 72, "qcow2", "header");
  if (!v2) return v2.error();
  View h(*v2);

  const std::uint32_t version = h.be32(4);
  if (version != 2 && version != 3) {
    return refuse(fmt::format(
        "Image is a qcow version {} image; only qcow2 versions 2 and 3 are accepted", version));
  }
  const std::uint32_t cluster_bits = h.be32(20);
  if (cluster_bits < 9 || cluster_bits > 21) {
    return refuse(fmt::format("Image is a qcow2 with cluster_bits {}; it must be between 9 and 21",
                              cluster_bits));
  }
  const std::uint64_t cluster_size = std::uint64_t{1} << cluster_bits;

  std::uint64_t header_length = 72;
  std::uint64_t incompatible = 0;
  std::uint32_t refcount_order = 4;
  std::vector<unsigned char> v3_bytes;
  if (version == 3) {
    Result<std::vector<unsigned char>> v3 = readExact(src, 0, 105, "qcow2", "version 3 header");
    if (!v3) {
      // A v3 header is at least 104 bytes; the compression type byte is optional.
      v3 = readExact(src, 0, 104, "qcow2", "version 3 header");
      if (!v3) return v3.error();
    }
    v3_bytes = std::move(*v3);
    View h3(v3_bytes);
    incompatible = h3.be64(72);
    refcount_order = h3.be32(96);
    header_length = h3.be32(100);
    if (header_length < 104 || header_length % 8 != 0 || header_length > cluster_size) {
      return refuse(fmt::format(
          "Image is a qcow2 with header_length {}; version 3 needs at least 104, a multiple of "
          "8, within the first cluster",
          header_length));
    }
    if (refcount_order > 6) {
      return refuse(fmt::format(
          "Image is a qcow2 with refcount_order {}; the largest valid value is 6", refcount_order));
    }
  }

  // Backing files first: they are what an attacker wants.
  const std::uint64_t backing_offset = h.be64(8);
  const std::uint32_t backing_size = h.be32(16);
  if (backing_offset != 0 || backing_size != 0) {
    std::string name = "name unreadable";
    std::size_t want = std::min<std::size_t>(backing_size, kQcowMaxBackingName);
    if (backing_offset != 0 && want > 0) {
      Result<std::vector<unsigned char>> raw = readUpTo(src, backing_offset, want);
      if (raw && !raw->empty()) {
        name = quoteForMessage(asText(*raw));
      }
    }
    return refuse(fmt::format(
        "Image is a qcow2 with a backing file ({}); images with backing files are refused", name));
  }

  Result<Qcow2Extensions> ext = readQcow2Extensions(src, header_length, cluster_size);
  if (!ext) return ext.error();
  if ((incompatible & kQcowIncompatDataFile) != 0 || ext->data_file) {
    std::string name = ext->data_file ? quoteForMessage(*ext->data_file) : "name not given";
    return refuse(fmt::format(
        "Image is a qcow2 with an external data file ({}); images with external data files are "
        "refused",
        name));
  }
  const std::uint32_t crypt_method = h.be32(32);
  if (crypt_method != 0 || ext->crypto_header) {
    return refuse(
        fmt::format("Image is an encrypted qcow2 (crypt_method {}); encrypted images are refused",
                    crypt_method));
  }
  if ((incompatible & kQcowIncompatCorrupt) != 0) {
    return refuse("Image is a qcow2 whose header marks it corrupt; it is refused");
  }
  if ((incompatible & ~kQcowIncompatKnown) != 0) {
    return refuse(fmt::format(
        "Image is a qcow2 with unknown incompatible feature bits (0x{:x}); it is refused",
        incompatible & ~kQcowIncompatKnown));
  }
  // Compression type: 0 (zlib) unless the feature bit says the byte at 104 is meaningful, and
  // then only the two types QEMU knows.
  {
    View h3(v3_bytes);
    bool has_type_byte = header_length > 104 && h3.has(104, 1);
    unsigned type = has_type_byte ? h3.byte(104) : 0;
    if ((incompatible & kQcowIncompatCompression) != 0) {
      if (!has_type_byte || type > 1) {
        return refuse(fmt::format(
            "Image is a qcow2 with compression type {}; only zlib (0) and zstd (1) are known",
            type));
      }
    } else if (type != 0) {
      return refuse(fmt::format(
          "Image is a qcow2 with compression type {} but without the compression feature bit",
          type));
    }
  }

  // Sizes and tables: enough for QEMU to open the image without trusting a wild number.
  const std::uint64_t virtual_size = h.be64(24);
  const std::uint32_t l1_size = h.be32(36);
  const std::uint64_t l1_offset = h.be64(40);
  const bool extended_l2 = (incompatible & kQcowIncompatExtendedL2) != 0;
  const std::uint64_t l2_entries = cluster_size / (extended_l2 ? 16 : 8);
  const std::uint64_t bytes_per_l1_entry = cluster_size * l2_entries;  // at most 2^39
  const std::uint64_t l1_needed =
      virtual_size / bytes_per_l1_entry + (virtual_size % bytes_per_l1_entry != 0 ? 1 : 0);
  if (std::uint64_t{l1_size} * 8 > kQcowMaxL1Bytes) {
    return refuse(fmt::format(
        "Image is a qcow2 with an L1 table of {} entries, more than QEMU accepts", l1_size));
  }
  if (l1_needed > l1_size) {
    return refuse(fmt::format(
        "Image is a qcow2 whose L1 table ({} entries) is too small for its virtual size of {} "
        "bytes",
        l1_size, virtual_size));
  }
  if (l1_size > 0) {
    if (l1_offset % cluster_size != 0 || l1_offset > file_size ||
        std::uint64_t{l1_size} * 8 > file_size - l1_offset) {
      return refuse(fmt::format(
          "Image is a qcow2 whose L1 table (offset {}, {} entries) is misaligned or lies past "
          "the end of the {}-byte file",
          l1_offset, l1_size, file_size));
    }
  }
  const std::uint64_t refcount_offset = h.be64(48);
  const std::uint32_t refcount_clusters = h.be32(56);
  if (refcount_clusters == 0 || refcount_offset == 0 || refcount_offset % cluster_size != 0 ||
      refcount_offset >= file_size ||
      std::uint64_t{refcount_clusters} * cluster_size > kQcowMaxRefcountTableBytes) {
    return refuse(fmt::format(
        "Image is a qcow2 whose refcount table (offset {}, {} clusters) is missing, misaligned, "
        "too large or past the end of the file",
        refcount_offset, refcount_clusters));
  }
  const std::uint32_t nb_snapshots = h.be32(60);
  const std::uint64_t snapshots_offset = h.be64(64);
  if (nb_snapshots > kQcowMaxSnapshots ||
      (nb_snapshots > 0 &&
       (snapshots_offset % cluster_size != 0 || snapshots_offset >= file_size))) {
    return refuse(
        fmt::format("Image is a qcow2 whose snapshot table ({} snapshots at offset {}) is invalid",
                    nb_snapshots, snapshots_offset));
  }
  return virtual_size;
}

// ---------------------------------------------------------------------------------------------
// vmdk (little-endian sparse extent header; VMware "Virtual Disk Format 1.1")

constexpr std::string_view kVmdk4Magic = "KDMV";
constexpr std::string_view kVmdk3Magic = "COWD";
constexpr std::uint64_t kVmdkGdAtEnd = ~std::uint64_t{0};
constexpr std::size_t kVmdkQemuDescWindow = 20 * 512;  // DESC_SIZE in QEMU's vmdk.c

// QEMU's probe accepts a text descriptor that starts, after comments and blank lines, with
// "version=N"; VMware's files start with "# Disk DescriptorFile". Either is a descriptor.
bool looksLikeVmdkDescriptor(View head) {
  std::string_view text = head.text(0, std::min<std::size_t>(head.size(), 2048));
  if (text.starts_with("# Disk DescriptorFile")) return true;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    std::string_view line =
        text.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    if (line.starts_with("#")) {
      if (eol == std::string_view::npos) return false;
      pos = eol + 1;
      continue;
    }
    if (line.find_first_not_of(" \r") == std::string_view::npos && eol != std::string_view::npos) {
      pos = eol + 1;
      continue;
    }
    return line.starts_with("version=1") || line.starts_with("version=2") ||
           line.starts_with("version=3");
  }
  return false;
}

struct VmdkHeader {
  std::uint32_t version = 0;
  std::uint32_t flags = 0;
  std::uint64_t capacity = 0;  // sectors
  std::uint64_t granularity = 0;
  std::uint64_t desc_offset = 0;  // sectors
  std::uint64_t desc_size = 0;    // sectors
  std::uint32_t num_gtes_per_gt = 0;
  std::uint64_t gd_offset = 0;
  std::uint64_t grain_offset = 0;
};

// `v` starts at the magic.
VmdkHeader parseVmdkHeader(View v) {
  VmdkHeader h;
  h.version = v.le32(4);
  h.flags = v.le32(8);
  h.capacity = v.le64(12);
  h.granularity = v.le64(20);
  h.desc_offset = v.le64(28);
  h.desc_size = v.le64(36);
  h.num_gtes_per_gt = v.le32(44);
  h.gd_offset = v.le64(56);
  h.grain_offset = v.le64(64);
  return h;
}

// The embedded descriptor of a monolithic sparse file is mostly decoration: QEMU ignores its
// extent lines when the header has a capacity. It is still parsed strictly, so that a file that
// would mean something else to another reader (or to QEMU with capacity 0) is refused.
Result<void> checkVmdkDescriptor(std::string_view desc) {
  std::size_t nul = desc.find('\0');
  if (nul != std::string_view::npos) desc = desc.substr(0, nul);
  for (char c : desc) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 || u >= 0x7f) && c != '\n' && c != '\r' && c != '\t') {
      return refuse("Image is a vmdk whose embedded descriptor contains bytes that are not text");
    }
  }
  std::optional<std::string_view> create_type;
  int extents = 0;
  std::size_t pos = 0;
  while (pos <= desc.size()) {
    std::size_t eol = desc.find('\n', pos);
    if (eol == std::string_view::npos) eol = desc.size();
    std::string_view line = trim(desc.substr(pos, eol - pos));
    pos = eol + 1;
    if (line.empty() || line.starts_with("#")) continue;
    if (line.size() >= 4 && equalsIgnoringCase(line.substr(0, 4), "ddb.")) continue;

    std::size_t eq = line.find('=');
    std::size_t space = line.find_first_of(" \t");
    if (eq != std::string_view::npos && (space == std::string_view::npos || space > eq)) {
      std::string_view key = trim(line.substr(0, eq));
      std::string_view value = trim(line.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      if (equalsIgnoringCase(key, "createType")) create_type = value;
      continue;
    }

    std::string_view access = line.substr(0, space);
    if (equalsIgnoringCase(access, "RW") || equalsIgnoringCase(access, "RDONLY") ||
        equalsIgnoringCase(access, "NOACCESS")) {
      ++extents;
      // <access> <sectors> <type> "<file name>" [offset]
      std::size_t q1 = line.find('"');
      std::size_t q2 = q1 == std::string_view::npos ? q1 : line.find('"', q1 + 1);
      if (q2 == std::string_view::npos) {
        return refuse(fmt::format(
            "Image is a vmdk whose embedded descriptor has a malformed extent line ('{}')",
            sanitizeForMessage(line)));
      }
      std::string_view file = line.substr(q1 + 1, q2 - q1 - 1);
      std::string_view middle = trim(line.substr(space, q1 - space));
      std::size_t type_at = middle.find_last_of(" \t");
      std::string_view type =
          type_at == std::string_view::npos ? std::string_view{} : middle.substr(type_at + 1);
      if (!equalsIgnoringCase(type, "SPARSE")) {
        return refuse(fmt::format(
            "Image is a vmdk whose embedded descriptor has a '{}' extent; only a single SPARSE "
            "extent in the same file is accepted",
            sanitizeForMessage(type)));
      }
      // A bare file name is the file itself (QEMU writes its own name there); anything with a
      // directory part points elsewhere.
      if (file.empty() || file.find_first_of("/\\") != std::string_view::npos || file == "." ||
          file == "..") {
        return refuse(fmt::format(
            "Image is a vmdk whose embedded descriptor points at another file ('{}'); images "
            "that reference other files are refused",
            sanitizeForMessage(file)));
      }
      continue;
    }
    return refuse(fmt::format(
        "Image is a vmdk whose embedded descriptor has a line kiln does not understand ('{}')",
        sanitizeForMessage(line)));
  }
  if (!create_type) {
    return refuse("Image is a vmdk whose embedded descriptor has no createType");
  }
  if (!equalsIgnoringCase(*create_type, "monolithicSparse") &&
      !equalsIgnoringCase(*create_type, "streamOptimized")) {
    return refuse(fmt::format(
        "Image is a vmdk of createType '{}'; only monolithicSparse and streamOptimized are "
        "accepted",
        sanitizeForMessage(*create_type)));
  }
  if (extents > 1) {
    return refuse(fmt::format(
        "Image is a vmdk whose embedded descriptor lists {} extents; only a single extent in the "
        "same file is accepted",
        extents));
  }
  return success();
}

Result<std::uint64_t> inspectVmdk(const ByteSource& src, View head) {
  if (head.matches(0, kVmdk3Magic)) {
    return refuse(
        "Image is a VMDK3 (COWD) sparse extent; only monolithicSparse and streamOptimized vmdk "
        "images are accepted");
  }
  if (!head.matches(0, kVmdk4Magic)) {
    return refuse(
        "Image is a vmdk descriptor file, which keeps its data in other files; only "
        "monolithicSparse and streamOptimized vmdk images are accepted");
  }
  const std::uint64_t file_size = src.size();
  Result<std::vector<unsigned char>> first = readExact(src, 0, 512, "vmdk", "header");
  if (!first) return first.error();
  const VmdkHeader primary = parseVmdkHeader(View(*first));

  // With capacity 0 QEMU treats the embedded descriptor as a descriptor file and opens the
  // extents it names: the classic way to make qemu-img read a host file.
  if (primary.capacity == 0) {
    return refuse(
        "Image is a vmdk sparse extent with a capacity of 0, which makes QEMU open the files its "
        "descriptor names; it is refused");
  }

  VmdkHeader header = primary;
  if (primary.gd_offset == kVmdkGdAtEnd) {
    // streamOptimized files written by VMware keep the real header in a footer: a footer
    // marker, the header, an end-of-stream marker, in the last three sectors.
    if (file_size < 512 + 1536) {
      return refuse("Image is a truncated vmdk: its footer is missing");
    }
    Result<std::vector<unsigned char>> footer =
        readExact(src, file_size - 1536, 1536, "vmdk", "footer");
    if (!footer) return footer.error();
    View f(*footer);
    bool valid = f.le32(8) == 0 && f.le32(12) == 3 /* footer marker */ &&
                 f.matches(512, kVmdk4Magic) && f.le64(1024) == 0 && f.le32(1032) == 0 &&
                 f.le32(1036) == 0 /* end of stream */;
    if (!valid) return refuse("Image is a vmdk whose footer is invalid");
    header = parseVmdkHeader(f.sub(512, 512));
    if (header.capacity == 0) {
      return refuse("Image is a vmdk whose footer declares a capacity of 0");
    }
  }

  if (header.version < 1 || header.version > 3) {
    return refuse(fmt::format("Image is a vmdk with version {}; only versions 1 to 3 are accepted",
                              header.version));
  }
  if (header.num_gtes_per_gt == 0 || header.num_gtes_per_gt > 512 || header.granularity == 0 ||
      header.granularity > 0x200000) {
    return refuse(fmt::format(
        "Image is a vmdk with an invalid grain layout ({} grain table entries, grains of {} "
        "sectors)",
        header.num_gtes_per_gt, header.granularity));
  }
  const std::uint64_t l1_entry_sectors = header.num_gtes_per_gt * header.granularity;
  if (header.capacity > std::numeric_limits<std::uint64_t>::max() / 512 ||
      header.capacity / l1_entry_sectors > 32 * kMiB) {
    return refuse(
        fmt::format("Image is a vmdk with an implausible capacity of {} sectors", header.capacity));
  }
  if (header.grain_offset > file_size / 512) {
    return refuse(fmt::format(
        "Image is a truncated vmdk: its grains start at sector {} but the file has {} bytes",
        header.grain_offset, file_size));
  }

  // QEMU reads the embedded descriptor at sector 1 whatever the header says, so kiln insists
  // that the header agrees.
  if (primary.desc_offset == 0 || primary.desc_size == 0) {
    return refuse("Image is a vmdk with no embedded descriptor; it is refused");
  }
  if (primary.desc_offset != 1) {
    return refuse(
        fmt::format("Image is a vmdk whose embedded descriptor is at sector {} instead of 1",
                    primary.desc_offset));
  }
  if (primary.desc_size > kMaxRead / 512) {
    return refuse(fmt::format(
        "Image is a vmdk whose embedded descriptor is {} sectors long, more than kiln reads",
        primary.desc_size));
  }
  const std::size_t desc_len = static_cast<std::size_t>(primary.desc_size) * 512;
  Result<std::vector<unsigned char>> desc = readExact(src, 512, desc_len, "vmdk", "descriptor");
  if (!desc) return desc.error();

  // QEMU looks for a parent anywhere in the 10 KiB after sector 1, even beyond the descriptor.
  Result<std::vector<unsigned char>> window =
      readUpTo(src, 512, std::max(desc_len, kVmdkQemuDescWindow));
  if (!window) return window.error();
  std::string_view window_text = asText(*window);
  constexpr std::string_view kParentKey = "parentFileNameHint";
  if (std::size_t at = findIgnoringCase(window_text, kParentKey); at != std::string_view::npos) {
    std::string_view rest = window_text.substr(at + kParentKey.size());
    std::string name = "name unreadable";
    if (std::size_t q1 = rest.find('"'); q1 != std::string_view::npos) {
      std::size_t q2 = rest.find_first_of("\"\n", q1 + 1);  // npos: up to the end of the window
      name = quoteForMessage(rest.substr(q1 + 1, q2 - q1 - 1));
    }
    return refuse(fmt::format(
        "Image is a vmdk with a parent disk ({}); images with backing files are refused", name));
  }

  Result<void> checked = checkVmdkDescriptor(asText(*desc));
  if (!checked) return checked.error();
  return header.capacity * 512;
}

// ---------------------------------------------------------------------------------------------
// vdi (little-endian; QEMU's block/vdi.c)

constexpr std::uint32_t kVdiSignature = 0xbeda107f;
constexpr std::uint32_t kVdiVersion11 = 0x00010001;

bool isZero(View v) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v.byte(i) != 0) return false;
  }
  return true;
}

Result<std::uint64_t> inspectVdi(const ByteSource& src) {
  Result<std::vector<unsigned char>> bytes = readExact(src, 0, 512, "vdi", "header");
  if (!bytes) return bytes.error();
  View h(*bytes);
  const std::uint32_t version = h.le32(0x44);
  if (version != kVdiVersion11) {
    return refuse(
        fmt::format("Image is a vdi with version 0x{:08x}; only 1.1 is accepted", version));
  }
  const std::uint32_t image_type = h.le32(0x4c);
  if (image_type != 1 && image_type != 2) {
    return refuse(fmt::format(
        "Image is a vdi of type {}; only dynamic (1) and static (2) images are accepted",
        image_type));
  }
  // A link or parent UUID makes the image a difference image over another file.
  if (!isZero(h.sub(0x1a8, 16)) || !isZero(h.sub(0x1b8, 16))) {
    return refuse(
        "Image is a vdi that refers to a parent image; images with backing files are refused");
  }
  const std::uint32_t offset_bmap = h.le32(0x154);
  const std::uint32_t offset_data = h.le32(0x158);
  const std::uint32_t sector_size = h.le32(0x168);
  const std::uint64_t disk_size = h.le64(0x170);
  const std::uint32_t block_size = h.le32(0x178);
  const std::uint32_t blocks_in_image = h.le32(0x180);
  if (sector_size != 512 || block_size != kMiB || offset_bmap % 512 != 0 ||
      offset_data % 512 != 0) {
    return refuse(
        fmt::format("Image is a vdi with an unsupported layout (sector size {}, block size {})",
                    sector_size, block_size));
  }
  if (blocks_in_image > 0x3fffffff || disk_size > std::uint64_t{blocks_in_image} * block_size) {
    return refuse(fmt::format("Image is a vdi whose disk size {} does not fit its {} blocks",
                              disk_size, blocks_in_image));
  }
  const std::uint64_t file_size = src.size();
  if (offset_bmap > file_size || std::uint64_t{blocks_in_image} * 4 > file_size - offset_bmap ||
      offset_data > file_size) {
    return refuse("Image is a truncated vdi: its block map or data lie past the end of the file");
  }
  // QEMU rounds sizes that are not whole sectors up.
  return (disk_size + 511) / 512 * 512;
}

// ---------------------------------------------------------------------------------------------
// vhd, "vpc" to QEMU (big-endian footer; QEMU's block/vpc.c)

constexpr std::string_view kVhdCookie = "conectix";
constexpr std::uint32_t kVhdFixed = 2;
constexpr std::uint32_t kVhdDynamic = 3;
constexpr std::uint32_t kVhdDifferencing = 4;
constexpr std::uint64_t kVhdMaxSectors = 0xff000000;  // 2040 GiB
constexpr std::uint64_t kVhdMaxGeometry = 65535ull * 16 * 255;

Result<std::uint64_t> inspectVhd(const ByteSource& src, bool footer_at_start) {
  const std::uint64_t file_size = src.size();
  // QEMU decides "dynamic" by finding the footer copy at the start, "fixed" by finding it only
  // at the end; the type field must agree with that.
  Result<std::vector<unsigned char>> bytes =
      readExact(src, footer_at_start ? 0 : file_size - 512, 512, "vhd", "footer");
  if (!bytes) return bytes.error();
  View f(*bytes);

  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 512; ++i) {
    if (i < 64 || i >= 68) sum += f.byte(i);
  }
  if (~sum != f.be32(64)) return refuse("Image is a vhd whose footer checksum is wrong");

  const std::uint32_t type = f.be32(60);
  if (type == kVhdDifferencing) {
    return refuse(
        "Image is a differencing vhd, which refers to a parent disk; images with backing files "
        "are refused");
  }
  if (type != (footer_at_start ? kVhdDynamic : kVhdFixed)) {
    return refuse(fmt::format("Image is a vhd of disk type {} with its footer at the {}", type,
                              footer_at_start ? "start" : "end"));
  }

  // Virtual PC and QEMU's old writer size the disk by its CHS geometry; Hyper-V and others by
  // current_size. QEMU picks by creator application, and so must kiln to agree with it.
  std::uint64_t sectors =
      std::uint64_t{static_cast<std::uint16_t>(f.be(56, 2))} * f.byte(58) * f.byte(59);
  std::string_view creator = f.text(28, 4);
  bool use_current_size = creator == "win " || creator == "qem2" || creator == "d2v " ||
                          creator == "CTXS" || creator == std::string_view("tap\0", 4);
  if (use_current_size || sectors == kVhdMaxGeometry) sectors = f.be64(48) / 512;
  if (sectors > kVhdMaxSectors) {
    return refuse(
        fmt::format("Image is a vhd of {} sectors, more than the 2040 GiB VHD limit", sectors));
  }
  const std::uint64_t virtual_size = sectors * 512;

  if (footer_at_start) {
    const std::uint64_t dyn_offset = f.be64(16);
    Result<std::vector<unsigned char>> dyn =
        readExact(src, dyn_offset, 1024, "vhd", "dynamic disk header");
    if (!dyn) return dyn.error();
    View d(*dyn);
    if (!d.matches(0, "cxsparse")) {
      return refuse("Image is a vhd whose dynamic disk header has no 'cxsparse' cookie");
    }
    const std::uint64_t table_offset = d.be64(16);
    const std::uint32_t max_entries = d.be32(28);
    const std::uint32_t block_size = d.be32(32);
    if (block_size < 512 || (block_size & (block_size - 1)) != 0) {
      return refuse(fmt::format("Image is a vhd with an invalid block size of {}", block_size));
    }
    if (virtual_size / block_size > 0xffffffffu ||
        std::uint64_t{max_entries} * block_size < virtual_size || max_entries > 0x1fffffff) {
      return refuse(fmt::format(
          "Image is a vhd whose block table ({} entries) does not match its size", max_entries));
    }
    if (table_offset > file_size || std::uint64_t{max_entries} * 4 > file_size - table_offset) {
      return refuse("Image is a truncated vhd: its block table lies past the end of the file");
    }
  }
  return virtual_size;
}

// ---------------------------------------------------------------------------------------------
// vhdx (little-endian; [MS-VHDX])

using Guid = std::array<unsigned char, 16>;

// "2FA54224-CD1B-4876-B211-5DBED83BF4B8" to the on-disk bytes: the first three groups are
// little-endian, the last two are stored as written.
constexpr Guid guidFromText(std::string_view s) {
  auto byteAt = [&](std::size_t i) {
    return static_cast<unsigned char>(strings::hexDigitValue(s[i]) << 4 |
                                      strings::hexDigitValue(s[i + 1]));
  };
  Guid g{};
  constexpr std::size_t kTextAt[16] = {6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34};
  for (std::size_t i = 0; i < 16; ++i) g[i] = byteAt(kTextAt[i]);
  return g;
}

std::string guidText(View g) {
  return fmt::format("{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
                     g.le32(0), g.le16(4), g.le16(6), g.byte(8), g.byte(9), g.byte(10), g.byte(11),
                     g.byte(12), g.byte(13), g.byte(14), g.byte(15));
}

bool isGuid(View v, std::size_t offset, const Guid& g) {
  return v.matches(offset, std::string_view(reinterpret_cast<const char*>(g.data()), g.size()));
}

constexpr Guid kVhdxBatRegion = guidFromText("2DC27766-F623-4200-9D64-115E9BFD4A08");
constexpr Guid kVhdxMetadataRegion = guidFromText("8B7CA206-4790-4B9A-B8FE-575F050F886E");
constexpr Guid kVhdxFileParameters = guidFromText("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
constexpr Guid kVhdxVirtualDiskSize = guidFromText("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
constexpr Guid kVhdxPage83Data = guidFromText("BECA12AB-B2E6-4523-93EF-C309E000C746");
constexpr Guid kVhdxLogicalSectorSize = guidFromText("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
constexpr Guid kVhdxPhysicalSectorSize = guidFromText("CDA348C7-445D-4471-9CC9-E9885251C556");
constexpr Guid kVhdxParentLocator = guidFromText("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
constexpr std::uint64_t kVhdxRegionTableOffset = 192 * kKiB;
constexpr std::size_t kVhdxTableSize = 64 * kKiB;
constexpr std::uint64_t kVhdxMaxVirtualSize = 64 * kTiB;

// CRC-32C (Castagnoli), which VHDX uses for its headers and region tables.
constexpr std::array<std::uint32_t, 256> makeCrc32cTable() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr auto kCrc32cTable = makeCrc32cTable();

// The checksum field (4 bytes at `checksum_at`) counts as zero.
std::uint32_t crc32c(View v, std::size_t checksum_at) {
  std::uint32_t crc = 0xffffffffu;
  for (std::size_t i = 0; i < v.size(); ++i) {
    unsigned char b = (i >= checksum_at && i < checksum_at + 4) ? 0 : v.byte(i);
    crc = kCrc32cTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  }
  return ~crc;
}

Result<std::uint64_t> inspectVhdx(const ByteSource& src) {
  const std::uint64_t file_size = src.size();
  Result<std::vector<unsigned char>> headers = readExact(src, 64 * kKiB, 4, "vhdx", "header");
  Result<std::vector<unsigned char>> headers2 = readExact(src, 128 * kKiB, 4, "vhdx", "header");
  if ((!headers || !View(*headers).matches(0, "head")) &&
      (!headers2 || !View(*headers2).matches(0, "head"))) {
    return refuse("Image is a vhdx with no valid header; could not determine virtual size");
  }

  // QEMU reads only the first region table and insists on its checksum; so does kiln.
  Result<std::vector<unsigned char>> table =
      readExact(src, kVhdxRegionTableOffset, kVhdxTableSize, "vhdx", "region table");
  if (!table) return table.error();
  View rt(*table);
  if (!rt.matches(0, "regi") || crc32c(rt, 4) != rt.le32(4)) {
    return refuse(
        "Image is a vhdx whose region table is invalid; could not determine virtual size");
  }
  const std::uint32_t region_count = rt.le32(8);
  if (region_count > 2047) {
    return refuse(
        fmt::format("Image is a vhdx with {} regions; at most 2047 are valid", region_count));
  }
  std::optional<std::uint64_t> meta_offset;
  std::uint64_t meta_length = 0;
  for (std::uint32_t i = 0; i < region_count; ++i) {
    const std::size_t at = 16 + std::size_t{i} * 32;
    const bool required = (rt.le32(at + 28) & 1) != 0;
    if (isGuid(rt, at, kVhdxMetadataRegion)) {
      if (meta_offset) return refuse("Image is a vhdx with two metadata regions");
      meta_offset = rt.le64(at + 16);
      meta_length = rt.le32(at + 24);
    } else if (!isGuid(rt, at, kVhdxBatRegion) && required) {
      return refuse(fmt::format("Image is a vhdx that requires an unknown region {}",
                                guidText(rt.sub(at, 16))));
    }
  }
  if (!meta_offset) {
    return refuse("Image is a vhdx without a metadata region; could not determine virtual size");
  }
  if (*meta_offset % kMiB != 0 || meta_length < kVhdxTableSize || meta_length % kMiB != 0 ||
      *meta_offset > file_size || meta_length > file_size - *meta_offset) {
    return refuse(fmt::format(
        "Image is a vhdx whose metadata region (offset {}, {} bytes) is misaligned or lies past "
        "the end of the file",
        *meta_offset, meta_length));
  }

  Result<std::vector<unsigned char>> meta_bytes =
      readExact(src, *meta_offset, kVhdxTableSize, "vhdx", "metadata table");
  if (!meta_bytes) return meta_bytes.error();
  View mt(*meta_bytes);
  if (!mt.matches(0, "metadata")) {
    return refuse("Image is a vhdx whose metadata table has no signature");
  }
  const std::uint16_t entry_count = mt.le16(10);
  if (entry_count > 2047) {
    return refuse(fmt::format("Image is a vhdx with {} metadata entries; at most 2047 are valid",
                              entry_count));
  }

  struct Item {
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
  };
  std::optional<Item> size_item;
  std::optional<Item> params_item;
  for (std::uint16_t i = 0; i < entry_count; ++i) {
    const std::size_t at = 32 + std::size_t{i} * 32;
    const Item item{mt.le32(at + 16), mt.le32(at + 20)};
    const bool required = (mt.le32(at + 24) & 4) != 0;
    if (item.length > 0 && (item.offset < kVhdxTableSize || item.offset > meta_length ||
                            item.length > meta_length - item.offset)) {
      return refuse(fmt::format("Image is a vhdx whose metadata item {} lies outside its region",
                                guidText(mt.sub(at, 16))));
    }
    if (isGuid(mt, at, kVhdxParentLocator)) {
      return refuse(
          "Image is a differencing vhdx, which refers to a parent disk; images with backing "
          "files are refused");
    } else if (isGuid(mt, at, kVhdxVirtualDiskSize)) {
      if (size_item) return refuse("Image is a vhdx that gives its virtual size twice");
      size_item = item;
    } else if (isGuid(mt, at, kVhdxFileParameters)) {
      if (params_item) return refuse("Image is a vhdx that gives its file parameters twice");
      params_item = item;
    } else if (!isGuid(mt, at, kVhdxPage83Data) && !isGuid(mt, at, kVhdxLogicalSectorSize) &&
               !isGuid(mt, at, kVhdxPhysicalSectorSize) && required) {
      return refuse(fmt::format("Image is a vhdx that requires an unknown metadata item {}",
                                guidText(mt.sub(at, 16))));
    }
  }

  if (params_item) {
    if (params_item->length < 8) return refuse("Image is a vhdx with invalid file parameters");
    Result<std::vector<unsigned char>> params =
        readExact(src, *meta_offset + params_item->offset, 8, "vhdx", "file parameters");
    if (!params) return params.error();
    if ((View(*params).le32(4) & 2) != 0) {
      return refuse(
          "Image is a differencing vhdx (has_parent is set); images with backing files are "
          "refused");
    }
  }
  if (!size_item || size_item->length != 8) {
    return refuse(
        "Image is a vhdx without a valid virtual disk size item; could not determine "
        "virtual size");
  }
  Result<std::vector<unsigned char>> size_bytes =
      readExact(src, *meta_offset + size_item->offset, 8, "vhdx", "virtual disk size");
  if (!size_bytes) return size_bytes.error();
  const std::uint64_t virtual_size = View(*size_bytes).le64(0);
  if (virtual_size > kVhdxMaxVirtualSize) {
    return refuse(fmt::format(
        "Image is a vhdx with a virtual size of {} bytes, more than the 64 TiB VHDX limit",
        virtual_size));
  }
  return virtual_size;
}

// ---------------------------------------------------------------------------------------------
// Detection

// Enough of the file's start for every signature kiln looks for: the ISO volume descriptors
// end at 0x9006, a 4K-sector GPT header starts at 4096.
constexpr std::size_t kHeadBytes = 0x9800;

struct Detection {
  bool qcow2 = false;
  bool vmdk = false;
  bool vdi = false;
  bool vhd_start = false;
  bool vhd_end = false;
  bool vhdx = false;
  bool iso = false;
  bool gpt = false;
};

bool hasGpt(View head) {
  // A protective MBR (a partition of type 0xEE) and a GPT header. Checking both is what keeps a
  // FAT file system, which also ends its first sector with 55 AA, from being taken for a GPT
  // disk (nova LP#2079850).
  if (head.byte(510) != 0x55 || head.byte(511) != 0xaa) return false;
  bool protective = false;
  for (std::size_t i = 0; i < 4; ++i) {
    if (head.byte(0x1be + 16 * i + 4) == 0xee) protective = true;
  }
  return protective && (head.matches(512, "EFI PART") || head.matches(4096, "EFI PART"));
}

bool hasIsoSignature(View head) {
  for (std::size_t offset : {0x8001, 0x8801, 0x9001}) {
    if (head.matches(offset, "CD001") || head.matches(offset, "NSR02") ||
        head.matches(offset, "NSR03")) {
      return true;
    }
  }
  return false;
}

Result<ImageInfo> inspectDetected(const ByteSource& src, DiskFormat format, View head,
                                  const Detection& d) {
  ImageInfo info{format, src.size(), src.size()};
  Result<std::uint64_t> size = src.size();
  switch (format) {
    case DiskFormat::kQcow2:
      size = inspectQcow2(src);
      break;
    case DiskFormat::kVmdk:
      size = inspectVmdk(src, head);
      break;
    case DiskFormat::kVdi:
      size = inspectVdi(src);
      break;
    case DiskFormat::kVhd:
      size = inspectVhd(src, d.vhd_start);
      break;
    case DiskFormat::kVhdx:
      size = inspectVhdx(src);
      break;
    case DiskFormat::kRaw:
    case DiskFormat::kIso:
    case DiskFormat::kGpt:
    case DiskFormat::kUnknown:
      break;  // nothing inside refers elsewhere; the guest sees the file
  }
  if (!size) return size.error();
  info.virtual_size = *size;
  return info;
}

}  // namespace

Result<ImageInfo> inspectImage(const ByteSource& src, std::optional<DiskFormat> declared) {
  if (declared == DiskFormat::kUnknown) {
    return refuse("Image declares a disk_format kiln cannot inspect; it is refused");
  }
  Result<std::vector<unsigned char>> head_bytes = readUpTo(src, 0, kHeadBytes);
  if (!head_bytes) return head_bytes.error();
  View head(*head_bytes);

  Detection d;
  d.qcow2 = head.matches(0, kQcowMagic);
  d.vmdk =
      head.matches(0, kVmdk4Magic) || head.matches(0, kVmdk3Magic) || looksLikeVmdkDescriptor(head);
  d.vdi = head.le32(0x40) == kVdiSignature && head.has(0x40, 4);
  d.vhd_start = head.matches(0, kVhdCookie);
  if (!d.vhd_start && src.size() >= 512) {
    Result<std::vector<unsigned char>> tail = readExact(src, src.size() - 512, 512, "raw", "end");
    if (!tail) return tail.error();
    d.vhd_end = View(*tail).matches(0, kVhdCookie);
  }
  d.vhdx = head.matches(0, "vhdxfile");
  d.iso = hasIsoSignature(head);
  d.gpt = hasGpt(head);

  // A fixed VHD is a raw disk with a footer: whatever partition table or file system the disk
  // holds is expected. Likewise a hybrid ISO carries a GPT for USB boot (nova commit 507c6c1113).
  if (d.vhd_end) d.gpt = d.iso = false;
  if (d.iso) d.gpt = false;

  std::vector<DiskFormat> found;
  if (d.gpt) found.push_back(DiskFormat::kGpt);
  if (d.iso) found.push_back(DiskFormat::kIso);
  if (d.qcow2) found.push_back(DiskFormat::kQcow2);
  if (d.vdi) found.push_back(DiskFormat::kVdi);
  if (d.vhd_start || d.vhd_end) found.push_back(DiskFormat::kVhd);
  if (d.vhdx) found.push_back(DiskFormat::kVhdx);
  if (d.vmdk) found.push_back(DiskFormat::kVmdk);
  if (found.size() > 1) {
    // Each reader of such a polyglot would see a different disk; no answer is safe.
    std::string names;
    for (DiskFormat f : found) {
      if (!names.empty()) names += ", ";
      names += diskFormatName(f);
    }
    return refuse(fmt::format("Image matches more than one format ({})", names));
  }
  const DiskFormat detected = found.empty() ? DiskFormat::kRaw : found.front();

  Result<ImageInfo> info = inspectDetected(src, detected, head, d);
  if (!info) return info;

  if (declared && *declared != detected) {
    // A whole-disk image with a GPT is what Glance calls raw.
    if (*declared == DiskFormat::kRaw && detected == DiskFormat::kGpt) {
      info->format = DiskFormat::kRaw;
      return info;
    }
    return refuse(fmt::format("Image declares disk_format '{}' but its content is '{}'",
                              diskFormatName(*declared), diskFormatName(detected)));
  }
  return info;
}

Result<ImageInfo> inspectImageFile(const std::string& path, std::optional<DiskFormat> declared) {
  Result<FileByteSource> src = FileByteSource::open(path);
  if (!src) return src.error();
  return inspectImage(*src, declared);
}

}  // namespace kiln::imagecache
