// hostInventory() and hostTraits() against figures worked out by hand from nova 26 (Zed):
//   LibvirtDriver.update_provider_tree (nova/virt/libvirt/driver.py): the three inventories,
//     total from _get_vcpu_available, Host.get_memory_mb_total and
//     int(get_fs_info(instances_path)['total'] / units.Gi); min_unit 1, max_unit total,
//     step_size 1; reserved from CONF.reserved_host_cpus, CONF.reserved_host_memory_mb and
//     _get_reserved_host_disk_gb_from_config() + _get_disk_size_reserved_for_image_cache();
//   ComputeDriver._get_allocation_ratios (nova/virt/driver.py): option, else Placement's, else
//     initial_*;
//   compute.utils.convert_mb_to_ceil_gb: the disk reservations, rounded up;
//   nova/conf/compute.py: the defaults (ratios None, initial 16.0 / 1.5 / 1.0; reserved 0 CPUs,
//     512 MB, 0 MB of disk);
//   ResourceTracker._get_traits and ComputeDriver.CAPABILITY_TRAITS_MAP (nova/compute/
//     resource_tracker.py, nova/virt/driver.py): COMPUTE_NODE always, the rest from capabilities.
// Where kiln differs on purpose (the image cache always reserved, reserved capped at total) the
// case says so, with nova's own figure beside it.

#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "common/command_runner.h"
#include "openstack/placement/host_inventory.h"

namespace {

using kiln::openstack::placement::HostCapabilities;
using kiln::openstack::placement::hostInventory;
using kiln::openstack::placement::HostResources;
using kiln::openstack::placement::hostTraits;
using kiln::openstack::placement::Inventories;
using kiln::openstack::placement::Inventory;
using kiln::openstack::placement::InventoryOptions;
using kiln::openstack::placement::ownedTraits;

constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;
constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

HostResources host() {
  HostResources h;
  h.cpus = 8;
  h.memory_mb = 16384;
  h.instances_filesystem_bytes = 100 * kGiB + 512 * kMiB;  // 107911053312: 100.5 GiB
  h.image_cache_bytes = 3 * kGiB + 1;
  return h;
}

}  // namespace

TEST_CASE("host inventory: nova's defaults on an 8-CPU, 16 GiB host with a 100.5 GiB disk") {
  const Inventories inv = hostInventory(host(), InventoryOptions{});
  REQUIRE(inv.size() == 3);
  // VCPU: total 8 CPUs, reserved_host_cpus 0, initial_cpu_allocation_ratio 16.0.
  CHECK(inv.at("VCPU") == Inventory{8, 0, 1, 8, 1, 16.0});
  // MEMORY_MB: total 16384, reserved_host_memory_mb 512, initial_ram_allocation_ratio 1.5.
  CHECK(inv.at("MEMORY_MB") == Inventory{16384, 512, 1, 16384, 1, 1.5});
  // DISK_GB: int(107911053312 / 2**30) = int(100.5) = 100. Reserved: nova's default is
  // convert_mb_to_ceil_gb(0) = 0 (the image cache counts only with [workarounds]
  // reserve_disk_resource_for_image_cache); kiln adds ceil((3 GiB + 1 byte) / GiB) = 4.
  CHECK(inv.at("DISK_GB") == Inventory{100, 4, 1, 100, 1, 1.0});
}

TEST_CASE("host inventory: reservations, the disk's rounded up to whole GiB") {
  InventoryOptions o;
  o.reserved_host_cpus = 2;
  o.reserved_host_memory_mb = 2048;
  HostResources h = host();
  h.image_cache_bytes = 0;
  SECTION("1025 MB reserved: convert_mb_to_ceil_gb(1025) = ceil(1.0009765625) = 2") {
    o.reserved_host_disk_mb = 1025;
    const Inventories inv = hostInventory(h, o);
    CHECK(inv.at("VCPU").reserved == 2);
    CHECK(inv.at("MEMORY_MB").reserved == 2048);
    CHECK(inv.at("DISK_GB").reserved == 2);
    // max_unit stays the total: nova does not subtract what is reserved.
    CHECK(inv.at("VCPU").max_unit == 8);
    CHECK(inv.at("MEMORY_MB").max_unit == 16384);
  }
  SECTION("1024 MB reserved is exactly 1 GiB") {
    o.reserved_host_disk_mb = 1024;
    CHECK(hostInventory(h, o).at("DISK_GB").reserved == 1);
  }
  SECTION("the image cache adds to the configured reservation, each rounded up on its own") {
    o.reserved_host_disk_mb = 1;  // ceil(1 / 1024) = 1
    h.image_cache_bytes = kGiB;   // exactly 1
    CHECK(hostInventory(h, o).at("DISK_GB").reserved == 2);
  }
}

