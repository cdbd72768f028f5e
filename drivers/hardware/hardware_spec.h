#pragma once
// An image's hw_* / os_* properties and a flavor's extra specs, validated and turned into the
// virtual hardware of one instance, the way nova's libvirt driver honours them
// (nova/virt/hardware.py, nova/objects/fields.py, nova/virt/libvirt/driver.py). No libvirt here:
// the agent can refuse a bad image before it makes any disk, and the libvirt driver turns the
// result into domain XML. docs/hardware.md lists every property with its values and effect.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kiln::drivers::hardware {

enum class FirmwareType { kBios, kUefi };
enum class DiskBus { kVirtio, kScsi, kSata, kIde, kUsb };
enum class OsType { kUnspecified, kLinux, kWindows };

// The bus name as libvirt and nova spell it: virtio, scsi, sata, ide, usb.
std::string_view diskBusName(DiskBus bus);

struct CpuTopology {
  unsigned sockets = 1;
  unsigned cores = 1;
  unsigned threads = 1;
  bool operator==(const CpuTopology&) const = default;
};

// A virtio RNG fed from the host's /dev/urandom.
struct RngSpec {
  std::uint64_t rate_bytes = 0;      // flavor hw_rng:rate_bytes; 0: no limit
  std::uint64_t rate_period_ms = 0;  // flavor hw_rng:rate_period; 0: libvirt's default (1 s)
  bool operator==(const RngSpec&) const = default;
};

// The most queues a virtio NIC gets (the kernel's tap allows 256; nova caps at 256 too).
inline constexpr unsigned kMaxVifQueues = 256;

struct HardwareSpec {
  FirmwareType firmware = FirmwareType::kBios;
  bool secure_boot = false;  // only with kUefi
  // hw_machine_type as the image gave it (a name or an alias like q35); empty: the host's
  // [libvirt] hw_machine_type, except that UEFI guests get q35 (see the libvirt driver).
  std::string machine_type;
  DiskBus disk_bus = DiskBus::kVirtio;     // the root and local disks
  std::optional<DiskBus> cdrom_bus;        // empty: ide on i440fx (pc), sata on q35
  std::string scsi_model = "virtio-scsi";  // nova's name; the controller when a bus is scsi
  std::string video_model = "none";        // none: no video device (kiln has no graphics)
  std::optional<RngSpec> rng;
  std::string vif_model = "virtio";  // every NIC's model (libvirt's <model type>)
  // hw_vif_multiqueue_enabled (image) or hw:vif_multiqueue_enabled (flavor, which wins): one
  // queue per vCPU on each virtio NIC, at most kMaxVifQueues.
  unsigned vif_queues = 1;
  bool guest_agent = false;  // virtio-serial channel org.qemu.guest_agent.0
  bool boot_menu = false;
  OsType os_type = OsType::kUnspecified;
  // Always set by hardwareSpecFrom(); unset means "emit no <topology>" (the old XML).
  std::optional<CpuTopology> cpu_topology;
  // disk_format iso: the image is attached as a read-only CD-ROM the guest boots from, and the
  // root disk is a blank disk of the flavor's size.
  bool boot_from_cdrom = false;
  // hw_* properties kiln does not honour (nova ignores unknown ones too), sorted, for a log line.
  std::vector<std::string> ignored_properties;
};

// Validates every honoured property; a bad value is kInvalidArgument with a sentence naming the
// property, the value and what is allowed. Properties may be JSON strings (as Glance stores them)
// or JSON numbers/booleans.
Result<HardwareSpec> hardwareSpecFrom(const nlohmann::json& image_properties,
                                      const std::map<std::string, std::string>& flavor_extra_specs,
                                      unsigned vcpus, std::string_view disk_format);

// True for the q35 family (q35, pc-q35-7.2, ...); everything else on x86 is i440fx-like.
bool isQ35Machine(std::string_view machine);

// The buses a machine has: q35 has no IDE controller. `machine` is the final machine type.
Result<void> checkBusesFitMachine(const HardwareSpec& hardware, std::string_view machine);

}  // namespace kiln::drivers::hardware
