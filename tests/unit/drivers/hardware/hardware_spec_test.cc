#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "drivers/hardware/hardware_spec.h"

using kiln::ErrorCode;
using kiln::drivers::hardware::CpuTopology;
using kiln::drivers::hardware::DiskBus;
using kiln::drivers::hardware::FirmwareType;
using kiln::drivers::hardware::HardwareSpec;
using kiln::drivers::hardware::hardwareSpecFrom;
using kiln::drivers::hardware::OsType;
using nlohmann::json;
using Specs = std::map<std::string, std::string>;

namespace {

kiln::Result<HardwareSpec> fromImage(json props, unsigned vcpus = 1, Specs specs = {},
                                     std::string_view disk_format = "qcow2") {
  return hardwareSpecFrom(props, specs, vcpus, disk_format);
}

// The error's message, for CHECK_THAT; fails the test when there was no error.
std::string errorOf(const kiln::Result<HardwareSpec>& r) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  return r.error().message;
}

using Catch::Matchers::Contains;

CpuTopology topologyOf(unsigned vcpus, Specs specs, json props = json::object()) {
  auto r = hardwareSpecFrom(props, specs, vcpus, "raw");
  INFO((r.ok() ? std::string() : r.error().message));
  REQUIRE(r.ok());
  REQUIRE(r->cpu_topology);
  return *r->cpu_topology;
}

}  // namespace

TEST_CASE("no properties give nova's defaults", "[hardware]") {
  auto hw = fromImage(json::object(), 4);
  REQUIRE(hw.ok());
  CHECK(hw->firmware == FirmwareType::kBios);
  CHECK_FALSE(hw->secure_boot);
  CHECK(hw->machine_type.empty());
  CHECK(hw->disk_bus == DiskBus::kVirtio);
  CHECK_FALSE(hw->cdrom_bus);
  CHECK(hw->scsi_model == "virtio-scsi");
  CHECK(hw->video_model == "none");
  CHECK_FALSE(hw->rng);
  CHECK(hw->vif_model == "virtio");
  CHECK_FALSE(hw->guest_agent);
  CHECK_FALSE(hw->boot_menu);
  CHECK(hw->os_type == OsType::kUnspecified);
  CHECK(hw->cpu_topology == CpuTopology{4, 1, 1});
  CHECK_FALSE(hw->boot_from_cdrom);
  CHECK(hw->ignored_properties.empty());
  // A null properties document is the same as an empty one.
  CHECK(fromImage(json()).ok());
}

TEST_CASE("hw_firmware_type and os_secure_boot", "[hardware]") {
  CHECK(fromImage({{"hw_firmware_type", "uefi"}})->firmware == FirmwareType::kUefi);
  CHECK(fromImage({{"hw_firmware_type", "bios"}})->firmware == FirmwareType::kBios);
  CHECK_THAT(errorOf(fromImage({{"hw_firmware_type", "efi"}})),
             Contains("hw_firmware_type is 'efi'; allowed values are bios and uefi."));
  CHECK_THAT(errorOf(fromImage({{"hw_firmware_type", "UEFI"}})), Contains("bios and uefi"));

  auto secure = fromImage({{"hw_firmware_type", "uefi"}, {"os_secure_boot", "required"}});
  REQUIRE(secure.ok());
  CHECK(secure->secure_boot);
  // "optional" and "disabled" both mean no secure boot.
  for (const char* policy : {"optional", "disabled"}) {
    auto hw = fromImage({{"hw_firmware_type", "uefi"}, {"os_secure_boot", policy}});
    REQUIRE(hw.ok());
    CHECK_FALSE(hw->secure_boot);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_firmware_type", "uefi"}, {"os_secure_boot", "yes"}})),
             Contains("os_secure_boot is 'yes'; allowed values are required, optional and "
                      "disabled."));

  SECTION("required without UEFI is refused") {
    CHECK_THAT(errorOf(fromImage({{"os_secure_boot", "required"}})),
               Contains("needs UEFI firmware and the image's hw_firmware_type is 'bios'"));
    CHECK_THAT(errorOf(fromImage({}, 1, {{"os:secure_boot", "required"}})),
               Contains("flavor extra spec os:secure_boot"));
    // Optional without UEFI is fine: it asks for nothing.
    CHECK(fromImage({{"os_secure_boot", "optional"}}).ok());
  }
  SECTION("the flavor's os:secure_boot counts too, and must agree with the image") {
    auto hw = fromImage({{"hw_firmware_type", "uefi"}}, 1, {{"os:secure_boot", "required"}});
    REQUIRE(hw.ok());
    CHECK(hw->secure_boot);
    CHECK_THAT(errorOf(fromImage({{"hw_firmware_type", "uefi"}, {"os_secure_boot", "disabled"}}, 1,
                                 {{"os:secure_boot", "required"}})),
               Contains("must agree"));
    CHECK_THAT(errorOf(fromImage({{"hw_firmware_type", "uefi"}}, 1, {{"os:secure_boot", "on"}})),
               Contains("Flavor extra spec os:secure_boot is 'on'"));
  }
  SECTION("secure boot needs q35 when the image names a machine") {
    CHECK_THAT(errorOf(fromImage({{"hw_firmware_type", "uefi"},
                                  {"os_secure_boot", "required"},
                                  {"hw_machine_type", "pc"}})),
               Contains("needs a q35 machine type"));
    CHECK(fromImage({{"hw_firmware_type", "uefi"},
                     {"os_secure_boot", "required"},
                     {"hw_machine_type", "pc-q35-7.2"}})
              .ok());
  }
}