TEST_CASE("host inventory: allocation ratios in nova's order of precedence") {
  const HostResources h = host();
  Inventories held;
  held["VCPU"] = Inventory{8, 0, 1, 8, 1, 8.0};
  held["MEMORY_MB"] = Inventory{16384, 512, 1, 16384, 1, 1.0};
  SECTION("a configured ratio overrides what Placement holds") {
    InventoryOptions o;
    o.cpu_allocation_ratio = 4.0;
    o.ram_allocation_ratio = 2.0;
    o.disk_allocation_ratio = 1.25;
    const Inventories inv = hostInventory(h, o, held);
    CHECK(inv.at("VCPU").allocation_ratio == 4.0);
    CHECK(inv.at("MEMORY_MB").allocation_ratio == 2.0);
    CHECK(inv.at("DISK_GB").allocation_ratio == 1.25);
  }
  SECTION("unset: Placement's ratio stays (an operator may have set it there), else initial_*") {
    const Inventories inv = hostInventory(h, InventoryOptions{}, held);
    CHECK(inv.at("VCPU").allocation_ratio == 8.0);
    CHECK(inv.at("MEMORY_MB").allocation_ratio == 1.0);
    CHECK(inv.at("DISK_GB").allocation_ratio == 1.0);  // not held: initial_disk_allocation_ratio
  }
  SECTION("0.0 counts as unset, as nova's `if conf_ratio:` has it") {
    InventoryOptions o;
    o.cpu_allocation_ratio = 0.0;
    o.disk_allocation_ratio = 0.0;
    o.initial_disk_allocation_ratio = 2.0;
    const Inventories inv = hostInventory(h, o, held);
    CHECK(inv.at("VCPU").allocation_ratio == 8.0);
    CHECK(inv.at("DISK_GB").allocation_ratio == 2.0);
  }
  SECTION("the initial ratios are options too") {
    InventoryOptions o;
    o.initial_cpu_allocation_ratio = 4.0;
    o.initial_ram_allocation_ratio = 1.0;
    const Inventories inv = hostInventory(h, o);
    CHECK(inv.at("VCPU").allocation_ratio == 4.0);
    CHECK(inv.at("MEMORY_MB").allocation_ratio == 1.0);
  }
}

TEST_CASE("host inventory: a class with total 0 is left out, as nova's `if vcpus:` does") {
  HostResources h = host();
  h.cpus = 0;
  h.instances_filesystem_bytes = kGiB - 1;  // int(0.999...) = 0
  const Inventories inv = hostInventory(h, InventoryOptions{});
  CHECK(inv.size() == 1);
  CHECK(inv.contains("MEMORY_MB"));
}

TEST_CASE("host inventory: reserved is capped at total (kiln; nova sends what Placement refuses)") {
  HostResources h = host();
  h.memory_mb = 256;                                      // nova: reserved 512 > total 256
  h.instances_filesystem_bytes = 10 * kGiB + 512 * kMiB;  // total 10
  h.image_cache_bytes = 10 * kGiB + 200 * kMiB;           // ceil: 11 GiB
  InventoryOptions o;
  o.reserved_host_cpus = 12;
  const Inventories inv = hostInventory(h, o);
  CHECK(inv.at("MEMORY_MB") == Inventory{256, 256, 1, 256, 1, 1.5});
  CHECK(inv.at("DISK_GB") == Inventory{10, 10, 1, 10, 1, 1.0});
  CHECK(inv.at("VCPU") == Inventory{8, 8, 1, 8, 1, 16.0});
}

TEST_CASE("host traits: COMPUTE_NODE always, nothing unless the caller says so") {
  CHECK(hostTraits(HostCapabilities{}) == std::set<std::string>{"COMPUTE_NODE"});
}

