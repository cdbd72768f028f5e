#include <catch2/catch.hpp>

#include <fmt/format.h>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>

#include "common/command_runner.h"
#include "drivers/hardware/hardware_spec.h"
#include "drivers/libvirt/domain_spec.h"
#include "tests/support/temp_dir.h"

using kiln::drivers::DiskSpec;
using kiln::drivers::InstanceSpec;
using kiln::drivers::hardware::HardwareSpec;
using kiln::drivers::hardware::hardwareSpecFrom;
using kiln::drivers::libvirt::DomainOptions;
using kiln::drivers::libvirt::DomainSpec;
using kiln::drivers::libvirt::domainSpecFor;
using kiln::drivers::libvirt::FirmwareChoice;
using kiln::drivers::libvirt::renderDomainXml;
using nlohmann::json;

namespace {

DiskSpec fileDisk(std::string device, std::string path, std::string format,
                  std::string backing = "", std::string backing_format = "") {
  DiskSpec d;
  d.device = std::move(device);
  d.path = std::move(path);
  d.format = std::move(format);
  d.backing_path = std::move(backing);
  d.backing_format = std::move(backing_format);
  d.boot = d.device == "vda";
  return d;
}

DiskSpec iscsiDisk(std::string device, bool chap) {
  DiskSpec d;
  d.device = std::move(device);
  d.source = DiskSpec::Source::kIscsi;
  d.format = "raw";
  d.iscsi_name = "iqn.2010-10.org.openstack:volume-1/1";
  d.iscsi_hosts.push_back({"127.0.0.1", 3260});
  d.serial = "volume-1";
  if (chap) {
    d.auth_username = "chapuser";
    d.secret_usage = "kiln-0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10-volume-1";
  }
  return d;
}

InstanceSpec basicInstance() {
  InstanceSpec spec;
  spec.uuid = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10";
  spec.display_name = "web-1";
  spec.vcpus = 2;
  spec.memory_mb = 256;
  spec.disks.push_back(fileDisk("vda",
                                "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/disk",
                                "qcow2", "/var/lib/kiln/_base/abc", "raw"));
  spec.disks.push_back(fileDisk(
      "vdb", "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/disk.local", "qcow2"));
  spec.console_log_path =
      "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/console.log";
  spec.image_id = "cirros";
  spec.flavor_name = "m1.tiny";
  spec.created_at = "2026-11-26T00:00:00.000Z";
  return spec;
}

// Every generated document must pass libvirt's own RNG schema.
void requireSchemaValid(const std::string& xml) {
  kiln::testing::TempDir dir;
  std::string path = dir.path() + "/domain.xml";
  std::ofstream(path) << xml;
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec cmd;
  cmd.argv = {"virt-xml-validate", path, "domain"};
  auto out = runner.run(cmd);
  REQUIRE(out.ok());
  INFO(out->stdout_text << out->stderr_text << xml);
  REQUIRE(out->succeeded());
}

// Golden files: the expected XML lives in tests/golden; KILN_REGENERATE=1 rewrites it, and the
// diff is reviewed like code.
void checkGolden(const std::string& name, const std::string& xml) {
  std::string path = std::string(KILN_SOURCE_DIR) + "/tests/golden/" + name + ".xml";
  if (std::getenv("KILN_REGENERATE") != nullptr) {
    std::ofstream(path) << xml;
  }
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream expected;
  expected << in.rdbuf();
  CHECK(xml == expected.str());
}

}  // namespace

TEST_CASE("a basic kvm domain matches its golden file and libvirt's schema", "[xml]") {
  std::string xml = renderDomainXml(domainSpecFor(basicInstance(), "kvm", "pc", ""));
  checkGolden("domain-kvm-basic", xml);
  requireSchemaValid(xml);
}

TEST_CASE("a qemu (TCG) domain has no host-model CPU", "[xml]") {
  std::string xml = renderDomainXml(domainSpecFor(basicInstance(), "qemu", "q35", ""));
  checkGolden("domain-qemu-q35", xml);
  requireSchemaValid(xml);
  CHECK(xml.find("host-model") == std::string::npos);
}

TEST_CASE("the XML matrix validates against libvirt's schema", "[xml]") {
  for (const char* type : {"kvm", "qemu"}) {
    for (const char* machine : {"pc", "q35"}) {
      for (const char* cpu : {"", "host-passthrough", "none"}) {
        for (bool ephemeral : {false, true}) {
          auto inst = basicInstance();
          if (!ephemeral) inst.disks.pop_back();
          std::string xml = renderDomainXml(domainSpecFor(inst, type, machine, cpu));
          INFO(type << " " << machine << " " << cpu << " " << ephemeral);
          requireSchemaValid(xml);
        }
      }
    }
  }
}

