#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "drivers/libvirt/firmware.h"
#include "tests/support/temp_dir.h"

using Catch::Matchers::Contains;
using kiln::drivers::libvirt::chooseUefiFirmware;
using kiln::drivers::libvirt::defaultFirmwareDescriptorDirs;
using kiln::drivers::libvirt::FirmwareChoice;
using kiln::drivers::libvirt::machineSupported;

namespace {

// A host-like layout in a temporary directory: etc/ and share/ descriptor directories and the
// firmware files they name.
class FirmwareDirs {
 public:
  FirmwareDirs() {
    std::filesystem::create_directories(etc());
    std::filesystem::create_directories(share());
    std::filesystem::create_directories(ovmf());
  }
  std::string etc() const { return dir_.path() + "/etc"; }
  std::string share() const { return dir_.path() + "/share"; }
  std::string ovmf() const { return dir_.path() + "/OVMF"; }
  std::vector<std::string> dirs() const { return {etc(), share()}; }

  std::string file(const std::string& name) {
    std::string path = ovmf() + "/" + name;
    std::ofstream(path) << "firmware";
    return path;
  }
  // A split-flash x86_64 UEFI descriptor naming code/vars in ovmf() (created unless told not to).
  void describe(const std::string& dir, const std::string& name, const std::string& code,
                const std::string& vars, std::vector<std::string> features,
                bool create_files = true) {
    nlohmann::json j = {
        {"description", name},
        {"interface-types", {"uefi"}},
        {"mapping",
         {{"device", "flash"},
          {"executable", {{"filename", ovmf() + "/" + code}, {"format", "raw"}}},
          {"nvram-template", {{"filename", ovmf() + "/" + vars}, {"format", "raw"}}}}},
        {"targets", {{{"architecture", "x86_64"}, {"machines", {"pc-q35-*"}}}}},
        {"features", features},
        {"tags", nlohmann::json::array()}};
    write(dir, name, j.dump(4));
    if (create_files) {
      file(code);
      file(vars);
    }
  }
  void write(const std::string& dir, const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
  }

 private:
  kiln::testing::TempDir dir_;
};

std::string fileName(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

// Trimmed from `virsh capabilities` on Debian 12 (libvirt 9.0, QEMU 7.2).
constexpr const char* kCapabilities = R"(<capabilities>
  <host><uuid>00000000-0000-0000-0000-000000000000</uuid><cpu><arch>x86_64</arch></cpu></host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'>
      <wordsize>32</wordsize>
      <emulator>/usr/bin/qemu-system-i386</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <machine maxCpus='1'>isapc</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <machine maxCpus='288'>pc-q35-7.2</machine>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <machine maxCpus='288'>pc-q35-5.2</machine>
      <machine maxCpus='1'>microvm</machine>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
  </guest>
  <guest>
    <os_type>xen</os_type>
    <arch name='x86_64'>
      <machine>xenpv</machine>
      <domain type='xen'/>
    </arch>
  </guest>
</capabilities>)";

}  // namespace

