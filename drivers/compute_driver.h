#pragma once
// The one interface the agent uses to run virtual machines. LibvirtDriver implements it; unit
// tests use a fake. Every call is safe from any thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/timeline.h"
#include "drivers/hardware/hardware_spec.h"

namespace kiln::drivers {

struct IscsiHost {
  std::string name;
  std::uint16_t port = 3260;
};

struct DiskSpec {
  enum class Source { kFile, kIscsi, kBlock };
  std::string device;  // vda, vdb, ...
  Source source = Source::kFile;
  std::string path;    // kFile: the file; kBlock: the block device
  std::string format;  // given explicitly to the hypervisor; never probed
  std::string backing_path;
  std::string backing_format;
  // kIscsi: QEMU's own initiator. `iscsi_name` is "<iqn>/<lun>"; CHAP credentials come from the
  // libvirt secret whose usage is `secret_usage`, never from the XML.
  std::string iscsi_name;
  std::vector<IscsiHost> iscsi_hosts;
  std::string auth_username;
  std::string secret_usage;
  // kFile: a LUKS-encrypted qcow2 whose passphrase is in the libvirt secret with this uuid
  // (defineDiskSecret); empty for a disk in clear.
  std::string encryption_secret_uuid;
  bool read_only = false;
  std::string serial;  // shown to the guest (/dev/disk/by-id); the volume id for volumes
  bool boot = false;   // the disk the firmware boots from
};

// One virtual NIC: a VIF of Nova's network_info, validated (agent/api/network_info.h), as the
// host plumbing (drivers/network) and the domain see it.
struct NicSpec {
  enum class Type { kBridge, kTap };  // "bridge"; "tap" and "ethernet"
  std::string port_id;                // Neutron's port id: how attach and detach name the NIC
  std::string mac;                    // lower-case aa:bb:cc:dd:ee:ff, unicast
  Type type = Type::kBridge;
  std::string devname;  // the host's tap, made by kiln (drivers/network) before the guest starts
  std::string bridge;   // kBridge: the Linux bridge the tap joins, created when absent
  unsigned mtu = 0;     // 0: the bridge's or the kernel's default
  std::string model = "virtio";  // libvirt's <model type>: virtio, e1000, rtl8139, ...
  unsigned queues = 1;           // virtio multiqueue: one per vCPU when the image asks
  // Anti-spoofing: when true kiln lets the tap carry only frames from `mac` and, over IPv4/IPv6,
  // from `fixed_ips` (plus DHCP, ARP and neighbour discovery for them). False when Neutron says
  // its L2 agent filters the port itself (details.port_filter = true).
  bool filter = true;
  std::vector<std::string> fixed_ips;
};

struct InstanceSpec {
  std::string uuid;
  std::string display_name;
  unsigned vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::vector<DiskSpec> disks;
  std::string console_log_path;
  // The virtual hardware the image properties and flavor extra specs ask for (validated).
  hardware::HardwareSpec hardware;
  std::string nvram_path;  // UEFI: the instance's own firmware variables
  std::string cdrom_path;  // an ISO image's cached base, when the instance boots from CD-ROM
  // Recorded in the domain's metadata so an operator running `virsh dumpxml` sees whose it is.
  std::string image_id;
  std::string flavor_name;
  std::string created_at;
  std::string project_id;         // the owner, in the domain's metadata
  std::vector<NicSpec> nics;      // in the guest's order: eth0, eth1, ...
  std::string config_drive_path;  // the config drive ISO, attached read-only; empty: none
};

enum class PowerState { kNoState, kRunning, kPaused, kShutdown, kShutoff, kCrashed, kSuspended };
std::string_view powerStateName(PowerState s);

struct DomainStatus {
  std::string uuid;
  PowerState power = PowerState::kNoState;
};

struct HypervisorInfo {
  std::string type;                  // "QEMU"
  std::string version;               // "7.2.0"
  std::uint64_t version_number = 0;  // 7002000: major * 1000000 + minor * 1000 + micro
  std::string libvirt_version;
  unsigned cpus = 0;
  std::uint64_t memory_mb = 0;
  // The host CPU as libvirt's capabilities describe it (what Nova's cpu_info holds).
  std::string cpu_arch;    // "x86_64"
  std::string cpu_model;   // "Broadwell-noTSX-IBRS"
  std::string cpu_vendor;  // "Intel"
  unsigned cpu_sockets = 0;
  unsigned cpu_cores = 0;    // per socket
  unsigned cpu_threads = 0;  // per core
  std::vector<std::string> cpu_features;
};

// What a domain refers to, its live and persistent definitions together: the recovery after a
// crash decides from it whether a volume action reached the domain, and whether a domain with
// no record is provably this agent's (its files are under the agent's instances directory).
struct DomainDevices {
  std::set<std::string> disk_targets;  // vda, vdc, ...
  std::vector<std::string> files;      // disk sources, firmware variables, console log
};

// What a domain's persistent definition says about its instance: enough to rebuild a lost
// record (kilnd --adopt). Secrets (CHAP passwords, disk keys) are never in it.
struct DomainDescription {
  std::string uuid;
  std::string display_name;
  std::string project_id;
  std::string image_id;
  std::string flavor_name;
  std::string created_at;
  unsigned vcpus = 0;
  std::uint64_t memory_mb = 0;
  std::vector<DiskSpec> disks;  // every <disk> but a CD-ROM, in order
  std::string cdrom_path;
  PowerState power = PowerState::kNoState;
};

// A libvirt secret as listed (never its value).
struct SecretInfo {
  std::string uuid;
  std::string usage_type;  // "iscsi", "volume", ...
  std::string usage_id;    // the iSCSI target name or the volume path
  std::string description;
};

// A lifecycle change seen by the hypervisor; a hint only, reconcile() is the truth.
struct DomainEvent {
  std::string uuid;
  PowerState power = PowerState::kNoState;
  bool undefined = false;
};

class ComputeDriver {
 public:
  virtual ~ComputeDriver() = default;

