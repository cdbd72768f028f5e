#include "imagecache/format_inspector.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/command_runner.h"

namespace {

namespace stdfs = std::filesystem;
using kiln::ErrorCode;
using kiln::Result;
using kiln::imagecache::BufferByteSource;
using kiln::imagecache::DiskFormat;
using kiln::imagecache::diskFormatFromGlance;
using kiln::imagecache::diskFormatName;
using kiln::imagecache::FileByteSource;
using kiln::imagecache::ImageInfo;
using kiln::imagecache::inspectImage;
using kiln::imagecache::inspectImageFile;
using kiln::imagecache::qemuFormatName;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kiln-inspect-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    stdfs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  stdfs::path path_;
};

// The tools the tests drive live in /usr/bin or /usr/sbin; PATH under CTest may lack the latter.
std::string findTool(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"}) {
    stdfs::path p = stdfs::path(dir) / name;
    if (stdfs::exists(p)) return p.string();
  }
  return {};
}

kiln::CommandOutput run(std::vector<std::string> argv) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  Result<kiln::CommandOutput> out = runner.run(spec);
  REQUIRE(out.ok());
  INFO(kiln::describeFailure(spec, *out));
  REQUIRE(out->succeeded());
  return *out;
}

std::string qemuImg() {
  static const std::string path = findTool("qemu-img");
  return path;
}

std::uint64_t qemuVirtualSize(const std::string& path, std::string_view format) {
  kiln::CommandOutput out =
      run({qemuImg(), "info", "--output=json", "-f", std::string(format), path});
  return nlohmann::json::parse(out.stdout_text).at("virtual-size").get<std::uint64_t>();
}

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void writeAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

void putBe(std::string& b, std::size_t offset, std::uint64_t v, int width) {
  REQUIRE(offset + width <= b.size());
  for (int i = width - 1; i >= 0; --i, v >>= 8) b[offset + i] = static_cast<char>(v & 0xff);
}
void putLe(std::string& b, std::size_t offset, std::uint64_t v, int width) {
  REQUIRE(offset + width <= b.size());
  for (int i = 0; i < width; ++i, v >>= 8) b[offset + i] = static_cast<char>(v & 0xff);
}
void putText(std::string& b, std::size_t offset, std::string_view text) {
  REQUIRE(offset + text.size() <= b.size());
  b.replace(offset, text.size(), text);
}

Result<ImageInfo> inspectBytes(const std::string& bytes,
                               std::optional<DiskFormat> declared = std::nullopt) {
  BufferByteSource src(bytes);
  return inspectImage(src, declared);
}

void requireRefused(const Result<ImageInfo>& result, const std::string& fragment) {
  REQUIRE_FALSE(result.ok());
  INFO(result.error().message);
  CHECK(result.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(result.error().message, Catch::Matchers::Contains(fragment));
}

// A qcow2 made by qemu-img, loaded into memory to be doctored.
std::string makeQcow2(const TempDir& dir, const std::string& size = "64M") {
  std::string path = dir.file("made.qcow2");
  run({qemuImg(), "create", "-q", "-f", "qcow2", path, size});
  return readAll(path);
}

std::string makeVmdkSparse(const TempDir& dir) {
  std::string path = dir.file("made.vmdk");
  run({qemuImg(), "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", path, "1G"});
  return readAll(path);
}

// Replaces the embedded descriptor (sector 1 onward, 20 sectors) of a sparse vmdk.
void putVmdkDescriptor(std::string& vmdk, std::string_view text) {
  REQUIRE(text.size() < 20 * 512);
  std::string padded(text);
  padded.resize(20 * 512, '\0');
  putText(vmdk, 512, padded);
}

// A protective MBR and a GPT header: what a whole-disk image with partitions starts with.
void putGpt(std::string& disk) {
  putLe(disk, 0x1be + 4, 0xee, 1);
  putLe(disk, 510, 0xaa55, 2);
  putText(disk, 512, "EFI PART");
}

void putIsoDescriptor(std::string& disk, std::size_t offset = 0x8000) {
  putLe(disk, offset, 1, 1);  // primary volume descriptor
  putText(disk, offset + 1, "CD001");
  putLe(disk, offset + 6, 1, 1);
}

}  // namespace