TEST_CASE("hostile names are escaped, never break the document", "[xml]") {
  auto inst = basicInstance();
  inst.display_name = "</title><devices><disk type='block'/>&\"'";
  inst.image_id = "a'b\"c<d>";
  std::string xml = renderDomainXml(domainSpecFor(inst, "kvm", "pc", ""));
  requireSchemaValid(xml);
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  CHECK(std::string(doc.child("domain").child_value("title")) == inst.display_name);
  CHECK(doc.select_nodes("//disk").size() == 2);
}

TEST_CASE("disk formats are always explicit, and the base is never relabelled", "[xml]") {
  std::string xml = renderDomainXml(domainSpecFor(basicInstance(), "kvm", "pc", ""));
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  for (auto disk : doc.select_nodes("//disk")) {
    CHECK(std::string(disk.node().child("driver").attribute("type").value()) == "qcow2");
  }
  auto backing = doc.select_node("//disk[target/@dev='vda']/backingStore");
  REQUIRE(backing);
  CHECK(std::string(backing.node().child("format").attribute("type").value()) == "raw");
  CHECK(std::string(
            backing.node().child("source").child("seclabel").attribute("relabel").value()) == "no");
  // vdb has an explicitly empty chain: libvirt must not look for one.
  auto vdb_chain = doc.select_node("//disk[target/@dev='vdb']/backingStore");
  REQUIRE(vdb_chain);
  CHECK_FALSE(vdb_chain.node().first_child());
}

TEST_CASE("iSCSI volumes: network disks with CHAP by secret usage, never a password", "[xml]") {
  auto inst = basicInstance();
  inst.disks.push_back(iscsiDisk("vdc", true));
  inst.disks.push_back(iscsiDisk("vdd", false));
  DiskSpec block;
  block.device = "vde";
  block.source = DiskSpec::Source::kBlock;
  block.format = "raw";
  block.path = "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.2010-10.org.openstack:v-lun-1";
  block.read_only = true;
  inst.disks.push_back(block);
  std::string xml = renderDomainXml(domainSpecFor(inst, "kvm", "pc", ""));
  checkGolden("domain-volumes", xml);
  requireSchemaValid(xml);
}

TEST_CASE("a boot volume is the disk the firmware boots", "[xml]") {
  InstanceSpec inst = basicInstance();
  inst.disks.clear();
  DiskSpec root = iscsiDisk("vda", false);
  root.boot = true;
  inst.disks.push_back(root);
  std::string xml = renderDomainXml(domainSpecFor(inst, "qemu", "pc", ""));
  requireSchemaValid(xml);
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  CHECK(doc.select_node("//disk[@type='network'][target/@dev='vda']/boot[@order='1']"));
  CHECK_FALSE(doc.select_node("//os/boot"));
}

TEST_CASE("a single disk renders for hot-plug", "[xml]") {
  std::string xml = kiln::drivers::libvirt::renderDiskXml(iscsiDisk("vdc", true));
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  CHECK(std::string(doc.child("disk").attribute("type").value()) == "network");
  CHECK(std::string(doc.select_node("//auth/secret").node().attribute("usage").value()) ==
        "kiln-0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10-volume-1");
}

// ---- Image properties, firmware and devices ----