  // Defines the domain persistently and starts it. On failure nothing stays defined.
  virtual Result<void> spawn(const InstanceSpec& spec, Timeline& timeline) = 0;
  // Powers off and undefines the domain with its firmware variables. A missing domain is fine:
  // delete must be idempotent.
  virtual Result<void> destroy(const std::string& uuid) = 0;
  // Asks the guest to shut down (ACPI) and waits up to `grace`; then powers it off. Returns
  // whether the guest shut down by itself.
  virtual Result<bool> powerOff(const std::string& uuid, std::chrono::seconds grace) = 0;
  virtual Result<void> powerOn(const std::string& uuid) = 0;
  // SOFT (hard=false): a clean shutdown within `grace` and a fresh start, as nova does; when the
  // guest does not shut down in time, a hard reboot. HARD: power off and start again. The
  // domain's definition (and its NVRAM) is kept either way. Returns whether it was soft.
  virtual Result<bool> reboot(const std::string& uuid, bool hard, std::chrono::seconds grace) = 0;
  // Pauses the guest's vCPUs (for a consistent copy of its disks); true when it was running.
  virtual Result<bool> pause(const std::string& uuid) = 0;
  virtual Result<void> resume(const std::string& uuid) = 0;
  // The domain's power state, or nothing when no such domain exists.
  virtual Result<std::optional<PowerState>> powerState(const std::string& uuid) = 0;
  // Every domain this agent manages (named kiln-<uuid>).
  virtual Result<std::vector<DomainStatus>> listManaged() = 0;
  virtual Result<HypervisorInfo> hypervisorInfo() = 0;
  // The domain's disks and files, or nothing when no such domain exists.
  virtual Result<std::optional<DomainDevices>> domainDevices(const std::string& uuid) = 0;
  // What the domain's persistent definition says about its instance, or nothing when no such
  // domain exists.
  virtual Result<std::optional<DomainDescription>> describe(const std::string& uuid) = 0;

  // An iSCSI CHAP secret (ephemeral: held in libvirtd's memory only; private: never readable
  // back). Defining an existing usage again replaces its value.
  virtual Result<void> defineSecret(const std::string& usage, const std::string& value) = 0;
  // A missing secret is fine: removal must be idempotent.
  virtual Result<void> undefineSecret(const std::string& usage) = 0;
  virtual Result<bool> secretExists(const std::string& usage) = 0;
  // Every secret libvirtd holds, of any usage type; the recovery sweep picks kiln's from them.
  virtual Result<std::vector<SecretInfo>> listSecrets() = 0;
  // Removes a secret by its uuid; a missing one is fine.
  virtual Result<void> removeSecret(const std::string& secret_uuid) = 0;

  // A disk's LUKS passphrase, as a secret of usage type "volume" whose usage id is the disk's
  // path, under the fixed `uuid` the disk's <encryption> names. Ephemeral and private like the
  // CHAP secrets, so libvirtd never writes it to disk; defining it again replaces it.
  virtual Result<void> defineDiskSecret(const std::string& uuid, const std::string& disk_path,
                                        const std::string& passphrase) = 0;
  // A missing secret is fine: removal must be idempotent.
  virtual Result<void> undefineDiskSecret(const std::string& disk_path) = 0;
  virtual Result<bool> diskSecretExists(const std::string& disk_path) = 0;

  // Hot-plugs a disk into the running domain and its persistent definition.
  virtual Result<void> attachDisk(const std::string& uuid, const DiskSpec& disk) = 0;
  // Unplugs a disk and waits (bounded) until the guest released it.
  virtual Result<void> detachDisk(const std::string& uuid, const DiskSpec& disk) = 0;
  // Hot-plugs a NIC (its tap made already) into the domain, live when it runs, and into its
  // persistent definition.
  virtual Result<void> attachInterface(const std::string& uuid, const NicSpec& nic) = 0;
  // Unplugs a NIC from the persistent definition and, when the domain runs, from the guest,
  // then waits up to `timeout` for the guest to release it (libvirt's device-removed event).
  // kUnavailable when the guest did not; the NIC is then still plugged live, never half-gone.
  virtual Result<void> detachInterface(const std::string& uuid, const NicSpec& nic,
                                       std::chrono::milliseconds timeout) = 0;
  virtual bool connected() const = 0;
  // Called on the driver's event thread: must only enqueue.
  virtual void setEventSink(std::function<void(const DomainEvent&)> sink) = 0;
  // Called after the connection to the hypervisor has been re-established.
  virtual void setReconnectHook(std::function<void()> hook) = 0;
};

}  // namespace kiln::drivers
