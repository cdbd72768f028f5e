#pragma once
// A typed model of the domain kiln defines. renderDomainXml() is the only code that turns it
// into XML, through pugixml, so escaping happens in one place and nothing is concatenated.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "drivers/compute_driver.h"
#include "drivers/hardware/hardware_spec.h"
#include "drivers/libvirt/firmware.h"

namespace kiln::drivers::libvirt {

inline constexpr const char* kMetadataNamespace = "https://kiln.dev/xmlns/libvirt/instance/1.0";
inline constexpr const char* kMetadataPrefix = "kiln";
inline constexpr const char* kDomainNamePrefix = "kiln-";

// Reads a domain definition kiln rendered back into what it says about the instance.
Result<DomainDescription> describeDomainXml(std::string_view xml);

// One <disk>: the instance's disk and how the guest sees it.
struct DomainDisk {
  enum class Device { kDisk, kCdrom };
  DiskSpec disk;  // disk.device is the target name: vda, sda, hdc
  Device device = Device::kDisk;
  std::string bus = "virtio";
  unsigned boot_order = 0;  // 0: the firmware does not boot from it
  // A CD-ROM that is the instance's own file (the config drive): libvirt gives it to the guest's
  // user like a disk. Otherwise a CD-ROM is a shared cached base that is never relabelled.
  bool instance_private = false;
};

struct DomainSpec {
  std::string domain_type = "kvm";  // kvm, qemu, or test for libvirt's fake driver
  std::string name;                 // kiln-<uuid>
  std::string uuid;
  std::string title;  // the instance's display name, one line
  std::uint64_t memory_mib = 512;
  unsigned vcpus = 1;
  std::string arch = "x86_64";
  std::string machine_type = "pc";
  std::string cpu_mode;                               // empty: none given
  std::optional<hardware::CpuTopology> cpu_topology;  // empty: no <topology>
  std::vector<DomainDisk> disks;
  std::vector<NicSpec> nics;
  std::string console_log_path;
  // UEFI: the loader and varstore paths are written out, never autoselected by libvirt, so the
  // firmware is kiln's choice and the same on every define. An empty loader_path means SeaBIOS.
  std::string loader_path;
  bool loader_secure = false;
  std::string nvram_template_path;
  std::string nvram_path;  // the instance's own varstore, copied from the template on first start
  bool smm = false;
  bool boot_menu = false;
  std::string clock_offset = "utc";
  bool hyperv = false;                // Windows enlightenments: relaxed, vapic, spinlocks
  std::string scsi_controller_model;  // libvirt's model name; empty: no SCSI controller
  std::string video_model;            // libvirt's model name; empty: no video device
  std::optional<hardware::RngSpec> rng;
  bool guest_agent = false;
  // Metadata: whose domain this is.
  std::string project_id;
  std::string image_id;
  std::string flavor_name;
  std::string created_at;
};

// What the host decided for this domain, beyond the image and flavor.
struct DomainOptions {
  std::string domain_type = "kvm";  // [libvirt] virt_type
  std::string machine_type = "pc";  // [libvirt] hw_machine_type, when the image names none
  std::string cpu_mode;             // [libvirt] cpu_mode
  // Required when the hardware is UEFI (ignored for BIOS): chooseUefiFirmware()'s answer for
  // hardware.secure_boot, and the instance's NVRAM file, <instance dir>/nvram.fd.
  std::optional<FirmwareChoice> firmware;
  std::string nvram_path;
  // Required when hardware.boot_from_cdrom: the pinned cached ISO, attached read-only.
  std::string cdrom_path;
};

// Builds the spec from an instance; `domain_type` and machine/cpu defaults come from config.
// The same as the overload below with a default HardwareSpec (BIOS, virtio, no extra devices).
DomainSpec domainSpecFor(const InstanceSpec& instance, const std::string& domain_type,
                         const std::string& machine_type, const std::string& cpu_mode);

// Builds the spec from an instance and the hardware its image and flavor ask for. Fails when the
// combination cannot work (an IDE bus on q35, a UEFI instance without firmware or NVRAM path).
// Local disks (and a root volume) use hardware.disk_bus and are renamed to the bus's prefix
// (vdX -> sdX for scsi/sata/usb, hdX for ide); other volumes stay on virtio as they were named.
Result<DomainSpec> domainSpecFor(const InstanceSpec& instance,
                                 const hardware::HardwareSpec& hardware,
                                 const DomainOptions& options);

std::string renderDomainXml(const DomainSpec& spec);
// One <disk> element, for hot-plug (virtio).
std::string renderDiskXml(const DiskSpec& disk);
// One <interface> element: the domain's, and the one hot-plug attaches and detaches.
std::string renderInterfaceXml(const NicSpec& nic);

}  // namespace kiln::drivers::libvirt