namespace {

constexpr const char* kInstanceDir = "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10";
constexpr const char* kIsoBase = "/var/lib/kiln/_base/9f86d081884c7d659a2feaa0c55ad015";

// Debian 12's ovmf files, as chooseUefiFirmware() picks them there (fixed here so the golden
// files do not depend on the host running the test).
FirmwareChoice plainFirmware() {
  return {"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", false, false,
          "/usr/share/qemu/firmware/60-edk2-x86_64.json"};
}
FirmwareChoice secureFirmware() {
  return {"/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", true, true,
          "/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json"};
}

HardwareSpec hardwareFor(const json& props, unsigned vcpus, std::string_view disk_format = "qcow2",
                         std::map<std::string, std::string> flavor = {}) {
  auto hw = hardwareSpecFrom(props, flavor, vcpus, disk_format);
  INFO((hw.ok() ? std::string() : hw.error().message));
  REQUIRE(hw.ok());
  return *hw;
}

// What the driver does: firmware for UEFI, the NVRAM file and the ISO path from the instance.
DomainOptions optionsFor(const HardwareSpec& hw, const std::string& domain_type = "kvm",
                         const std::string& machine_type = "pc") {
  DomainOptions o;
  o.domain_type = domain_type;
  o.machine_type = machine_type;
  if (hw.firmware == kiln::drivers::hardware::FirmwareType::kUefi) {
    o.firmware = hw.secure_boot ? secureFirmware() : plainFirmware();
    o.nvram_path = std::string(kInstanceDir) + "/nvram.fd";
  }
  if (hw.boot_from_cdrom) o.cdrom_path = kIsoBase;
  return o;
}

// An ISO boot: the root disk is blank (no backing file), the ISO is attached by the driver.
InstanceSpec isoInstance() {
  InstanceSpec inst = basicInstance();
  inst.disks[0].backing_path.clear();
  inst.disks[0].backing_format.clear();
  return inst;
}

std::string renderFor(const InstanceSpec& inst, const HardwareSpec& hw,
                      const std::string& domain_type = "kvm") {
  auto spec = domainSpecFor(inst, hw, optionsFor(hw, domain_type));
  INFO((spec.ok() ? std::string() : spec.error().message));
  REQUIRE(spec.ok());
  return renderDomainXml(*spec);
}

pugi::xml_document parse(const std::string& xml) {
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  return doc;
}

std::string attr(const pugi::xml_document& doc, const char* xpath, const char* name) {
  auto node = doc.select_node(xpath);
  return node ? node.node().attribute(name).value() : "<missing>";
}

bool has(const pugi::xml_document& doc, const char* xpath) {
  return static_cast<bool>(doc.select_node(xpath));
}

std::string text(const pugi::xml_document& doc, const char* xpath) {
  auto node = doc.select_node(xpath);
  return node ? node.node().child_value() : "<missing>";
}

}  // namespace

TEST_CASE("a default HardwareSpec renders what the old overload renders", "[xml][hardware]") {
  for (const char* machine : {"pc", "q35"}) {
    DomainOptions o;
    o.domain_type = "kvm";
    o.machine_type = machine;
    auto spec = domainSpecFor(basicInstance(), HardwareSpec{}, o);
    REQUIRE(spec.ok());
    CHECK(renderDomainXml(*spec) ==
          renderDomainXml(domainSpecFor(basicInstance(), "kvm", machine, "")));
  }
}