TEST_CASE("Format names map between Glance, kiln and qemu", "[imagecache][inspect]") {
  CHECK(diskFormatFromGlance("qcow2") == DiskFormat::kQcow2);
  CHECK(diskFormatFromGlance("vhd") == DiskFormat::kVhd);
  CHECK(diskFormatFromGlance("vhdx") == DiskFormat::kVhdx);
  CHECK(diskFormatFromGlance("iso") == DiskFormat::kIso);
  CHECK(diskFormatFromGlance("raw") == DiskFormat::kRaw);
  CHECK_FALSE(diskFormatFromGlance("ami").has_value());
  CHECK_FALSE(diskFormatFromGlance("aki").has_value());
  CHECK_FALSE(diskFormatFromGlance("ploop").has_value());
  CHECK_FALSE(diskFormatFromGlance("QCOW2").has_value());
  CHECK(diskFormatName(DiskFormat::kVhd) == "vhd");
  CHECK(qemuFormatName(DiskFormat::kVhd) == "vpc");
  CHECK(qemuFormatName(DiskFormat::kGpt) == "raw");
  CHECK(qemuFormatName(DiskFormat::kIso) == "raw");
  CHECK(qemuFormatName(DiskFormat::kVhdx) == "vhdx");
  for (DiskFormat f : {DiskFormat::kRaw, DiskFormat::kQcow2, DiskFormat::kVmdk, DiskFormat::kVdi,
                       DiskFormat::kVhd, DiskFormat::kVhdx, DiskFormat::kIso}) {
    CHECK(diskFormatFromGlance(diskFormatName(f)) == f);
  }
}

TEST_CASE("Images made by qemu-img are detected with qemu's virtual size",
          "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) {
    WARN("qemu-img is not installed; skipping");
    return;
  }
  TempDir dir;
  struct Case {
    std::string name;
    std::vector<std::string> create_options;
    std::string size;
    DiskFormat format;
  };
  // Sizes that are not round numbers, so that rounding rules (VHD's CHS geometry) show.
  const std::vector<Case> cases = {
      {"qcow2-v3", {"-f", "qcow2"}, "1025M", DiskFormat::kQcow2},
      {"qcow2-v2", {"-f", "qcow2", "-o", "compat=0.10"}, "3G", DiskFormat::kQcow2},
      {"qcow2-small-clusters",
       {"-f", "qcow2", "-o", "cluster_size=512,extended_l2=off"},
       "10M",
       DiskFormat::kQcow2},
      {"qcow2-extended-l2",
       {"-f", "qcow2", "-o", "cluster_size=65536,extended_l2=on,compression_type=zstd"},
       "2G",
       DiskFormat::kQcow2},
      {"vmdk-monolithic-sparse",
       {"-f", "vmdk", "-o", "subformat=monolithicSparse"},
       "1025M",
       DiskFormat::kVmdk},
      {"vmdk-stream-optimized",
       {"-f", "vmdk", "-o", "subformat=streamOptimized"},
       "1025M",
       DiskFormat::kVmdk},
      {"vdi", {"-f", "vdi"}, "1025M", DiskFormat::kVdi},
      {"vpc-dynamic", {"-f", "vpc"}, "1025M", DiskFormat::kVhd},
      {"vpc-dynamic-force-size", {"-f", "vpc", "-o", "force_size=on"}, "1025M", DiskFormat::kVhd},
      {"vpc-fixed", {"-f", "vpc", "-o", "subformat=fixed"}, "33M", DiskFormat::kVhd},
      {"vhdx", {"-f", "vhdx"}, "1025M", DiskFormat::kVhdx},
      {"raw", {"-f", "raw"}, "5M", DiskFormat::kRaw},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      std::string path = dir.file(c.name);
      std::vector<std::string> argv = {qemuImg(), "create", "-q"};
      argv.insert(argv.end(), c.create_options.begin(), c.create_options.end());
      argv.push_back(path);
      argv.push_back(c.size);
      run(argv);

      Result<ImageInfo> found = inspectImageFile(path, std::nullopt);
      INFO((found ? std::string("ok") : found.error().message));
      REQUIRE(found.ok());
      CHECK(found->format == c.format);
      CHECK(found->virtual_size == qemuVirtualSize(path, qemuFormatName(c.format)));
      CHECK(found->file_size == stdfs::file_size(path));

      Result<ImageInfo> declared = inspectImageFile(path, c.format);
      REQUIRE(declared.ok());
      CHECK(declared->format == c.format);
    }
  }
}