TEST_CASE("this host's OVMF descriptors: plain and secure builds", "[firmware]") {
  if (!std::filesystem::exists("/usr/share/qemu/firmware/60-edk2-x86_64.json")) {
    WARN("ovmf is not installed; skipping the host descriptor test");
    return;
  }
  auto plain = chooseUefiFirmware(defaultFirmwareDescriptorDirs(), false, "", "");
  REQUIRE(plain.ok());
  CHECK(plain->loader_path == "/usr/share/OVMF/OVMF_CODE_4M.fd");
  CHECK(plain->nvram_template_path == "/usr/share/OVMF/OVMF_VARS_4M.fd");
  CHECK_FALSE(plain->secure);
  CHECK_FALSE(plain->requires_smm);
  CHECK(plain->descriptor_path == "/usr/share/qemu/firmware/60-edk2-x86_64.json");

  auto secure = chooseUefiFirmware(defaultFirmwareDescriptorDirs(), true, "", "");
  REQUIRE(secure.ok());
  CHECK(secure->secure);
  CHECK(secure->requires_smm);
  // The build with Microsoft's keys enrolled, so secure boot is enforced from the first boot.
  CHECK(secure->loader_path == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd");
  CHECK(secure->nvram_template_path == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
}

TEST_CASE("descriptors are tried in file-name order", "[firmware]") {
  FirmwareDirs host;
  host.describe(host.share(), "70-late.json", "LATE_CODE.fd", "LATE_VARS.fd", {"acpi-s3"});
  host.describe(host.share(), "20-early.json", "EARLY_CODE.fd", "EARLY_VARS.fd", {"acpi-s3"});
  host.describe(host.share(), "10-secure.json", "SB_CODE.fd", "SB_VARS.fd",
                {"secure-boot", "requires-smm", "enrolled-keys"});
  auto plain = chooseUefiFirmware(host.dirs(), false, "", "");
  REQUIRE(plain.ok());
  CHECK(fileName(plain->loader_path) == "EARLY_CODE.fd");
  CHECK(fileName(plain->nvram_template_path) == "EARLY_VARS.fd");
  CHECK(fileName(plain->descriptor_path) == "20-early.json");

  auto secure = chooseUefiFirmware(host.dirs(), true, "", "");
  REQUIRE(secure.ok());
  CHECK(fileName(secure->loader_path) == "SB_CODE.fd");
  CHECK(secure->requires_smm);
}

TEST_CASE("/etc overrides /usr/share by file name", "[firmware]") {
  FirmwareDirs host;
  host.describe(host.share(), "50-plain.json", "SHARE_CODE.fd", "SHARE_VARS.fd", {});
  host.describe(host.share(), "60-other.json", "OTHER_CODE.fd", "OTHER_VARS.fd", {});

  SECTION("a same-named file replaces the packaged one") {
    host.describe(host.etc(), "50-plain.json", "ETC_CODE.fd", "ETC_VARS.fd", {});
    auto choice = chooseUefiFirmware(host.dirs(), false, "", "");
    REQUIRE(choice.ok());
    CHECK(fileName(choice->loader_path) == "ETC_CODE.fd");
    CHECK(choice->descriptor_path == host.etc() + "/50-plain.json");
  }
  SECTION("an empty file masks it") {
    host.write(host.etc(), "50-plain.json", "");
    auto choice = chooseUefiFirmware(host.dirs(), false, "", "");
    REQUIRE(choice.ok());
    CHECK(fileName(choice->loader_path) == "OTHER_CODE.fd");
  }
  SECTION("an administrator's file sorts among the packaged ones") {
    host.describe(host.etc(), "05-local.json", "LOCAL_CODE.fd", "LOCAL_VARS.fd", {});
    auto choice = chooseUefiFirmware(host.dirs(), false, "", "");
    REQUIRE(choice.ok());
    CHECK(fileName(choice->loader_path) == "LOCAL_CODE.fd");
  }
}

TEST_CASE("secure boot wants SMM and prefers enrolled keys", "[firmware]") {
  FirmwareDirs host;
  host.describe(host.share(), "10-sb-no-smm.json", "NOSMM_CODE.fd", "NOSMM_VARS.fd",
                {"secure-boot"});
  host.describe(host.share(), "20-sb-empty.json", "EMPTY_CODE.fd", "EMPTY_VARS.fd",
                {"secure-boot", "requires-smm"});
  SECTION("without an enrolled build, the first secure SMM build") {
    auto choice = chooseUefiFirmware(host.dirs(), true, "", "");
    REQUIRE(choice.ok());
    CHECK(fileName(choice->loader_path) == "EMPTY_CODE.fd");
  }
  SECTION("an enrolled build wins even when it sorts later") {
    host.describe(host.share(), "30-sb-enrolled.json", "MS_CODE.fd", "MS_VARS.fd",
                  {"secure-boot", "requires-smm", "enrolled-keys"});
    auto choice = chooseUefiFirmware(host.dirs(), true, "", "");
    REQUIRE(choice.ok());
    CHECK(fileName(choice->loader_path) == "MS_CODE.fd");
    CHECK(choice->secure);
    CHECK(choice->requires_smm);
  }
  SECTION("no plain build: a clear error") {
    auto choice = chooseUefiFirmware(host.dirs(), false, "", "");
    REQUIRE_FALSE(choice.ok());
    CHECK(choice.error().code == kiln::ErrorCode::kUnavailable);
    CHECK_THAT(choice.error().message,
               Contains("This host has no UEFI firmware without secure boot (install ovmf)"));
  }
}

TEST_CASE("no descriptor fits: the error says what to install", "[firmware]") {
  FirmwareDirs host;
  host.describe(host.share(), "60-plain.json", "CODE.fd", "VARS.fd", {"acpi-s3"});
  auto choice = chooseUefiFirmware(host.dirs(), true, "", "");
  REQUIRE_FALSE(choice.ok());
  CHECK_THAT(choice.error().message,
             Contains("This host has no UEFI firmware with secure boot (install ovmf)"));
  // Missing directories are simply empty.
  auto none = chooseUefiFirmware({"/nonexistent/kiln-firmware"}, false, "", "");
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.error().message, Contains("/nonexistent/kiln-firmware"));
}

TEST_CASE("descriptors kiln cannot use are skipped", "[firmware]") {
  FirmwareDirs host;
  host.write(host.share(), "01-broken.json", "{ not json");
  host.write(host.share(), "02-array.json", "[]");
  host.write(host.share(), "03-notes.txt", "not a descriptor");
  nlohmann::json bios = {{"interface-types", {"bios"}},
                         {"mapping", {{"device", "memory"}, {"filename", "/x/bios.bin"}}},
                         {"targets", {{{"architecture", "x86_64"}}}},
                         {"features", nlohmann::json::array()}};
  host.write(host.share(), "04-bios.json", bios.dump());
  nlohmann::json arm = {{"interface-types", {"uefi"}},
                        {"mapping",
                         {{"device", "flash"},
                          {"executable", {{"filename", host.file("AAVMF_CODE.fd")}}},
                          {"nvram-template", {{"filename", host.file("AAVMF_VARS.fd")}}}}},
                        {"targets", {{{"architecture", "aarch64"}}}},
                        {"features", nlohmann::json::array()}};
  host.write(host.share(), "05-arm.json", arm.dump());
  nlohmann::json stateless = {{"interface-types", {"uefi"}},
                              {"mapping",
                               {{"device", "flash"},
                                {"mode", "stateless"},
                                {"executable", {{"filename", host.file("STATELESS.fd")}}}}},
                              {"targets", {{{"architecture", "x86_64"}}}},
                              {"features", nlohmann::json::array()}};
  host.write(host.share(), "06-stateless.json", stateless.dump());
  host.describe(host.share(), "90-good.json", "GOOD_CODE.fd", "GOOD_VARS.fd", {});
  auto choice = chooseUefiFirmware(host.dirs(), false, "", "");
  REQUIRE(choice.ok());
  CHECK(fileName(choice->loader_path) == "GOOD_CODE.fd");
}

TEST_CASE("a descriptor naming a missing file is an error, not a silent fallback", "[firmware]") {
  FirmwareDirs host;
  host.describe(host.share(), "10-stale.json", "GONE_CODE.fd", "GONE_VARS.fd", {}, false);
  host.describe(host.share(), "20-fine.json", "CODE.fd", "VARS.fd", {});
  auto choice = chooseUefiFirmware(host.dirs(), false, "", "");
  REQUIRE_FALSE(choice.ok());
  CHECK_THAT(choice.error().message, Contains("GONE_CODE.fd' named by") &&
                                         Contains("10-stale.json does not exist (reinstall ovmf)"));
}

TEST_CASE("uefi_loader and uefi_nvram_template override the search", "[firmware]") {
  FirmwareDirs host;
  host.describe(host.share(), "40-ms.json", "MS_CODE.fd", "MS_VARS.fd",
                {"secure-boot", "requires-smm", "enrolled-keys"});
  host.describe(host.share(), "60-plain.json", "CODE.fd", "VARS.fd", {});
  std::string classic_code = host.file("OVMF_CODE.fd");
  std::string classic_vars = host.file("OVMF_VARS.fd");

  SECTION("both given and present: used as they are") {
    auto choice = chooseUefiFirmware(host.dirs(), false, classic_code, classic_vars);
    REQUIRE(choice.ok());
    CHECK(choice->loader_path == classic_code);
    CHECK(choice->nvram_template_path == classic_vars);
    CHECK_FALSE(choice->secure);
    CHECK_FALSE(choice->requires_smm);
    CHECK(choice->descriptor_path.empty());
    // Secure boot with an undescribed build: the operator's word, with SMM.
    auto secure = chooseUefiFirmware(host.dirs(), true, classic_code, classic_vars);
    REQUIRE(secure.ok());
    CHECK(secure->secure);
    CHECK(secure->requires_smm);
  }
  SECTION("one without the other") {
    auto choice = chooseUefiFirmware(host.dirs(), false, classic_code, "");
    REQUIRE_FALSE(choice.ok());
    CHECK(choice.error().code == kiln::ErrorCode::kInvalidArgument);
    CHECK_THAT(choice.error().message, Contains("must be set together, but only uefi_loader"));
    auto other = chooseUefiFirmware(host.dirs(), false, "", classic_vars);
    REQUIRE_FALSE(other.ok());
    CHECK_THAT(other.error().message, Contains("only uefi_nvram_template is set"));
  }
  SECTION("a missing file") {
    auto choice = chooseUefiFirmware(host.dirs(), false, host.ovmf() + "/NOPE.fd", classic_vars);
    REQUIRE_FALSE(choice.ok());
    CHECK_THAT(choice.error().message,
               Contains("NOPE.fd' set by [libvirt] uefi_loader does not exist"));
  }
  SECTION("a described build: its features decide SMM and whether it can do secure boot") {
    auto ms = chooseUefiFirmware(host.dirs(), false, host.ovmf() + "/MS_CODE.fd",
                                 host.ovmf() + "/MS_VARS.fd");
    REQUIRE(ms.ok());
    CHECK(ms->requires_smm);
    CHECK_FALSE(ms->secure);
    auto plain_for_sb =
        chooseUefiFirmware(host.dirs(), true, host.ovmf() + "/CODE.fd", host.ovmf() + "/VARS.fd");
    REQUIRE_FALSE(plain_for_sb.ok());
    CHECK_THAT(plain_for_sb.error().message, Contains("has no secure boot"));
  }
}

TEST_CASE("machine types are checked against libvirt's capabilities", "[firmware]") {
  for (const char* machine : {"pc", "q35", "pc-q35-7.2", "pc-i440fx-7.2", "pc-q35-5.2"}) {
    INFO(machine);
    CHECK(machineSupported(kCapabilities, "x86_64", "kvm", machine));
    CHECK(machineSupported(kCapabilities, "x86_64", "qemu", machine));
  }
  CHECK_FALSE(machineSupported(kCapabilities, "x86_64", "kvm", "pc-q35-9.9"));
  CHECK_FALSE(machineSupported(kCapabilities, "x86_64", "kvm", "virt"));
  CHECK_FALSE(machineSupported(kCapabilities, "x86_64", "kvm", ""));
  // An i686-only machine, and a machine of another os_type.
  CHECK(machineSupported(kCapabilities, "i686", "kvm", "isapc"));
  CHECK_FALSE(machineSupported(kCapabilities, "x86_64", "kvm", "isapc"));
  CHECK_FALSE(machineSupported(kCapabilities, "x86_64", "kvm", "xenpv"));
  CHECK_FALSE(machineSupported(kCapabilities, "x86_64", "xen", "pc"));
  CHECK_FALSE(machineSupported(kCapabilities, "aarch64", "kvm", "pc"));
  CHECK_FALSE(machineSupported("<capabilities", "x86_64", "kvm", "pc"));

  SECTION("a domain type with its own machine list") {
    std::string caps = R"(<capabilities><guest><os_type>hvm</os_type><arch name='x86_64'>
      <machine>pc-i440fx-7.2</machine><machine canonical='pc-i440fx-7.2'>pc</machine>
      <machine>pc-q35-7.2</machine>
      <domain type='qemu'/>
      <domain type='kvm'><machine>pc-i440fx-7.2</machine></domain>
    </arch></guest></capabilities>)";
    CHECK(machineSupported(caps, "x86_64", "qemu", "pc-q35-7.2"));
    CHECK(machineSupported(caps, "x86_64", "qemu", "pc"));
    CHECK(machineSupported(caps, "x86_64", "kvm", "pc-i440fx-7.2"));
    CHECK_FALSE(machineSupported(caps, "x86_64", "kvm", "pc-q35-7.2"));
  }
}