TEST_CASE("UEFI: explicit loader and per-instance NVRAM, q35 by default", "[xml][uefi]") {
  auto hw = hardwareFor({{"hw_firmware_type", "uefi"}}, 2);
  std::string xml = renderFor(basicInstance(), hw);
  checkGolden("domain-uefi", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  CHECK(attr(doc, "//os/type", "machine") == "q35");
  CHECK(text(doc, "//os/loader") == "/usr/share/OVMF/OVMF_CODE_4M.fd");
  CHECK(attr(doc, "//os/loader", "secure") == "no");
  CHECK(attr(doc, "//os/loader", "type") == "pflash");
  CHECK(attr(doc, "//os/loader", "readonly") == "yes");
  CHECK(attr(doc, "//os/nvram", "template") == "/usr/share/OVMF/OVMF_VARS_4M.fd");
  CHECK(text(doc, "//os/nvram") == std::string(kInstanceDir) + "/nvram.fd");
  CHECK_FALSE(doc.select_node("//features/smm"));
  // No firmware='efi' autoselection: the paths are the choice.
  CHECK_FALSE(doc.select_node("//os[@firmware]"));
  CHECK(attr(doc, "//cpu/topology", "sockets") == "2");
}

TEST_CASE("UEFI keeps an image's i440fx machine, and the host's q35 default", "[xml][uefi]") {
  auto pc = hardwareFor({{"hw_firmware_type", "uefi"}, {"hw_machine_type", "pc"}}, 2);
  CHECK(attr(parse(renderFor(basicInstance(), pc)), "//os/type", "machine") == "pc");
  auto uefi = hardwareFor({{"hw_firmware_type", "uefi"}}, 2);
  auto spec = domainSpecFor(basicInstance(), uefi, optionsFor(uefi, "kvm", "pc-q35-7.2"));
  REQUIRE(spec.ok());
  CHECK(spec->machine_type == "pc-q35-7.2");
  // BIOS guests keep the host's default.
  auto bios = hardwareFor(json::object(), 2);
  CHECK(attr(parse(renderFor(basicInstance(), bios)), "//os/type", "machine") == "pc");
}

TEST_CASE("UEFI secure boot: q35, SMM and the secure loader", "[xml][uefi]") {
  auto hw = hardwareFor({{"hw_firmware_type", "uefi"}, {"os_secure_boot", "required"}}, 2);
  std::string xml = renderFor(basicInstance(), hw);
  checkGolden("domain-uefi-secure", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  CHECK(attr(doc, "//os/type", "machine") == "q35");
  CHECK(attr(doc, "//os/loader", "secure") == "yes");
  CHECK(text(doc, "//os/loader") == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd");
  CHECK(attr(doc, "//features/smm", "state") == "on");
}

TEST_CASE("UEFI inputs the driver must give", "[xml][uefi]") {
  auto hw = hardwareFor({{"hw_firmware_type", "uefi"}}, 2);
  DomainOptions o = optionsFor(hw);
  SECTION("no firmware choice") {
    o.firmware.reset();
    auto spec = domainSpecFor(basicInstance(), hw, o);
    REQUIRE_FALSE(spec.ok());
    CHECK(spec.error().code == kiln::ErrorCode::kInternal);
  }
  SECTION("no NVRAM path") {
    o.nvram_path.clear();
    CHECK_FALSE(domainSpecFor(basicInstance(), hw, o).ok());
  }
  SECTION("a secure build for an image that did not ask for one") {
    o.firmware = secureFirmware();
    CHECK_FALSE(domainSpecFor(basicInstance(), hw, o).ok());
  }
  SECTION("a requires-smm build without secure boot still gets SMM") {
    o.firmware->requires_smm = true;
    auto spec = domainSpecFor(basicInstance(), hw, o);
    REQUIRE(spec.ok());
    CHECK(spec->smm);
  }
  SECTION("BIOS ignores a firmware choice") {
    auto bios = hardwareFor(json::object(), 2);
    auto spec = domainSpecFor(basicInstance(), bios, o);
    REQUIRE(spec.ok());
    CHECK(spec->loader_path.empty());
  }
  SECTION("a topology for another vCPU count is a bug") {
    auto four = hardwareFor({{"hw_firmware_type", "uefi"}}, 4);
    CHECK_FALSE(domainSpecFor(basicInstance(), four, o).ok());
  }
}

TEST_CASE("an ISO boots from a read-only CD-ROM, the blank root disk second", "[xml][iso]") {
  auto hw = hardwareFor(json::object(), 2, "iso");
  std::string xml = renderFor(isoInstance(), hw);
  checkGolden("domain-iso-cdrom", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  // pc (i440fx): IDE, on the classic secondary-master slot.
  CHECK(attr(doc, "//disk[@device='cdrom']/target", "dev") == "hdc");
  CHECK(attr(doc, "//disk[@device='cdrom']/target", "bus") == "ide");
  CHECK(attr(doc, "//disk[@device='cdrom']/source", "file") == std::string(kIsoBase));
  CHECK(attr(doc, "//disk[@device='cdrom']/driver", "type") == "raw");
  CHECK(attr(doc, "//disk[@device='cdrom']/source/seclabel", "relabel") == "no");
  CHECK(doc.select_node("//disk[@device='cdrom']/readonly"));
  CHECK(attr(doc, "//disk[@device='cdrom']/boot", "order") == "1");
  CHECK(attr(doc, "//disk[target/@dev='vda']/boot", "order") == "2");
  CHECK(doc.select_nodes("//boot").size() == 2);

  SECTION("q35: SATA, since q35 has no IDE") {
    auto q35 = hardwareFor({{"hw_machine_type", "q35"}}, 2, "iso");
    auto d = parse(renderFor(isoInstance(), q35));
    CHECK(attr(d, "//disk[@device='cdrom']/target", "bus") == "sata");
    CHECK(attr(d, "//disk[@device='cdrom']/target", "dev") == "sda");
  }
  SECTION("hw_cdrom_bus, next to disks already on sd names") {
    auto scsi = hardwareFor({{"hw_cdrom_bus", "scsi"}, {"hw_disk_bus", "sata"}}, 2, "iso");
    auto d = parse(renderFor(isoInstance(), scsi));
    CHECK(attr(d, "//disk[@device='cdrom']/target", "bus") == "scsi");
    CHECK(attr(d, "//disk[@device='cdrom']/target", "dev") == "sdc");
    CHECK(attr(d, "//controller[@type='scsi']", "model") == "virtio-scsi");
  }
  SECTION("no ISO path from the driver") {
    auto o = optionsFor(hw);
    o.cdrom_path.clear();
    CHECK_FALSE(domainSpecFor(isoInstance(), hw, o).ok());
  }
  SECTION("ide on a host whose default machine is q35") {
    auto ide = hardwareFor({{"hw_cdrom_bus", "ide"}}, 2, "iso");
    auto spec = domainSpecFor(isoInstance(), ide, optionsFor(ide, "kvm", "q35"));
    REQUIRE_FALSE(spec.ok());
    CHECK(spec.error().code == kiln::ErrorCode::kInvalidArgument);
    CHECK_THAT(spec.error().message, Catch::Matchers::Contains("no IDE controller"));
  }
}

TEST_CASE("Windows: local-time clock and Hyper-V enlightenments", "[xml][windows]") {
  auto hw = hardwareFor({{"os_type", "windows"},
                         {"hw_disk_bus", "sata"},
                         {"hw_video_model", "vga"},
                         {"hw_cpu_sockets", "1"}},
                        2);
  std::string xml = renderFor(basicInstance(), hw);
  checkGolden("domain-windows", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  CHECK(attr(doc, "//clock", "offset") == "localtime");
  CHECK(doc.select_node("//features/hyperv/relaxed[@state='on']"));
  CHECK(doc.select_node("//features/hyperv/vapic[@state='on']"));
  CHECK(doc.select_node("//features/hyperv/spinlocks[@state='on'][@retries='8191']"));
  CHECK(doc.select_node("//clock/timer[@name='hypervclock'][@present='yes']"));
  CHECK(attr(doc, "//cpu/topology", "cores") == "2");
  // TCG has no Hyper-V clock.
  auto tcg = parse(renderFor(basicInstance(), hw, "qemu"));
  CHECK_FALSE(tcg.select_node("//timer[@name='hypervclock']"));
  CHECK(tcg.select_node("//features/hyperv"));
}

TEST_CASE("hw_disk_bus scsi: sd names, a SCSI controller, volumes stay virtio", "[xml][bus]") {
  auto hw = hardwareFor({{"hw_disk_bus", "scsi"}, {"hw_scsi_model", "megasas"}}, 2);
  InstanceSpec inst = basicInstance();
  inst.disks.push_back(iscsiDisk("vdc", true));
  std::string xml = renderFor(inst, hw);
  checkGolden("domain-scsi", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  CHECK(attr(doc, "//disk[target/@dev='sda']/target", "bus") == "scsi");
  CHECK(attr(doc, "//disk[target/@dev='sda']/boot", "order") == "1");
  CHECK(attr(doc, "//disk[target/@dev='sdb']/target", "bus") == "scsi");
  CHECK(attr(doc, "//disk[@type='network']/target", "dev") == "vdc");
  CHECK(attr(doc, "//disk[@type='network']/target", "bus") == "virtio");
  // QEMU's megasas is libvirt's lsisas1078.
  CHECK(attr(doc, "//controller[@type='scsi']", "model") == "lsisas1078");
  CHECK(doc.select_nodes("//controller").size() == 1);

  SECTION("a root volume takes the image's bus") {
    InstanceSpec bfv = basicInstance();
    bfv.disks.clear();
    DiskSpec root = iscsiDisk("vda", false);
    root.boot = true;
    bfv.disks.push_back(root);
    auto d = parse(renderFor(bfv, hw));
    CHECK(attr(d, "//disk[@type='network']/target", "dev") == "sda");
    CHECK(attr(d, "//disk[@type='network']/target", "bus") == "scsi");
  }
  SECTION("ide renames to hd and has four slots") {
    auto ide = hardwareFor({{"hw_disk_bus", "ide"}}, 2);
    auto d = parse(renderFor(basicInstance(), ide));
    CHECK(attr(d, "//disk[target/@dev='hda']/target", "bus") == "ide");
    CHECK(attr(d, "//disk[target/@dev='hdb']/target", "bus") == "ide");
    InstanceSpec many = basicInstance();
    many.disks.push_back(fileDisk("vde", "/var/lib/kiln/x/disk.swap", "qcow2"));
    auto spec = domainSpecFor(many, ide, optionsFor(ide));
    REQUIRE_FALSE(spec.ok());
    CHECK_THAT(spec.error().message, Catch::Matchers::Contains("IDE has four slots"));
  }
}

TEST_CASE("RNG, guest agent, boot menu and video", "[xml][devices]") {
  auto hw =
      hardwareFor({{"hw_rng_model", "virtio"},
                   {"hw_qemu_guest_agent", "yes"},
                   {"hw_boot_menu", "true"},
                   {"hw_video_model", "virtio"},
                   {"hw_cpu_cores", "2"}},
                  4, "qcow2", {{"hw_rng:rate_bytes", "1024"}, {"hw_rng:rate_period", "1000"}});
  InstanceSpec inst = basicInstance();
  inst.vcpus = 4;
  std::string xml = renderFor(inst, hw);
  checkGolden("domain-devices", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  CHECK(text(doc, "//rng[@model='virtio']/backend[@model='random']") == "/dev/urandom");
  CHECK(attr(doc, "//rng/rate", "bytes") == "1024");
  CHECK(attr(doc, "//rng/rate", "period") == "1000");
  CHECK(attr(doc, "//channel[@type='unix']/target", "name") == "org.qemu.guest_agent.0");
  CHECK(attr(doc, "//channel/target", "type") == "virtio");
  CHECK(attr(doc, "//os/bootmenu", "enable") == "yes");
  CHECK(attr(doc, "//os/bootmenu", "timeout") == "3000");
  CHECK(attr(doc, "//video/model", "type") == "virtio");
  CHECK(attr(doc, "//cpu", "mode") == "host-model");
  CHECK(attr(doc, "//cpu/topology", "sockets") == "2");
  CHECK(attr(doc, "//cpu/topology", "cores") == "2");
  CHECK(attr(doc, "//cpu/topology", "threads") == "1");
  // By default: none of these.
  auto plain = parse(renderFor(basicInstance(), hardwareFor(json::object(), 2)));
  for (const char* absent : {"//rng", "//channel", "//video", "//os/bootmenu", "//controller",
                             "//features/hyperv", "//features/smm", "//os/loader"}) {
    INFO(absent);
    CHECK_FALSE(plain.select_node(absent));
  }
}

// Every combination the image properties can produce on this axis set, rendered, checked for
// the invariants that matter, and validated against libvirt's schema in one xmllint run (it
// takes many files; virt-xml-validate takes one, and is run on one of them to show both agree).
// One long table of axes reads better than the same table split over helpers.
// NOLINTNEXTLINE(readability-function-size)
TEST_CASE("the hardware matrix validates against libvirt's schema", "[xml][matrix]") {
  auto started = std::chrono::steady_clock::now();
  kiln::testing::TempDir dir;
  std::vector<std::string> files;
  std::map<std::string, std::string> label_of;
  for (const char* firmware : {"bios", "uefi", "uefi-secure"}) {
    for (const char* machine : {"pc", "q35"}) {
      if (std::string(firmware) == "uefi-secure" && std::string(machine) == "pc") continue;
      for (const char* bus : {"virtio", "scsi", "sata"}) {
        for (const char* video : {"none", "virtio", "vga"}) {
          for (bool agent : {false, true}) {
            for (bool rng : {false, true}) {
              for (bool iso : {false, true}) {
                json props = {{"hw_machine_type", machine},
                              {"hw_disk_bus", bus},
                              {"hw_video_model", video},
                              {"hw_qemu_guest_agent", agent}};
                std::string fw(firmware);
                props["hw_firmware_type"] = fw == "bios" ? "bios" : "uefi";
                if (fw == "uefi-secure") props["os_secure_boot"] = "required";
                if (rng) props["hw_rng_model"] = "virtio";
                std::string label = fmt::format("{}-{}-{}-{}-agent{}-rng{}-iso{}", firmware,
                                                machine, bus, video, agent, rng, iso);
                INFO(label);
                auto hw = hardwareFor(props, 2, iso ? "iso" : "qcow2");
                std::string xml = renderFor(iso ? isoInstance() : basicInstance(), hw);

                auto doc = parse(xml);
                CHECK(attr(doc, "//os/type", "machine") == machine);
                CHECK(doc.select_nodes("//boot[@order='1']").size() == 1);
                CHECK(has(doc, "//os/loader") == (fw != "bios"));
                CHECK(has(doc, "//features/smm") == (fw == "uefi-secure"));
                CHECK(has(doc, "//controller[@type='scsi']") == (std::string(bus) == "scsi"));
                CHECK(has(doc, "//video") == (std::string(video) != "none"));
                CHECK(has(doc, "//channel") == agent);
                CHECK(has(doc, "//rng") == rng);
                CHECK(has(doc, "//disk[@device='cdrom']/boot[@order='1']") == iso);
                CHECK(attr(doc, "//disk[serial='vda' or serial='sda']/target", "bus") == bus);

                std::string path = fmt::format("{}/{}.xml", dir.path(), label);
                std::ofstream(path) << xml;
                files.push_back(path);
                label_of[path] = label;
              }
            }
          }
        }
      }
    }
  }
  REQUIRE(files.size() == 360);
  // A control: the batch run must notice one bad document among the good ones.
  std::string bad = dir.path() + "/control-invalid.xml";
  std::ofstream(bad) << "<domain type='kvm'><name>x</name><bogus/></domain>";

  kiln::PosixCommandRunner runner;
  kiln::CommandSpec xmllint;
  xmllint.argv = {"xmllint", "--noout", "--relaxng", "/usr/share/libvirt/schemas/domain.rng"};
  xmllint.argv.insert(xmllint.argv.end(), files.begin(), files.end());
  xmllint.argv.push_back(bad);
  xmllint.max_output_bytes = 4 << 20;
  auto out = runner.run(xmllint);
  REQUIRE(out.ok());
  INFO(out->stderr_text.substr(0, 8000));
  // xmllint prints "<file> validates" per good file and exits non-zero if any file fails.
  std::size_t validated = 0;
  for (std::size_t pos = 0; (pos = out->stderr_text.find(" validates\n", pos)) != std::string::npos;
       ++pos) {
    ++validated;
  }
  CHECK(validated == files.size());
  CHECK(out->stderr_text.find(bad + " fails to validate") != std::string::npos);
  CHECK(out->exit_code != 0);

  // The same schema through libvirt's own tool, on the busiest document.
  kiln::CommandSpec one;
  one.argv = {"virt-xml-validate",
              dir.path() + "/uefi-secure-q35-scsi-vga-agenttrue-rngtrue-isotrue.xml", "domain"};
  auto single = runner.run(one);
  REQUIRE(single.ok());
  INFO(single->stdout_text << single->stderr_text);
  CHECK(single->succeeded());

  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  WARN(fmt::format("hardware matrix: {} documents rendered and validated in {:.2f} s", files.size(),
                   seconds));
  CHECK(seconds < 60);
}

TEST_CASE("an encrypted ephemeral disk names its LUKS secret by uuid and never the key", "[xml]") {
  auto inst = basicInstance();
  inst.disks[1].encryption_secret_uuid = "5a1c0c4e-3f0e-4d1b-8d2e-0f6f0c2b9a11";
  std::string xml = renderDomainXml(domainSpecFor(inst, "qemu", "pc", ""));
  checkGolden("domain-encrypted-ephemeral", xml);
  requireSchemaValid(xml);
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  auto secret =
      doc.select_node("//disk[target/@dev='vdb']/source/encryption[@format='luks']/secret");
  REQUIRE(secret);
  CHECK(std::string(secret.node().attribute("type").value()) == "passphrase");
  CHECK(std::string(secret.node().attribute("uuid").value()) ==
        "5a1c0c4e-3f0e-4d1b-8d2e-0f6f0c2b9a11");
  // vda stays in clear: only the disk that asked for it is encrypted.
  CHECK_FALSE(doc.select_node("//disk[target/@dev='vda']//encryption"));
  // Hot-plug XML of the same disk carries the same element.
  std::string one = kiln::drivers::libvirt::renderDiskXml(inst.disks[1]);
  CHECK(one.find("<encryption format=\"luks\">") != std::string::npos);
}

TEST_CASE("a rendered domain reads back into what it says about the instance", "[xml][adopt]") {
  auto inst = basicInstance();
  inst.project_id = "project-a";
  inst.disks[1].encryption_secret_uuid = "5a1c0c4e-3f0e-4d1b-8d2e-0f6f0c2b9a11";
  inst.disks.push_back(iscsiDisk("vdc", true));
  std::string xml = renderDomainXml(domainSpecFor(inst, "qemu", "pc", ""));
  requireSchemaValid(xml);
  CHECK(xml.find("<kiln:owner project_id=\"project-a\" />") != std::string::npos);
  auto d = kiln::drivers::libvirt::describeDomainXml(xml);
  REQUIRE(d.ok());
  CHECK(d->uuid == inst.uuid);
  CHECK(d->display_name == "web-1");
  CHECK(d->project_id == "project-a");
  CHECK(d->image_id == "cirros");
  CHECK(d->flavor_name == "m1.tiny");
  CHECK(d->created_at == "2026-11-26T00:00:00.000Z");
  CHECK(d->vcpus == 2);
  CHECK(d->memory_mb == 256);
  REQUIRE(d->disks.size() == 3);
  CHECK(d->disks[0].device == "vda");
  CHECK(d->disks[0].path == inst.disks[0].path);
  CHECK(d->disks[0].format == "qcow2");
  CHECK(d->disks[0].backing_path == "/var/lib/kiln/_base/abc");
  CHECK(d->disks[0].backing_format == "raw");
  CHECK(d->disks[1].backing_path.empty());
  CHECK(d->disks[1].encryption_secret_uuid == "5a1c0c4e-3f0e-4d1b-8d2e-0f6f0c2b9a11");
  CHECK(d->disks[2].source == DiskSpec::Source::kIscsi);
  CHECK(d->disks[2].iscsi_name == "iqn.2010-10.org.openstack:volume-1/1");
  REQUIRE(d->disks[2].iscsi_hosts.size() == 1);
  CHECK(d->disks[2].iscsi_hosts[0].port == 3260);
  CHECK(d->disks[2].auth_username == "chapuser");
  CHECK(d->disks[2].secret_usage == "kiln-0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10-volume-1");
  CHECK(d->disks[2].serial == "volume-1");
  // libvirt writes memory back in KiB, and a domain without kiln's metadata is not kiln's.
  std::string kib = xml;
  auto at = kib.find("<memory unit=\"MiB\">256</memory>");
  REQUIRE(at != std::string::npos);
  kib.replace(at, std::string("<memory unit=\"MiB\">256</memory>").size(),
              "<memory unit=\"KiB\">262144</memory>");
  CHECK(kiln::drivers::libvirt::describeDomainXml(kib)->memory_mb == 256);
  CHECK(kiln::drivers::libvirt::describeDomainXml("<domain><uuid>x</uuid></domain>").error().code ==
        kiln::ErrorCode::kNotFound);
}

TEST_CASE("NICs are kiln's taps opened by name, and the config drive is a private CD-ROM",
          "[xml][network]") {
  auto inst = basicInstance();
  kiln::drivers::NicSpec bridged;
  bridged.port_id = "5f0c7d2e-aaaa-4bbb-8ccc-000000000001";
  bridged.mac = "fa:16:3e:11:22:33";
  bridged.devname = "tap5f0c7d2e-aa";
  bridged.bridge = "brq-test";
  bridged.mtu = 1450;
  kiln::drivers::NicSpec tap = bridged;
  tap.port_id = "port-2";
  tap.mac = "fa:16:3e:44:55:66";
  tap.devname = "tapport-2";
  tap.type = kiln::drivers::NicSpec::Type::kTap;
  tap.mtu = 0;
  tap.queues = 4;
  inst.nics = {bridged, tap};
  inst.config_drive_path =
      "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/disk.config";
  auto hw = hardwareFor(json::object(), 2, "raw");
  std::string xml = renderFor(inst, hw);
  checkGolden("domain-network", xml);
  requireSchemaValid(xml);
  auto doc = parse(xml);
  REQUIRE(doc.select_nodes("//interface").size() == 2);
  CHECK(attr(doc, "//interface[1]", "type") == "ethernet");
  CHECK(attr(doc, "//interface[1]/mac", "address") == "fa:16:3e:11:22:33");
  CHECK(attr(doc, "//interface[1]/target", "dev") == "tap5f0c7d2e-aa");
  CHECK(attr(doc, "//interface[1]/target", "managed") == "no");
  CHECK(attr(doc, "//interface[1]/model", "type") == "virtio");
  CHECK(attr(doc, "//interface[1]/mtu", "size") == "1450");
  CHECK(attr(doc, "//interface[2]/driver", "queues") == "4");
  CHECK_FALSE(doc.select_node("//interface[2]/mtu"));
  // The config drive: IDE on i440fx, read-only, relabelled for the guest (it is the instance's).
  CHECK(attr(doc, "//disk[@device='cdrom']/target", "bus") == "ide");
  CHECK(attr(doc, "//disk[@device='cdrom']/source", "file") == inst.config_drive_path);
  CHECK(doc.select_node("//disk[@device='cdrom']/readonly"));
  CHECK_FALSE(doc.select_node("//disk[@device='cdrom']/source/seclabel"));
  CHECK_FALSE(doc.select_node("//disk[@device='cdrom']/boot"));

  SECTION("q35: the config drive goes on SATA") {
    auto q35 = hardwareFor({{"hw_machine_type", "q35"}}, 2, "raw");
    auto d = parse(renderFor(inst, q35));
    CHECK(attr(d, "//disk[@device='cdrom']/target", "bus") == "sata");
  }
  SECTION("an ISO image and a config drive: two CD-ROMs on IDE") {
    auto iso = isoInstance();
    iso.config_drive_path = inst.config_drive_path;
    auto d = parse(renderFor(iso, hardwareFor(json::object(), 2, "iso")));
    CHECK(d.select_nodes("//disk[@device='cdrom']").size() == 2);
    requireSchemaValid(renderFor(iso, hardwareFor(json::object(), 2, "iso")));
  }
  SECTION("an emulated model (hw_vif_model e1000) gets no <mtu>, which libvirt refuses for it") {
    auto e1000 = inst;
    for (auto& nic : e1000.nics) nic.model = "e1000";
    for (auto& nic : e1000.nics) nic.queues = 1;
    std::string rendered = renderFor(e1000, hw);
    requireSchemaValid(rendered);
    auto d = parse(rendered);
    CHECK(attr(d, "//interface[1]/model", "type") == "e1000");
    CHECK_FALSE(d.select_node("//interface/mtu"));
  }
  SECTION("one interface renders for hot-plug") {
    auto one = parse(kiln::drivers::libvirt::renderInterfaceXml(bridged));
    CHECK(attr(one, "/interface/target", "dev") == "tap5f0c7d2e-aa");
    CHECK(attr(one, "/interface/alias", "name") == "ua-" + bridged.port_id);
  }
}