TEST_CASE("hw_machine_type is a machine name", "[hardware]") {
  for (const char* name : {"pc", "q35", "pc-q35-7.2", "pc-i440fx-7.2", "microvm"}) {
    auto hw = fromImage({{"hw_machine_type", name}});
    REQUIRE(hw.ok());
    CHECK(hw->machine_type == name);
  }
  for (const std::string& bad : std::vector<std::string>{"", "Q35", "-pc", "pc q35", "pc;rm",
                                                         std::string(65, 'a'), "x86_64=q35"}) {
    INFO(bad);
    CHECK_THAT(errorOf(fromImage({{"hw_machine_type", bad}})),
               Contains("hw_machine_type is") && Contains("machine type name"));
  }
  CHECK(fromImage({{"hw_machine_type", std::string(64, 'a')}}).ok());
}

TEST_CASE("disk, cdrom and SCSI model properties", "[hardware]") {
  for (auto [name, bus] : {std::pair{"virtio", DiskBus::kVirtio}, std::pair{"scsi", DiskBus::kScsi},
                           std::pair{"sata", DiskBus::kSata}, std::pair{"ide", DiskBus::kIde},
                           std::pair{"usb", DiskBus::kUsb}}) {
    CHECK(fromImage({{"hw_disk_bus", name}})->disk_bus == bus);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_disk_bus", "fdc"}})),
             Contains("Image property hw_disk_bus is 'fdc'; allowed values are virtio, scsi, "
                      "sata, ide and usb."));
  for (auto [name, bus] : {std::pair{"ide", DiskBus::kIde}, std::pair{"sata", DiskBus::kSata},
                           std::pair{"scsi", DiskBus::kScsi}, std::pair{"usb", DiskBus::kUsb}}) {
    CHECK(fromImage({{"hw_cdrom_bus", name}})->cdrom_bus == bus);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_cdrom_bus", "virtio"}})),
             Contains("hw_cdrom_bus is 'virtio'; allowed values are ide, sata, scsi and usb."));

  for (const char* model :
       {"virtio-scsi", "lsilogic", "lsisas1068", "lsisas1078", "mptsas1068", "megasas"}) {
    CHECK(fromImage({{"hw_scsi_model", model}})->scsi_model == model);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_scsi_model", "ibmvscsi"}})), Contains("POWER"));
  CHECK_THAT(errorOf(fromImage({{"hw_scsi_model", "buslogic"}})),
             Contains("hw_scsi_model is 'buslogic'; allowed values are virtio-scsi"));

  SECTION("q35 has no IDE") {
    CHECK_THAT(errorOf(fromImage({{"hw_machine_type", "q35"}, {"hw_disk_bus", "ide"}})),
               Contains("has no IDE controller"));
    CHECK_THAT(errorOf(fromImage({{"hw_machine_type", "pc-q35-7.2"}, {"hw_cdrom_bus", "ide"}}, 1,
                                 {}, "iso")),
               Contains("hw_cdrom_bus is 'ide', but machine type 'pc-q35-7.2'"));
    CHECK(fromImage({{"hw_machine_type", "pc"}, {"hw_disk_bus", "ide"}}).ok());
    // Without a CD-ROM the cdrom bus does not matter.
    CHECK(fromImage({{"hw_machine_type", "q35"}, {"hw_cdrom_bus", "ide"}}).ok());
  }
}

TEST_CASE("video, vif, os_type and hw_architecture", "[hardware]") {
  for (const char* model : {"none", "virtio", "vga", "cirrus", "qxl", "bochs"}) {
    CHECK(fromImage({{"hw_video_model", model}})->video_model == model);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_video_model", "vmvga"}})),
             Contains("hw_video_model is 'vmvga'; allowed values are none, virtio, vga, cirrus, "
                      "qxl and bochs."));
  for (const char* model : {"virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet"}) {
    CHECK(fromImage({{"hw_vif_model", model}})->vif_model == model);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_vif_model", "vmxnet3"}})), Contains("hw_vif_model"));
  CHECK(fromImage({{"os_type", "linux"}})->os_type == OsType::kLinux);
  CHECK(fromImage({{"os_type", "windows"}})->os_type == OsType::kWindows);
  CHECK_THAT(errorOf(fromImage({{"os_type", "freebsd"}})),
             Contains("os_type is 'freebsd'; allowed values are linux and windows."));
  CHECK(fromImage({{"hw_architecture", "x86_64"}}).ok());
  CHECK_THAT(errorOf(fromImage({{"hw_architecture", "aarch64"}})),
             Contains("hw_architecture is 'aarch64'") && Contains("x86_64 guests only"));
}

TEST_CASE("booleans: guest agent and boot menu", "[hardware]") {
  for (json v : {json("yes"), json("true"), json("True"), json("on"), json("1"), json(true)}) {
    INFO(v.dump());
    CHECK(fromImage({{"hw_qemu_guest_agent", v}})->guest_agent);
    CHECK(fromImage({{"hw_boot_menu", v}})->boot_menu);
  }
  for (json v : {json("no"), json("false"), json("off"), json("0"), json(false)}) {
    CHECK_FALSE(fromImage({{"hw_qemu_guest_agent", v}})->guest_agent);
    CHECK_FALSE(fromImage({{"hw_boot_menu", v}})->boot_menu);
  }
  CHECK_THAT(errorOf(fromImage({{"hw_qemu_guest_agent", "sure"}})),
             Contains("Image property hw_qemu_guest_agent is 'sure'; allowed values are true, "
                      "false, yes, no, on, off, 1 and 0."));
  CHECK_THAT(errorOf(fromImage({{"hw_boot_menu", json::array()}})),
             Contains("hw_boot_menu must be a string, a number or a boolean"));
  // The flavor's hw:boot_menu wins over the image.
  CHECK(fromImage({{"hw_boot_menu", "no"}}, 1, {{"hw:boot_menu", "yes"}})->boot_menu);
  CHECK_FALSE(fromImage({{"hw_boot_menu", "yes"}}, 1, {{"hw:boot_menu", "false"}})->boot_menu);
  CHECK_THAT(errorOf(fromImage({}, 1, {{"hw:boot_menu", "maybe"}})),
             Contains("Flavor extra spec hw:boot_menu is 'maybe'"));
}

TEST_CASE("hw_rng_model and the flavor's hw_rng:* specs", "[hardware]") {
  auto hw = fromImage({{"hw_rng_model", "virtio"}});
  REQUIRE(hw.ok());
  REQUIRE(hw->rng);
  CHECK(hw->rng->rate_bytes == 0);
  CHECK_FALSE(fromImage({})->rng);
  CHECK_THAT(errorOf(fromImage({{"hw_rng_model", "egd"}})),
             Contains("hw_rng_model is 'egd'; allowed values are virtio."));

  SECTION("the flavor may forbid it") {
    CHECK_THAT(errorOf(fromImage({{"hw_rng_model", "virtio"}}, 1, {{"hw_rng:allowed", "False"}})),
               Contains("forbids one (hw_rng:allowed=False)"));
    CHECK(fromImage({{"hw_rng_model", "virtio"}}, 1, {{"hw_rng:allowed", "True"}})->rng);
    // Forbidding it matters only when the image asks for one.
    CHECK(fromImage({}, 1, {{"hw_rng:allowed", "false"}}).ok());
    CHECK_THAT(errorOf(fromImage({}, 1, {{"hw_rng:allowed", "nope"}})),
               Contains("Flavor extra spec hw_rng:allowed is 'nope'"));
  }
  SECTION("rate limits") {
    auto limited = fromImage({{"hw_rng_model", "virtio"}}, 1,
                             {{"hw_rng:rate_bytes", "1024"}, {"hw_rng:rate_period", "2000"}});
    REQUIRE(limited.ok());
    CHECK(*limited->rng == kiln::drivers::hardware::RngSpec{1024, 2000});
    // A period alone limits nothing.
    auto period_only = fromImage({{"hw_rng_model", "virtio"}}, 1, {{"hw_rng:rate_period", "2000"}});
    CHECK(*period_only->rng == kiln::drivers::hardware::RngSpec{});
    CHECK_THAT(errorOf(fromImage({{"hw_rng_model", "virtio"}}, 1, {{"hw_rng:rate_bytes", "-1"}})),
               Contains("hw_rng:rate_bytes is '-1'; it must be a whole number"));
    CHECK_THAT(errorOf(fromImage({}, 1, {{"hw_rng:rate_period", "0"}})),
               Contains("hw_rng:rate_period is '0'"));
  }
}

TEST_CASE("disk_format iso boots from a CD-ROM", "[hardware]") {
  CHECK(fromImage({}, 1, {}, "iso")->boot_from_cdrom);
  CHECK_FALSE(fromImage({}, 1, {}, "raw")->boot_from_cdrom);
  CHECK_FALSE(fromImage({}, 1, {}, "qcow2")->boot_from_cdrom);
}

TEST_CASE("unknown hw_ properties are ignored but named", "[hardware]") {
  auto hw = fromImage({{"hw_watchdog_action", "reset"},
                       {"hw_numa_nodes", "2"},
                       {"hw_disk_bus", "virtio"},
                       {"hw_made_up", "x"},
                       {"os_distro", "ubuntu"},
                       {"architecture", "x86_64"}});
  REQUIRE(hw.ok());
  CHECK(hw->ignored_properties ==
        std::vector<std::string>{"hw_made_up", "hw_numa_nodes", "hw_watchdog_action"});
}

TEST_CASE("malformed documents and counts", "[hardware]") {
  CHECK_THAT(errorOf(hardwareSpecFrom(json::array(), {}, 1, "raw")),
             Contains("Image properties must be a JSON object"));
  CHECK_THAT(errorOf(hardwareSpecFrom(json::object(), {}, 0, "raw")), Contains("0 vCPUs"));
  CHECK_THAT(errorOf(fromImage({{"hw_cpu_sockets", "two"}}, 2)),
             Contains("Image property hw_cpu_sockets is 'two'; it must be a whole number from 1 "
                      "to 65536."));
  CHECK_THAT(errorOf(fromImage({{"hw_cpu_sockets", "0"}}, 2)), Contains("hw_cpu_sockets is '0'"));
  CHECK_THAT(errorOf(fromImage({}, 2, {{"hw:cpu_max_cores", "-2"}})),
             Contains("Flavor extra spec hw:cpu_max_cores is '-2'"));
  // JSON numbers are accepted like Glance's strings.
  CHECK(topologyOf(4, {}, {{"hw_cpu_sockets", 2}}) == CpuTopology{2, 2, 1});
}

// The cases below are nova's own (nova/tests/unit/virt/test_hardware.py, test_best_config and
// test_get_cpu_topology_constraint), with the expected answers nova gives.
TEST_CASE("CPU topology: nova's examples", "[hardware][topology]") {
  SECTION("no constraints: one socket per vCPU") {
    CHECK(topologyOf(8, {}) == CpuTopology{8, 1, 1});
    CHECK(topologyOf(1, {}) == CpuTopology{1, 1, 1});
  }
  SECTION("flavor sets the preferred topology only") {
    CHECK(
        topologyOf(16, {{"hw:cpu_sockets", "8"}, {"hw:cpu_cores", "2"}, {"hw:cpu_threads", "1"}}) ==
        CpuTopology{8, 2, 1});
  }
  SECTION("image topology overrides the flavor's") {
    CHECK(topologyOf(16, {{"hw:cpu_sockets", "8"}, {"hw:cpu_cores", "2"}, {"hw:cpu_threads", "1"}},
                     {{"hw_cpu_sockets", "4"}, {"hw_cpu_cores", "2"}, {"hw_cpu_threads", "2"}}) ==
          CpuTopology{4, 2, 2});
  }
  SECTION("a partial image topology overrides the flavor's") {
    CHECK(topologyOf(16, {{"hw:cpu_sockets", "8"}, {"hw:cpu_cores", "2"}, {"hw:cpu_threads", "1"}},
                     {{"hw_cpu_sockets", "2"}}) == CpuTopology{2, 8, 1});
  }
  SECTION("restrict the use of threads") {
    CHECK(topologyOf(16, {{"hw:cpu_max_threads", "1"}}) == CpuTopology{16, 1, 1});
  }
  SECTION("force the use of at least two sockets") {
    CHECK(topologyOf(16, {{"hw:cpu_max_cores", "8"}, {"hw:cpu_max_threads", "1"}}) ==
          CpuTopology{16, 1, 1});
  }
  SECTION("image limits reduce the flavor's") {
    CHECK(topologyOf(
              16,
              {{"hw:cpu_max_sockets", "8"}, {"hw:cpu_max_cores", "8"}, {"hw:cpu_max_threads", "1"}},
              {{"hw_cpu_max_sockets", 4}}) == CpuTopology{4, 4, 1});
  }
  SECTION("image limits kill the flavor's preferred topology") {
    CHECK(topologyOf(16, {{"hw:cpu_sockets", "2"}, {"hw:cpu_cores", "8"}, {"hw:cpu_threads", "1"}},
                     {{"hw_cpu_max_cores", 4}}) == CpuTopology{16, 1, 1});
  }
  SECTION("only cores preferred, sockets derived") {
    CHECK(topologyOf(8, {}, {{"hw_cpu_cores", "4"}}) == CpuTopology{2, 4, 1});
    CHECK(topologyOf(8, {}, {{"hw_cpu_threads", "2"}}) == CpuTopology{4, 1, 2});
  }
  SECTION("image limits cannot exceed the flavor's") {
    CHECK_THAT(errorOf(fromImage({{"hw_cpu_max_cores", "16"}}, 16,
                                 {{"hw:cpu_max_cores", "8"}, {"hw:cpu_max_threads", "1"}})),
               Contains("Image property hw_cpu_max_cores=16 exceeds the flavor's "
                        "hw:cpu_max_cores=8"));
  }
  SECTION("image preferred counts cannot exceed the limits") {
    CHECK_THAT(errorOf(fromImage({{"hw_cpu_cores", "16"}}, 16,
                                 {{"hw:cpu_max_cores", "8"}, {"hw:cpu_max_threads", "1"}})),
               Contains("Image property hw_cpu_cores=16 exceeds the maximum of 8 cores"));
  }
  SECTION("limits that no topology fits") {
    CHECK_THAT(
        errorOf(fromImage(
            {}, 8,
            {{"hw:cpu_max_sockets", "2"}, {"hw:cpu_max_cores", "1"}, {"hw:cpu_max_threads", "1"}})),
        Contains("No CPU topology gives 8 vCPUs within the limits of 2 sockets, 1 cores "
                 "and 1 threads"));
  }
  SECTION("preferred counts whose product cannot be the vCPU count (kiln refuses, nova guesses)") {
    CHECK_THAT(errorOf(fromImage({{"hw_cpu_sockets", "3"}}, 4)),
               Contains("The image's CPU topology sockets=3 cannot give 4 vCPUs"));
    CHECK_THAT(
        errorOf(fromImage({{"hw_cpu_sockets", "2"}, {"hw_cpu_cores", "2"}, {"hw_cpu_threads", "2"}},
                          4)),
        Contains("sockets=2, cores=2, threads=2 cannot give 4 vCPUs: sockets x cores x threads "
                 "must equal 4"));
    CHECK_THAT(errorOf(fromImage({}, 6, {{"hw:cpu_sockets", "4"}})),
               Contains("The flavor's CPU topology sockets=4 cannot give 6 vCPUs"));
  }
}

TEST_CASE("virtio multiqueue: one queue per vCPU, the flavor's word first", "[hardware]") {
  CHECK(fromImage(json::object(), 4)->vif_queues == 1);
  CHECK(fromImage({{"hw_vif_multiqueue_enabled", "true"}}, 4)->vif_queues == 4);
  CHECK(fromImage({{"hw_vif_multiqueue_enabled", "true"}}, 4,
                  {{"hw:vif_multiqueue_enabled", "false"}})
            ->vif_queues == 1);
  CHECK(fromImage(json::object(), 2, {{"hw:vif_multiqueue_enabled", "true"}})->vif_queues == 2);
  // Only virtio has queues.
  CHECK(fromImage({{"hw_vif_multiqueue_enabled", "true"}, {"hw_vif_model", "e1000"}}, 4)
            ->vif_queues == 1);
  CHECK_THAT(errorOf(fromImage({{"hw_vif_multiqueue_enabled", "maybe"}}, 4)),
             Contains("hw_vif_multiqueue_enabled"));
}
