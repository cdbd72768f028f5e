#pragma once
// This host as the OpenStack front reports it to Nova and Placement: what libvirt says of the
// hypervisor and the CPU, what kiln's records say the instances use, what the filesystem under
// state_path holds, the image cache's bytes, and what kiln can do here (the capability traits).
// Measured afresh for every report; nothing here writes anywhere.

#include <cstdint>
#include <string>

#include "agent/lifecycle/instance_manager.h"
#include "common/result.h"
#include "drivers/compute_driver.h"
#include "imagecache/image_cache.h"
#include "openstack/compute/compute_front.h"

namespace kiln::agent {

struct HostProbeOptions {
  std::string hypervisor_hostname;  // the node name: [DEFAULT] host
  std::string my_ip;                // [DEFAULT] my_ip; empty: none reported
  std::string virt_type;            // [libvirt] virt_type: the guests' hv_type
  std::string state_path;           // where the instances' disks and the image cache live
  // nova's resource tracker counts these as used in the compute node's figures.
  std::uint64_t reserved_host_memory_mb = 512;
  std::uint64_t reserved_host_disk_mb = 0;
  // Found at start: an OVMF build for UEFI guests, and one with secure boot.
  bool uefi = false;
  bool uefi_secure_boot = false;
  // [ephemeral_storage_encryption] enabled: LUKS ephemeral disks.
  bool ephemeral_encryption = false;
};

class HostProbe {
 public:
  HostProbe(drivers::ComputeDriver& driver, const lifecycle::InstanceManager& manager,
            imagecache::ImageCache& cache, HostProbeOptions options);

  // One measurement; libvirt unreachable is an error (the report is skipped, not zeroed).
  Result<openstack::compute::HostMeasurement> measure();

 private:
  drivers::ComputeDriver& driver_;
  const lifecycle::InstanceManager& manager_;
  imagecache::ImageCache& cache_;
  const HostProbeOptions options_;
};

}  // namespace kiln::agent