TEST_CASE("host traits: each capability decides its own traits and no other") {
  using Set = std::function<void(HostCapabilities&)>;
  const std::vector<std::pair<Set, std::set<std::string>>> cases = {
      {[](HostCapabilities& c) { c.image_type_raw = true; }, {"COMPUTE_IMAGE_TYPE_RAW"}},
      {[](HostCapabilities& c) { c.image_type_qcow2 = true; }, {"COMPUTE_IMAGE_TYPE_QCOW2"}},
      {[](HostCapabilities& c) { c.image_type_vmdk = true; }, {"COMPUTE_IMAGE_TYPE_VMDK"}},
      {[](HostCapabilities& c) { c.image_type_vdi = true; }, {"COMPUTE_IMAGE_TYPE_VDI"}},
      {[](HostCapabilities& c) { c.image_type_vhd = true; }, {"COMPUTE_IMAGE_TYPE_VHD"}},
      {[](HostCapabilities& c) { c.image_type_vhdx = true; }, {"COMPUTE_IMAGE_TYPE_VHDX"}},
      {[](HostCapabilities& c) { c.image_type_iso = true; }, {"COMPUTE_IMAGE_TYPE_ISO"}},
      {[](HostCapabilities& c) { c.firmware_bios = true; }, {"COMPUTE_FIRMWARE_BIOS"}},
      {[](HostCapabilities& c) { c.firmware_uefi = true; }, {"COMPUTE_FIRMWARE_UEFI"}},
      {[](HostCapabilities& c) { c.uefi_secure_boot = true; },
       {"COMPUTE_SECURITY_UEFI_SECURE_BOOT"}},
      {[](HostCapabilities& c) { c.volume_attach = true; }, {"COMPUTE_VOLUME_ATTACH"}},
      {[](HostCapabilities& c) { c.interface_attach = true; }, {"COMPUTE_NET_ATTACH_INTERFACE"}},
      {[](HostCapabilities& c) { c.storage_bus_virtio = true; }, {"COMPUTE_STORAGE_BUS_VIRTIO"}},
      {[](HostCapabilities& c) { c.storage_bus_scsi = true; }, {"COMPUTE_STORAGE_BUS_SCSI"}},
      {[](HostCapabilities& c) { c.storage_bus_sata = true; }, {"COMPUTE_STORAGE_BUS_SATA"}},
      {[](HostCapabilities& c) { c.storage_bus_ide = true; }, {"COMPUTE_STORAGE_BUS_IDE"}},
      {[](HostCapabilities& c) { c.storage_bus_usb = true; }, {"COMPUTE_STORAGE_BUS_USB"}},
      {[](HostCapabilities& c) { c.vif_model_virtio = true; }, {"COMPUTE_NET_VIF_MODEL_VIRTIO"}},
      {[](HostCapabilities& c) { c.vif_model_e1000 = true; }, {"COMPUTE_NET_VIF_MODEL_E1000"}},
      {[](HostCapabilities& c) { c.vif_model_e1000e = true; }, {"COMPUTE_NET_VIF_MODEL_E1000E"}},
      {[](HostCapabilities& c) { c.vif_model_rtl8139 = true; }, {"COMPUTE_NET_VIF_MODEL_RTL8139"}},
      {[](HostCapabilities& c) { c.vif_model_ne2k_pci = true; },
       {"COMPUTE_NET_VIF_MODEL_NE2K_PCI"}},
      {[](HostCapabilities& c) { c.vif_model_pcnet = true; }, {"COMPUTE_NET_VIF_MODEL_PCNET"}},
      {[](HostCapabilities& c) { c.ephemeral_encryption_luks = true; },
       {"COMPUTE_EPHEMERAL_ENCRYPTION", "COMPUTE_EPHEMERAL_ENCRYPTION_LUKS"}},
      {[](HostCapabilities& c) { c.service_disabled = true; }, {"COMPUTE_STATUS_DISABLED"}},
  };
  std::set<std::string> seen = {"COMPUTE_NODE"};
  for (const auto& [set, traits] : cases) {
    HostCapabilities capabilities;
    set(capabilities);
    std::set<std::string> expected = traits;
    expected.insert("COMPUTE_NODE");
    CHECK(hostTraits(capabilities) == expected);
    seen.insert(traits.begin(), traits.end());
  }
  // Every trait kiln decides has a case above.
  CHECK(ownedTraits() == seen);
}