TEST_CASE("A streamOptimized vmdk with data keeps qemu's virtual size",
          "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string data(3 * 1024 * 1024 + 512, '\0');
  for (std::size_t i = 0; i < data.size(); i += 4096) data[i] = static_cast<char>(i / 4096 + 1);
  writeAll(dir.file("data.raw"), data);
  std::string path = dir.file("stream.vmdk");
  run({qemuImg(), "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
       dir.file("data.raw"), path});
  Result<ImageInfo> found = inspectImageFile(path, DiskFormat::kVmdk);
  REQUIRE(found.ok());
  CHECK(found->virtual_size == qemuVirtualSize(path, "vmdk"));
}

TEST_CASE("A qcow2 with a backing file is refused and the name is quoted",
          "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string base = dir.file("base.raw");
  run({qemuImg(), "create", "-q", "-f", "raw", base, "16M"});
  std::string overlay = dir.file("overlay.qcow2");
  run({qemuImg(), "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay});

  Result<ImageInfo> found = inspectImageFile(overlay, DiskFormat::kQcow2);
  requireRefused(found, "Image is a qcow2 with a backing file ('" + base +
                            "'); images with backing files are refused");
}

TEST_CASE("A qcow2 backing file name is sanitized and truncated in the message",
          "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string image = makeQcow2(dir);
  std::string name = "\x01\x02/etc/shadow\x7f";
  name += std::string(100, 'a');
  putText(image, 0x200, name);
  putBe(image, 8, 0x200, 8);
  putBe(image, 16, name.size(), 4);

  Result<ImageInfo> found = inspectBytes(image);
  requireRefused(found, "('?\?/etc/shadow?aaaa");
  // 64 characters then an ellipsis, nothing more of the 114-byte name.
  std::string expected = "?\?/etc/shadow?" + std::string(64 - 14, 'a') + "...')";
  CHECK_THAT(found.error().message, Catch::Matchers::Contains(expected));

  SECTION("a backing offset without a size is still refused") {
    putBe(image, 16, 0, 4);
    requireRefused(inspectBytes(image), "backing file (name unreadable)");
  }
  SECTION("a backing name past the end of the file is still refused") {
    putBe(image, 8, 1ull << 40, 8);
    requireRefused(inspectBytes(image), "backing file (name unreadable)");
  }
}

TEST_CASE("A qcow2 with an external data file is refused", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string path = dir.file("with-data.qcow2");
  std::string data_file = dir.file("with-data.data");
  run({qemuImg(), "create", "-q", "-f", "qcow2", "-o", "data_file=" + data_file, path, "16M"});
  requireRefused(inspectImageFile(path, DiskFormat::kQcow2),
                 "Image is a qcow2 with an external data file ('" + data_file + "')");

  SECTION("the feature bit alone is enough") {
    std::string image = makeQcow2(dir);
    putBe(image, 72, 1u << 2, 8);
    requireRefused(inspectBytes(image), "external data file (name not given)");
  }
  SECTION("the header extension alone is enough") {
    std::string image = readAll(path);
    putBe(image, 72, 0, 8);
    requireRefused(inspectBytes(image), "external data file ('" + data_file + "')");
  }
}

TEST_CASE("An encrypted qcow2 is refused", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  // Legacy AES is what qemu-img can still write quickly; LUKS (crypt_method 2) would spend its
  // key-derivation benchmark here, so its header field is set by hand instead.
  std::string path = dir.file("aes.qcow2");
  run({qemuImg(), "create", "-q", "--object", "secret,id=sec0,data=hunter2", "-f", "qcow2", "-o",
       "encrypt.format=aes,encrypt.key-secret=sec0", path, "16M"});
  requireRefused(inspectImageFile(path, std::nullopt), "encrypted qcow2 (crypt_method 1)");

  std::string image = makeQcow2(dir);
  putBe(image, 32, 2, 4);
  requireRefused(inspectBytes(image), "encrypted qcow2 (crypt_method 2)");
}

TEST_CASE("Hostile or broken qcow2 headers are refused", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string image = makeQcow2(dir);
  REQUIRE(inspectBytes(image).ok());

  SECTION("truncated header") {
    requireRefused(inspectBytes(image.substr(0, 50)), "truncated qcow2");
    requireRefused(inspectBytes(image.substr(0, 4)), "truncated qcow2");
    requireRefused(inspectBytes(image.substr(0, 100)), "truncated qcow2");
  }
  SECTION("file cut before the L1 table") {
    requireRefused(inspectBytes(image.substr(0, 0x20000)), "L1 table");
  }
  SECTION("absurd cluster_bits") {
    putBe(image, 20, 40, 4);
    requireRefused(inspectBytes(image), "cluster_bits 40");
    putBe(image, 20, 8, 4);
    requireRefused(inspectBytes(image), "cluster_bits 8");
  }
  SECTION("version 1 and 4") {
    putBe(image, 4, 1, 4);
    requireRefused(inspectBytes(image), "qcow version 1");
    putBe(image, 4, 4, 4);
    requireRefused(inspectBytes(image), "qcow version 4");
  }
  SECTION("header_length out of range") {
    putBe(image, 100, 90, 4);
    requireRefused(inspectBytes(image), "header_length 90");
    putBe(image, 100, 1u << 20, 4);
    requireRefused(inspectBytes(image), "header_length");
  }
  SECTION("marked corrupt") {
    putBe(image, 72, 1u << 1, 8);
    requireRefused(inspectBytes(image), "marks it corrupt");
  }
  SECTION("unknown incompatible feature") {
    putBe(image, 72, 1u << 10, 8);
    requireRefused(inspectBytes(image), "unknown incompatible feature bits (0x400)");
  }
  SECTION("the dirty bit alone is fine") {
    putBe(image, 72, 1u << 0, 8);
    CHECK(inspectBytes(image).ok());
  }
  SECTION("a virtual size the L1 table cannot cover") {
    putBe(image, 24, ~0ull, 8);
    requireRefused(inspectBytes(image), "L1 table");
  }
  SECTION("an L1 table larger than qemu allows") {
    putBe(image, 36, 0xffffffffu, 4);
    requireRefused(inspectBytes(image), "more than QEMU accepts");
  }
  SECTION("a refcount table past the end") {
    putBe(image, 48, 1ull << 50, 8);
    requireRefused(inspectBytes(image), "refcount table");
  }
  SECTION("a header extension that runs off the cluster") {
    putBe(image, 112, 0x12345678, 4);
    putBe(image, 116, 0x7fffffff, 4);
    requireRefused(inspectBytes(image), "runs past the first cluster");
  }
  SECTION("an unknown compression type") {
    putBe(image, 72, 1u << 3, 8);
    putLe(image, 104, 7, 1);
    requireRefused(inspectBytes(image), "compression type 7");
  }
}

TEST_CASE("Polyglot images that match several formats are refused", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string image = makeQcow2(dir);

  SECTION("qcow2 and ISO") {
    // Written into the file and read back, as an uploaded polyglot would arrive.
    putIsoDescriptor(image);
    std::string path = dir.file("polyglot.qcow2");
    writeAll(path, image);
    requireRefused(inspectImageFile(path, DiskFormat::kQcow2),
                   "Image matches more than one format (iso, qcow2)");
    requireRefused(inspectImageFile(path, DiskFormat::kIso), "more than one format");
  }
  SECTION("qcow2 and ISO signature at the other volume descriptor offsets") {
    putText(image, 0x9001, "CD001");
    requireRefused(inspectBytes(image), "(iso, qcow2)");
  }
  SECTION("qcow2 and vdi") {
    putLe(image, 0x40, 0xbeda107f, 4);
    requireRefused(inspectBytes(image), "(qcow2, vdi)");
  }
  SECTION("qcow2 and a vhd footer") {
    std::string vhd_path = dir.file("fixed.vhd");
    run({qemuImg(), "create", "-q", "-f", "vpc", "-o", "subformat=fixed", vhd_path, "1M"});
    std::string vhd = readAll(vhd_path);
    image += vhd.substr(vhd.size() - 512);
    requireRefused(inspectBytes(image), "(qcow2, vhd)");
  }
  SECTION("qcow2 and GPT") {
    putGpt(image);
    requireRefused(inspectBytes(image), "(gpt, qcow2)");
  }
}

TEST_CASE("Declared and detected formats must agree", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string image = makeQcow2(dir);
  requireRefused(inspectBytes(image, DiskFormat::kRaw),
                 "Image declares disk_format 'raw' but its content is 'qcow2'");
  requireRefused(inspectBytes(image, DiskFormat::kVmdk),
                 "Image declares disk_format 'vmdk' but its content is 'qcow2'");
  requireRefused(inspectBytes(image, DiskFormat::kUnknown), "cannot inspect");

  std::string raw(1024 * 1024, '\0');
  requireRefused(inspectBytes(raw, DiskFormat::kQcow2),
                 "Image declares disk_format 'qcow2' but its content is 'raw'");
  Result<ImageInfo> as_raw = inspectBytes(raw, DiskFormat::kRaw);
  REQUIRE(as_raw.ok());
  CHECK(as_raw->format == DiskFormat::kRaw);
  CHECK(as_raw->virtual_size == raw.size());
}

TEST_CASE("VMDK descriptor files are refused", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  SECTION("monolithicFlat made by qemu-img") {
    std::string path = dir.file("flat.vmdk");
    run({qemuImg(), "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", path, "1M"});
    requireRefused(inspectImageFile(path, DiskFormat::kVmdk), "vmdk descriptor file");
    // Declared raw it is still refused: qemu would probe it as vmdk.
    requireRefused(inspectImageFile(path, DiskFormat::kRaw), "vmdk descriptor file");
  }
  SECTION("hand-written, pointing at a host file") {
    std::string text =
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        "createType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/shadow\" 0\n";
    requireRefused(inspectBytes(text), "vmdk descriptor file");
  }
  SECTION("the bare form qemu also probes as vmdk") {
    std::string text = "# comment\n\nversion=1\nRW 2048 FLAT \"/dev/sda\" 0\n";
    requireRefused(inspectBytes(text), "vmdk descriptor file");
  }
}

TEST_CASE("Sparse VMDK embedded descriptors are checked", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string vmdk = makeVmdkSparse(dir);
  REQUIRE(inspectBytes(vmdk, DiskFormat::kVmdk).ok());
  const std::string head = "# Disk DescriptorFile\nversion=1\nCID=5d0c1e80\nparentCID=ffffffff\n";

  SECTION("an extent pointing at a host file") {
    putVmdkDescriptor(vmdk, head +
                                "createType=\"monolithicSparse\"\n"
                                "RW 2097152 SPARSE \"/etc/shadow\"\n");
    requireRefused(inspectBytes(vmdk), "points at another file ('/etc/shadow')");
  }
  SECTION("a relative path is another file too") {
    putVmdkDescriptor(vmdk, head +
                                "createType=\"monolithicSparse\"\n"
                                "RW 2097152 SPARSE \"../../etc/shadow\"\n");
    requireRefused(inspectBytes(vmdk), "points at another file");
  }
  SECTION("a flat extent") {
    putVmdkDescriptor(vmdk, head +
                                "createType=\"monolithicSparse\"\n"
                                "RW 2097152 FLAT \"disk-flat.vmdk\" 0\n");
    requireRefused(inspectBytes(vmdk), "'FLAT' extent");
  }
  SECTION("two extents") {
    putVmdkDescriptor(vmdk, head +
                                "createType=\"monolithicSparse\"\n"
                                "RW 1024 SPARSE \"a.vmdk\"\nRW 1024 SPARSE \"b.vmdk\"\n");
    requireRefused(inspectBytes(vmdk), "lists 2 extents");
  }
  SECTION("another createType") {
    putVmdkDescriptor(vmdk, head +
                                "createType=\"twoGbMaxExtentSparse\"\n"
                                "RW 2097152 SPARSE \"x.vmdk\"\n");
    requireRefused(inspectBytes(vmdk), "createType 'twoGbMaxExtentSparse'");
  }
  SECTION("no createType") {
    putVmdkDescriptor(vmdk, head + "RW 2097152 SPARSE \"x.vmdk\"\n");
    requireRefused(inspectBytes(vmdk), "no createType");
  }
  SECTION("a parent disk") {
    putVmdkDescriptor(vmdk, head +
                                "createType=\"monolithicSparse\"\n"
                                "parentFileNameHint=\"/var/lib/secret.vmdk\"\n");
    requireRefused(inspectBytes(vmdk), "parent disk ('/var/lib/secret.vmdk')");
  }
  SECTION("a parent hint beyond the declared descriptor, where qemu still looks") {
    putLe(vmdk, 36, 1, 8);  // descriptor is one sector long
    putText(vmdk, 512 + 4096, "parentFileNameHint=\"/x\"");
    requireRefused(inspectBytes(vmdk), "parent disk");
  }
  SECTION("a line that is not a descriptor line") {
    putVmdkDescriptor(vmdk, head + "createType=\"monolithicSparse\"\nrm -rf /\n");
    requireRefused(inspectBytes(vmdk), "does not understand");
  }
  SECTION("binary in the descriptor") {
    putVmdkDescriptor(vmdk, head + "createType=\"monolithicSparse\"\n\x01\x02\n");
    requireRefused(inspectBytes(vmdk), "not text");
  }
  SECTION("capacity 0 makes qemu open the descriptor's extents") {
    putLe(vmdk, 12, 0, 8);
    requireRefused(inspectBytes(vmdk), "capacity of 0");
  }
  SECTION("a descriptor larger than kiln reads") {
    putLe(vmdk, 36, 1ull << 40, 8);
    requireRefused(inspectBytes(vmdk), "more than kiln reads");
  }
  SECTION("a descriptor somewhere else") {
    putLe(vmdk, 28, 7, 8);
    requireRefused(inspectBytes(vmdk), "sector 7 instead of 1");
  }
  SECTION("a footer that is not there") {
    putLe(vmdk, 56, ~0ull, 8);
    requireRefused(inspectBytes(vmdk), "footer is invalid");
  }
  SECTION("a truncated file") {
    requireRefused(inspectBytes(vmdk.substr(0, 300)), "truncated vmdk");
    requireRefused(inspectBytes(vmdk.substr(0, 2048)), "truncated vmdk");
  }
  SECTION("a VMDK3 sparse extent") {
    putText(vmdk, 0, "COWD");
    requireRefused(inspectBytes(vmdk), "VMDK3");
  }
}

TEST_CASE("A vdi that refers to a parent is refused", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string path = dir.file("d.vdi");
  run({qemuImg(), "create", "-q", "-f", "vdi", path, "64M"});
  std::string vdi = readAll(path);
  REQUIRE(inspectBytes(vdi).ok());
  SECTION("parent UUID") {
    putLe(vdi, 0x1b8, 0x1234, 4);
    requireRefused(inspectBytes(vdi), "refers to a parent image");
  }
  SECTION("a disk size its blocks cannot hold") {
    putLe(vdi, 0x170, 1ull << 50, 8);
    requireRefused(inspectBytes(vdi), "does not fit");
  }
  SECTION("truncated") { requireRefused(inspectBytes(vdi.substr(0, 300)), "truncated vdi"); }
}

TEST_CASE("VHD checks", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string path = dir.file("d.vhd");
  run({qemuImg(), "create", "-q", "-f", "vpc", path, "64M"});
  std::string vhd = readAll(path);
  REQUIRE(inspectBytes(vhd).ok());

  auto fixChecksum = [](std::string& b, std::size_t at) {
    std::uint32_t sum = 0;
    for (std::size_t i = 0; i < 512; ++i) {
      if (i < 64 || i >= 68) sum += static_cast<unsigned char>(b[at + i]);
    }
    putBe(b, at + 64, ~sum, 4);
  };
  SECTION("a differencing disk") {
    putBe(vhd, 60, 4, 4);
    fixChecksum(vhd, 0);
    requireRefused(inspectBytes(vhd), "differencing vhd");
  }
  SECTION("a bad checksum") {
    putBe(vhd, 48, 12345, 8);
    requireRefused(inspectBytes(vhd), "checksum");
  }
  SECTION("a fixed VHD holding a GPT disk is a vhd, not a polyglot") {
    std::string fixed_path = dir.file("f.vhd");
    run({qemuImg(), "create", "-q", "-f", "vpc", "-o", "subformat=fixed", fixed_path, "8M"});
    std::string fixed = readAll(fixed_path);
    putGpt(fixed);
    Result<ImageInfo> found = inspectBytes(fixed, DiskFormat::kVhd);
    REQUIRE(found.ok());
    CHECK(found->format == DiskFormat::kVhd);
  }
}

TEST_CASE("VHDX checks", "[imagecache][inspect][qemu]") {
  if (qemuImg().empty()) return;
  TempDir dir;
  std::string path = dir.file("d.vhdx");
  run({qemuImg(), "create", "-q", "-f", "vhdx", path, "64M"});
  std::string vhdx = readAll(path);
  REQUIRE(inspectBytes(vhdx).ok());

  SECTION("a damaged region table") {
    vhdx[192 * 1024 + 40] ^= 0x01;
    requireRefused(inspectBytes(vhdx), "could not determine virtual size");
  }
  SECTION("a parent locator makes it a differencing disk") {
    // Page 83 data BECA12AB-B2E6-4523-93EF-C309E000C746 becomes the parent locator
    // A8D35F2D-B30B-454D-ABF7-D3D84834AB0C.
    const std::string page83("\xab\x12\xca\xbe\xe6\xb2\x23\x45\x93\xef\xc3\x09\xe0\x00\xc7\x46",
                             16);
    const std::string parent("\x2d\x5f\xd3\xa8\x0b\xb3\x4d\x45\xab\xf7\xd3\xd8\x48\x34\xab\x0c",
                             16);
    std::size_t at = vhdx.find(page83);
    REQUIRE(at != std::string::npos);
    putText(vhdx, at, parent);
    requireRefused(inspectBytes(vhdx), "differencing vhdx");
  }
  SECTION("truncated") { requireRefused(inspectBytes(vhdx.substr(0, 200 * 1024)), "vhdx"); }
}

TEST_CASE("A FAT file system is raw, not GPT", "[imagecache][inspect]") {
  std::string mkfs = findTool("mkfs.fat");
  if (mkfs.empty()) {
    WARN("mkfs.fat is not installed; skipping");
    return;
  }
  TempDir dir;
  std::string path = dir.file("fat.img");
  run({mkfs, "-C", path, "8192"});
  Result<ImageInfo> found = inspectImageFile(path, std::nullopt);
  REQUIRE(found.ok());
  CHECK(found->format == DiskFormat::kRaw);
  CHECK(found->virtual_size == 8192 * 1024);
  CHECK(inspectImageFile(path, DiskFormat::kRaw).ok());
}

TEST_CASE("GPT disks are raw whole disks", "[imagecache][inspect]") {
  std::string disk(2 * 1024 * 1024, '\0');
  putGpt(disk);
  Result<ImageInfo> found = inspectBytes(disk);
  REQUIRE(found.ok());
  CHECK(found->format == DiskFormat::kGpt);
  CHECK(found->virtual_size == disk.size());

  Result<ImageInfo> as_raw = inspectBytes(disk, DiskFormat::kRaw);
  REQUIRE(as_raw.ok());
  CHECK(as_raw->format == DiskFormat::kRaw);
  requireRefused(inspectBytes(disk, DiskFormat::kQcow2), "its content is 'gpt'");

  SECTION("without the protective partition it is not GPT") {
    putLe(disk, 0x1be + 4, 0x0c, 1);
    CHECK(inspectBytes(disk)->format == DiskFormat::kRaw);
  }
  SECTION("without the EFI PART header it is not GPT") {
    putText(disk, 512, "NOT PART");
    CHECK(inspectBytes(disk)->format == DiskFormat::kRaw);
  }
}

TEST_CASE("ISO images, hybrid ones included", "[imagecache][inspect]") {
  std::string iso(1024 * 1024, '\0');
  for (std::size_t offset : {0x8000, 0x8800, 0x9000}) {
    std::string copy = iso;
    putIsoDescriptor(copy, offset);
    Result<ImageInfo> found = inspectBytes(copy, DiskFormat::kIso);
    REQUIRE(found.ok());
    CHECK(found->format == DiskFormat::kIso);
    CHECK(found->virtual_size == copy.size());
  }
  putIsoDescriptor(iso);
  SECTION("an ISO declared raw is refused") {
    requireRefused(inspectBytes(iso, DiskFormat::kRaw), "its content is 'iso'");
  }
  SECTION("a hybrid ISO with a GPT is an ISO") {
    putGpt(iso);
    Result<ImageInfo> found = inspectBytes(iso);
    REQUIRE(found.ok());
    CHECK(found->format == DiskFormat::kIso);
    CHECK(inspectBytes(iso, DiskFormat::kIso).ok());
  }
}

TEST_CASE("Small and odd buffers are raw or refused, never read out of bounds",
          "[imagecache][inspect]") {
  Result<ImageInfo> empty = inspectBytes("");
  REQUIRE(empty.ok());
  CHECK(empty->format == DiskFormat::kRaw);
  CHECK(empty->virtual_size == 0);

  requireRefused(inspectBytes(std::string("QFI\xfb", 4)), "truncated qcow2");
  requireRefused(inspectBytes("KDMV"), "truncated vmdk");
  requireRefused(inspectBytes("vhdxfile"), "vhdx");
  requireRefused(inspectBytes("conectix"), "truncated vhd");
  std::string vdi(0x44, '\0');
  putLe(vdi, 0x40, 0xbeda107f, 4);
  requireRefused(inspectBytes(vdi), "truncated vdi");
  for (std::size_t n : {1, 2, 7, 511, 512, 513, 4096}) {
    Result<ImageInfo> found = inspectBytes(std::string(n, 'x'));
    REQUIRE(found.ok());
    CHECK(found->format == DiskFormat::kRaw);
  }
}

TEST_CASE("File sources report missing files and refuse non-files", "[imagecache][inspect]") {
  Result<ImageInfo> missing = inspectImageFile("/nonexistent/kiln/image", std::nullopt);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == ErrorCode::kNotFound);

  TempDir dir;
  Result<FileByteSource> directory = FileByteSource::open(dir.file(""));
  REQUIRE_FALSE(directory.ok());
  CHECK(directory.error().code == ErrorCode::kInvalidArgument);

  writeAll(dir.file("small"), "hello");
  Result<FileByteSource> file = FileByteSource::open(dir.file("small"));
  REQUIRE(file.ok());
  CHECK(file->size() == 5);
  char buf[16] = {};
  Result<std::size_t> n = file->readAt(3, buf, sizeof buf);
  REQUIRE(n.ok());
  CHECK(*n == 2);
  CHECK(std::string(buf, 2) == "lo");
  n = file->readAt(100, buf, sizeof buf);
  REQUIRE(n.ok());
  CHECK(*n == 0);
}
