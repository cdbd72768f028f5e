#include "openstack/placement/host_inventory.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace kiln::openstack::placement {

namespace {

constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;

// nova's compute.utils.convert_mb_to_ceil_gb().
std::uint64_t ceilGiBFromMiB(std::uint64_t mib) { return (mib + 1023) / 1024; }
std::uint64_t ceilGiBFromBytes(std::uint64_t bytes) { return bytes / kGiB + (bytes % kGiB != 0); }

// ComputeDriver._get_allocation_ratios(): the option when set (and, as nova tests it with
// `if conf_ratio:`, not 0.0), else the ratio Placement holds, else the initial one.
double allocationRatio(const std::optional<double>& configured, double initial,
                       const Inventories& held, std::string_view resource_class) {
  if (configured && *configured != 0.0) return *configured;
  if (auto it = held.find(resource_class); it != held.end()) return it->second.allocation_ratio;
  return initial;
}

void addClass(Inventories& out, std::string_view resource_class, std::uint64_t total,
              std::uint64_t reserved, double ratio) {
  if (total == 0) return;
  Inventory inventory;
  inventory.total = static_cast<std::int64_t>(total);
  inventory.reserved = static_cast<std::int64_t>(std::min(reserved, total));
  inventory.min_unit = 1;
  inventory.max_unit = inventory.total;
  inventory.step_size = 1;
  inventory.allocation_ratio = ratio;
  out.emplace(std::string(resource_class), inventory);
}

// Each capability with the traits it grants, in HostCapabilities' order.
std::vector<std::pair<bool HostCapabilities::*, std::vector<std::string>>> traitTable() {
  using C = HostCapabilities;
  return {
      {&C::image_type_raw, {"COMPUTE_IMAGE_TYPE_RAW"}},
      {&C::image_type_qcow2, {"COMPUTE_IMAGE_TYPE_QCOW2"}},
      {&C::image_type_vmdk, {"COMPUTE_IMAGE_TYPE_VMDK"}},
      {&C::image_type_vdi, {"COMPUTE_IMAGE_TYPE_VDI"}},
      {&C::image_type_vhd, {"COMPUTE_IMAGE_TYPE_VHD"}},
      {&C::image_type_vhdx, {"COMPUTE_IMAGE_TYPE_VHDX"}},
      {&C::image_type_iso, {"COMPUTE_IMAGE_TYPE_ISO"}},
      {&C::firmware_bios, {"COMPUTE_FIRMWARE_BIOS"}},
      {&C::firmware_uefi, {"COMPUTE_FIRMWARE_UEFI"}},
      {&C::uefi_secure_boot, {"COMPUTE_SECURITY_UEFI_SECURE_BOOT"}},
      {&C::volume_attach, {"COMPUTE_VOLUME_ATTACH"}},
      {&C::interface_attach, {"COMPUTE_NET_ATTACH_INTERFACE"}},
      {&C::storage_bus_virtio, {"COMPUTE_STORAGE_BUS_VIRTIO"}},
      {&C::storage_bus_scsi, {"COMPUTE_STORAGE_BUS_SCSI"}},
      {&C::storage_bus_sata, {"COMPUTE_STORAGE_BUS_SATA"}},
      {&C::storage_bus_ide, {"COMPUTE_STORAGE_BUS_IDE"}},
      {&C::storage_bus_usb, {"COMPUTE_STORAGE_BUS_USB"}},
      {&C::vif_model_virtio, {"COMPUTE_NET_VIF_MODEL_VIRTIO"}},
      {&C::vif_model_e1000, {"COMPUTE_NET_VIF_MODEL_E1000"}},
      {&C::vif_model_e1000e, {"COMPUTE_NET_VIF_MODEL_E1000E"}},
      {&C::vif_model_rtl8139, {"COMPUTE_NET_VIF_MODEL_RTL8139"}},
      {&C::vif_model_ne2k_pci, {"COMPUTE_NET_VIF_MODEL_NE2K_PCI"}},
      {&C::vif_model_pcnet, {"COMPUTE_NET_VIF_MODEL_PCNET"}},
      {&C::ephemeral_encryption_luks,
       {"COMPUTE_EPHEMERAL_ENCRYPTION", "COMPUTE_EPHEMERAL_ENCRYPTION_LUKS"}},
      {&C::service_disabled, {"COMPUTE_STATUS_DISABLED"}},
  };
}

constexpr const char* kComputeNode = "COMPUTE_NODE";

}  // namespace

Inventories hostInventory(const HostResources& host, const InventoryOptions& options,
                          const Inventories& held) {
  Inventories out;
  addClass(out, kVcpu, host.cpus, options.reserved_host_cpus,
           allocationRatio(options.cpu_allocation_ratio, options.initial_cpu_allocation_ratio, held,
                           kVcpu));
  addClass(out, kMemoryMb, host.memory_mb, options.reserved_host_memory_mb,
           allocationRatio(options.ram_allocation_ratio, options.initial_ram_allocation_ratio, held,
                           kMemoryMb));
  // nova: int(get_fs_info(instances_path)['total'] / units.Gi), rounded down; the reservation
  // is rounded up, so that what is reserved is never less than what was asked.
  addClass(out, kDiskGb, host.instances_filesystem_bytes / kGiB,
           ceilGiBFromMiB(options.reserved_host_disk_mb) + ceilGiBFromBytes(host.image_cache_bytes),
           allocationRatio(options.disk_allocation_ratio, options.initial_disk_allocation_ratio,
                           held, kDiskGb));
  return out;
}

std::set<std::string> hostTraits(const HostCapabilities& capabilities) {
  std::set<std::string> out = {kComputeNode};
  for (const auto& [field, traits] : traitTable()) {
    if (capabilities.*field) out.insert(traits.begin(), traits.end());
  }
  return out;
}

std::set<std::string> ownedTraits() {
  std::set<std::string> out = {kComputeNode};
  for (const auto& [field, traits] : traitTable()) out.insert(traits.begin(), traits.end());
  return out;
}

}  // namespace kiln::openstack::placement