TEST_CASE("host traits: what kiln's drivers and image cache support today") {
  // imagecache/format_inspector.h (raw, qcow2, vmdk, vdi, vhd, vhdx, iso),
  // drivers/hardware/hardware_spec.cc (hw_disk_bus virtio/scsi/sata/ide/usb; hw_vif_model
  // virtio/e1000/e1000e/rtl8139/ne2k_pci/pcnet), drivers/libvirt/firmware.h (OVMF, secure boot).
  HostCapabilities c;
  c.image_type_raw = c.image_type_qcow2 = c.image_type_vmdk = c.image_type_vdi = true;
  c.image_type_vhd = c.image_type_vhdx = c.image_type_iso = true;
  c.firmware_bios = c.firmware_uefi = c.uefi_secure_boot = true;
  c.volume_attach = c.interface_attach = true;
  c.storage_bus_virtio = c.storage_bus_scsi = c.storage_bus_sata = c.storage_bus_ide = true;
  c.storage_bus_usb = true;
  c.vif_model_virtio = c.vif_model_e1000 = c.vif_model_e1000e = c.vif_model_rtl8139 = true;
  c.vif_model_ne2k_pci = c.vif_model_pcnet = true;
  CHECK(hostTraits(c) == std::set<std::string>{
                             "COMPUTE_FIRMWARE_BIOS",
                             "COMPUTE_FIRMWARE_UEFI",
                             "COMPUTE_IMAGE_TYPE_ISO",
                             "COMPUTE_IMAGE_TYPE_QCOW2",
                             "COMPUTE_IMAGE_TYPE_RAW",
                             "COMPUTE_IMAGE_TYPE_VDI",
                             "COMPUTE_IMAGE_TYPE_VHD",
                             "COMPUTE_IMAGE_TYPE_VHDX",
                             "COMPUTE_IMAGE_TYPE_VMDK",
                             "COMPUTE_NET_ATTACH_INTERFACE",
                             "COMPUTE_NET_VIF_MODEL_E1000",
                             "COMPUTE_NET_VIF_MODEL_E1000E",
                             "COMPUTE_NET_VIF_MODEL_NE2K_PCI",
                             "COMPUTE_NET_VIF_MODEL_PCNET",
                             "COMPUTE_NET_VIF_MODEL_RTL8139",
                             "COMPUTE_NET_VIF_MODEL_VIRTIO",
                             "COMPUTE_NODE",
                             "COMPUTE_SECURITY_UEFI_SECURE_BOOT",
                             "COMPUTE_STORAGE_BUS_IDE",
                             "COMPUTE_STORAGE_BUS_SATA",
                             "COMPUTE_STORAGE_BUS_SCSI",
                             "COMPUTE_STORAGE_BUS_USB",
                             "COMPUTE_STORAGE_BUS_VIRTIO",
                             "COMPUTE_VOLUME_ATTACH",
                         });
}

TEST_CASE("host traits: every name is a trait of os-traits 2.9.0, by the library itself") {
  // Debian's python3-os-traits is what Placement 8.0 loads its standard traits from: a name it
  // lacks would make every setTraits() fail with 400.
  kiln::CommandSpec spec;
  spec.argv = {"/usr/bin/python3", "-c",
               "import sys, importlib.metadata, os_traits\n"
               "print(importlib.metadata.version('os-traits'))\n"
               "known = set(os_traits.get_traits())\n"
               "print(' '.join(n for n in sys.argv[1:] if n not in known))\n"};
  for (const std::string& trait : ownedTraits()) spec.argv.push_back(trait);
  spec.timeout = std::chrono::seconds(60);
  kiln::PosixCommandRunner runner;
  auto out = runner.run(spec);
  if (!out || !out->succeeded()) {
    WARN("python3 with os_traits is not available; skipping the check against os-traits");
    return;
  }
  const std::string text = out->stdout_text;
  const std::size_t newline = text.find('\n');
  REQUIRE(newline != std::string::npos);
  CHECK(text.substr(0, newline) == "2.9.0");
  CHECK(text.substr(newline + 1) == "\n");  // no unknown names
}
