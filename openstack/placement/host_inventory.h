#pragma once
// What this host offers the scheduler, computed the way nova's libvirt driver does for its
// compute node provider (LibvirtDriver.update_provider_tree, ComputeDriver._get_allocation_ratios,
// nova/conf/compute.py for the defaults; ResourceTracker._get_traits for the traits), from
// figures and capabilities the caller measured. Pure functions: no host, no Placement here.

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "openstack/placement/placement_types.h"

namespace kiln::openstack::placement {

// The host as measured by the caller.
struct HostResources {
  // The host CPUs guests may run on: nova's _get_vcpu_available() (the online CPUs, or
  // [compute] cpu_shared_set).
  std::uint64_t cpus = 0;
  // The host's memory in MiB, as libvirt reports it (nova's Host.get_memory_mb_total()).
  std::uint64_t memory_mb = 0;
  // The size of the filesystem that holds the instances' disks, in bytes (statvfs f_blocks *
  // f_frsize: its size, not what is free), as nova's get_fs_info(instances_path)['total'].
  std::uint64_t instances_filesystem_bytes = 0;
  // The bytes the image cache takes on that filesystem (0 when the cache lives elsewhere).
  std::uint64_t image_cache_bytes = 0;
};

// nova.conf's [DEFAULT] options that shape the inventory, with nova's names and defaults.
struct InventoryOptions {
  // Unset, or 0.0 (which nova's `if conf_ratio:` treats as unset too): the ratio Placement holds
  // already stays, and a new inventory gets the initial_* ratio.
  std::optional<double> cpu_allocation_ratio;
  std::optional<double> ram_allocation_ratio;
  std::optional<double> disk_allocation_ratio;
  double initial_cpu_allocation_ratio = 16.0;
  double initial_ram_allocation_ratio = 1.5;
  double initial_disk_allocation_ratio = 1.0;
  std::uint64_t reserved_host_cpus = 0;
  std::uint64_t reserved_host_memory_mb = 512;
  std::uint64_t reserved_host_disk_mb = 0;
};

// The VCPU, MEMORY_MB and DISK_GB inventories of the compute node provider. `held` is what
// Placement has now (empty for a new provider): its allocation ratios count when the options
// set none, so that a ratio an operator set through Placement's API survives, as in nova.
//
// Each class is: total from the host, min_unit 1, max_unit total, step_size 1, the ratio, and
// reserved from the options: VCPU reserved_host_cpus, MEMORY_MB reserved_host_memory_mb,
// DISK_GB ceil(reserved_host_disk_mb / 1024) plus the image cache, ceil(bytes / GiB). DISK_GB's
// total is the filesystem's size in whole GiB, rounded down. A class whose total is 0 is left
// out (Placement refuses total 0).
//
// Two differences from nova, both deliberate:
//  - kiln always counts its image cache as reserved DISK_GB. nova does so only with [workarounds]
//    reserve_disk_resource_for_image_cache = True (default False), so by default its scheduler
//    places disks in space the cached bases already fill: the long-standing complaint of nova
//    operators whose hosts run out of disk while Placement shows room.
//  - reserved is capped at total. Placement refuses reserved > total (400: "The reserved value is
//    greater than total"), and nova sends it anyway, failing every update on a host smaller than
//    its reservations; with the cap the class is reported, fully reserved.
Inventories hostInventory(const HostResources& host, const InventoryOptions& options,
                          const Inventories& held = {});

// What kiln can do on this host, stated by the caller. Every field decides traits of os-traits
// 2.9.0 (named beside it); COMPUTE_NODE is always reported.
struct HostCapabilities {
  // COMPUTE_IMAGE_TYPE_*: the disk formats the image cache accepts (imagecache/format_inspector.h).
  bool image_type_raw = false;    // COMPUTE_IMAGE_TYPE_RAW
  bool image_type_qcow2 = false;  // COMPUTE_IMAGE_TYPE_QCOW2
  bool image_type_vmdk = false;   // COMPUTE_IMAGE_TYPE_VMDK
  bool image_type_vdi = false;    // COMPUTE_IMAGE_TYPE_VDI
  bool image_type_vhd = false;    // COMPUTE_IMAGE_TYPE_VHD
  bool image_type_vhdx = false;   // COMPUTE_IMAGE_TYPE_VHDX
  bool image_type_iso = false;    // COMPUTE_IMAGE_TYPE_ISO
  // Firmware.
  bool firmware_bios = false;     // COMPUTE_FIRMWARE_BIOS
  bool firmware_uefi = false;     // COMPUTE_FIRMWARE_UEFI: an OVMF build was found
  bool uefi_secure_boot = false;  // COMPUTE_SECURITY_UEFI_SECURE_BOOT: a secure-boot OVMF too
  // Hot-plug.
  bool volume_attach = false;     // COMPUTE_VOLUME_ATTACH
  bool interface_attach = false;  // COMPUTE_NET_ATTACH_INTERFACE
  // COMPUTE_STORAGE_BUS_*: the disk buses guests may ask for (hw_disk_bus, hw_cdrom_bus).
  bool storage_bus_virtio = false;  // COMPUTE_STORAGE_BUS_VIRTIO
  bool storage_bus_scsi = false;    // COMPUTE_STORAGE_BUS_SCSI
  bool storage_bus_sata = false;    // COMPUTE_STORAGE_BUS_SATA
  bool storage_bus_ide = false;     // COMPUTE_STORAGE_BUS_IDE
  bool storage_bus_usb = false;     // COMPUTE_STORAGE_BUS_USB
  // COMPUTE_NET_VIF_MODEL_*: the NIC models guests may ask for (hw_vif_model).
  bool vif_model_virtio = false;    // COMPUTE_NET_VIF_MODEL_VIRTIO
  bool vif_model_e1000 = false;     // COMPUTE_NET_VIF_MODEL_E1000
  bool vif_model_e1000e = false;    // COMPUTE_NET_VIF_MODEL_E1000E
  bool vif_model_rtl8139 = false;   // COMPUTE_NET_VIF_MODEL_RTL8139
  bool vif_model_ne2k_pci = false;  // COMPUTE_NET_VIF_MODEL_NE2K_PCI
  bool vif_model_pcnet = false;     // COMPUTE_NET_VIF_MODEL_PCNET
  // Ephemeral disks encrypted with LUKS: COMPUTE_EPHEMERAL_ENCRYPTION and
  // COMPUTE_EPHEMERAL_ENCRYPTION_LUKS (the one format, so both or neither).
  bool ephemeral_encryption_luks = false;
  // The compute service is disabled (nova's _sync_compute_service_disabled_trait): the
  // scheduler's prefilter skips providers with COMPUTE_STATUS_DISABLED.
  bool service_disabled = false;
};

// The traits `capabilities` grant, sorted.
std::set<std::string> hostTraits(const HostCapabilities& capabilities);

// Every trait hostTraits() can return: the ones kiln decides, for
// PlacementClient::setOwnedTraits(), which leaves the provider's other traits alone.
std::set<std::string> ownedTraits();

}  // namespace kiln::openstack::placement
