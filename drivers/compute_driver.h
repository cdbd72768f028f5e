#pragma once
// The one interface the agent uses to run virtual machines. LibvirtDriver implements it; unit
// tests use a fake. Every call is safe from any thread.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/timeline.h"

namespace kiln::drivers {

struct DiskSpec {
  std::string device;  // vda, vdb, ...
  std::string path;
  std::string format;  // given explicitly to the hypervisor; never probed
  std::string backing_path;
  std::string backing_format;
};

struct InstanceSpec {
  std::string uuid;
  std::string display_name;
  unsigned vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::vector<DiskSpec> disks;
  std::string console_log_path;
  // Recorded in the domain's metadata so an operator running `virsh dumpxml` sees whose it is.
  std::string image_id;
  std::string flavor_name;
  std::string created_at;
};

enum class PowerState { kNoState, kRunning, kPaused, kShutdown, kShutoff, kCrashed, kSuspended };
std::string_view powerStateName(PowerState s);

struct DomainStatus {
  std::string uuid;
  PowerState power = PowerState::kNoState;
};

struct HypervisorInfo {
  std::string type;     // "QEMU"
  std::string version;  // "7.2.0"
  std::string libvirt_version;
  unsigned cpus = 0;
  std::uint64_t memory_mb = 0;
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
  // The domain's power state, or nothing when no such domain exists.
  virtual Result<std::optional<PowerState>> powerState(const std::string& uuid) = 0;
  // Every domain this agent manages (named kiln-<uuid>).
  virtual Result<std::vector<DomainStatus>> listManaged() = 0;
  virtual Result<HypervisorInfo> hypervisorInfo() = 0;
  virtual bool connected() const = 0;
  // Called on the driver's event thread: must only enqueue.
  virtual void setEventSink(std::function<void(const DomainEvent&)> sink) = 0;
  // Called after the connection to the hypervisor has been re-established.
  virtual void setReconnectHook(std::function<void()> hook) = 0;
};

}  // namespace kiln::drivers
