#include "agent/host_probe.h"

#include <fmt/format.h>

#include <map>

#include "common/fs.h"

namespace kiln::agent {
namespace {

using nlohmann::json;
constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;

// nova's libvirt driver's cpu_info (LibvirtDriver._get_cpu_info).
json cpuInfo(const drivers::HypervisorInfo& hv) {
  return {{"arch", hv.cpu_arch},
          {"model", hv.cpu_model},
          {"vendor", hv.cpu_vendor},
          {"topology",
           {{"cells", 1},
            {"sockets", hv.cpu_sockets},
            {"cores", hv.cpu_cores},
            {"threads", hv.cpu_threads}}},
          {"features", hv.cpu_features}};
}

std::int64_t signedOf(std::uint64_t value) { return static_cast<std::int64_t>(value); }

}  // namespace

HostProbe::HostProbe(drivers::ComputeDriver& driver, const lifecycle::InstanceManager& manager,
                     imagecache::ImageCache& cache, HostProbeOptions options)
    : driver_(driver), manager_(manager), cache_(cache), options_(std::move(options)) {}

Result<openstack::compute::HostMeasurement> HostProbe::measure() {
  auto hv = driver_.hypervisorInfo();
  if (!hv) return hv.error();
  auto total = fs::totalBytes(options_.state_path);
  if (!total) return total.error();
  auto free = fs::freeBytes(options_.state_path);
  if (!free) return free.error();
  std::uint64_t cache_bytes = 0;
  for (const auto& image : cache_.list()) cache_bytes += image.file_size;

  openstack::compute::HostMeasurement m;
  m.resources.cpus = hv->cpus;
  m.resources.memory_mb = hv->memory_mb;
  m.resources.instances_filesystem_bytes = *total;
  m.resources.image_cache_bytes = cache_bytes;

  // The resource tracker's figures: what instances claim plus the host's reservations.
  auto& node = m.node;
  node.hypervisor_hostname = options_.hypervisor_hostname;
  node.host_ip = options_.my_ip;
  node.hypervisor_type = hv->type;
  node.hypervisor_version = signedOf(hv->version_number);
  node.vcpus = hv->cpus;
  node.memory_mb = signedOf(hv->memory_mb);
  node.local_gb = signedOf(*total / kGiB);
  node.cpu_info = cpuInfo(*hv);
  node.supported_hv_specs = {
      {hv->cpu_arch.empty() ? "x86_64" : hv->cpu_arch, options_.virt_type, "hvm"}};
  std::map<std::string, std::int64_t> counts;
  std::int64_t instances = 0;
  std::int64_t vcpus_used = 0;
  std::int64_t memory_used = signedOf(options_.reserved_host_memory_mb);
  std::int64_t disk_used = signedOf((options_.reserved_host_disk_mb + 1023) / 1024);
  std::int64_t workload = 0;
  std::int64_t io_workload = 0;
  for (const auto& rec : manager_.list()) {
    ++instances;
    vcpus_used += rec.flavor.vcpus;
    memory_used += signedOf(rec.flavor.memory_mb);
    disk_used += signedOf(rec.flavor.root_gb + rec.flavor.ephemeral_gb);
    ++counts[fmt::format("num_vm_{}", state::stateName(rec.state))];
    const std::string_view task = state::taskStateName(rec.task_state);
    ++counts[fmt::format("num_task_{}", task.empty() ? "None" : task)];
    if (!rec.project_id.empty()) ++counts["num_proj_" + rec.project_id];
    // nova's Stats: a build or a task in progress is workload; a build or a snapshot is I/O.
    const bool busy =
        rec.state == state::InstanceState::kBuilding || rec.task_state != state::TaskState::kNone;
    if (busy) ++workload;
    if (rec.state == state::InstanceState::kBuilding ||
        rec.task_state == state::TaskState::kImageUploading) {
      ++io_workload;
    }
  }
  node.vcpus_used = vcpus_used;
  node.memory_mb_used = memory_used;
  node.local_gb_used = disk_used;
  node.free_ram_mb = node.memory_mb - memory_used;
  node.free_disk_gb = node.local_gb - disk_used;
  node.disk_available_least = signedOf(*free / kGiB);
  node.running_vms = instances;
  node.current_workload = workload;
  node.stats["num_instances"] = std::to_string(instances);
  node.stats["io_workload"] = std::to_string(io_workload);
  for (const auto& [key, count] : counts) node.stats[key] = std::to_string(count);

  auto& caps = m.capabilities;
  // Every format the image cache's inspector proves safe (imagecache/format_inspector.h).
  caps.image_type_raw = caps.image_type_qcow2 = caps.image_type_vmdk = caps.image_type_vdi =
      caps.image_type_vhd = caps.image_type_vhdx = caps.image_type_iso = true;
  caps.firmware_bios = true;
  caps.firmware_uefi = options_.uefi;
  caps.uefi_secure_boot = options_.uefi_secure_boot;
  caps.volume_attach = true;
  caps.interface_attach = true;
  // The buses and NIC models drivers/hardware accepts for hw_disk_bus, hw_cdrom_bus and
  // hw_vif_model.
  caps.storage_bus_virtio = caps.storage_bus_scsi = caps.storage_bus_sata = caps.storage_bus_ide =
      caps.storage_bus_usb = true;
  caps.vif_model_virtio = caps.vif_model_e1000 = caps.vif_model_e1000e = caps.vif_model_rtl8139 =
      caps.vif_model_ne2k_pci = caps.vif_model_pcnet = true;
  caps.ephemeral_encryption_luks = options_.ephemeral_encryption;
  return m;
}

}  // namespace kiln::agent
