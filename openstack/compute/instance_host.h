#pragma once
// What the OpenStack front asks of kilnd's lifecycle: the seam between Nova's RPC (which speaks
// Instance objects and task states) and kiln's one lifecycle, store and image cache, which kiln's
// own HTTP API drives too (agent/openstack_instances.h implements it). Calls block until the
// lifecycle settled, as nova-compute's manager methods do; they run on the RPC handler pool.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/result.h"

namespace kiln::openstack::compute {

// nova/compute/power_state.py.
enum class NovaPowerState : int {
  kNoState = 0,
  kRunning = 1,
  kPaused = 3,
  kShutdown = 4,
  kCrashed = 6,
  kSuspended = 7,
};

// One instance to build, from build_and_run_instance's Instance and its context.
struct BuildRequest {
  std::string uuid;
  std::string name;      // display_name
  std::string hostname;  // the guest's hostname (Instance.hostname)
  std::string project_id;
  // The request's Keystone token: the launch asks Glance with it whether the instance's project
  // may use the image, as nova fetches images with the user's token. Never stored or logged.
  std::string token;
  std::string image_id;
  // The flavor, inline (Nova's flavors are not kiln's catalog).
  std::string flavor_name;
  unsigned vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::uint64_t root_gb = 1;
  std::uint64_t ephemeral_gb = 0;
  std::map<std::string, std::string> extra_specs;
  bool config_drive = false;
  std::string availability_zone;
  std::optional<std::string> user_data;            // base64, as Nova keeps it; never logged
  std::map<std::string, std::string> public_keys;  // key name -> OpenSSH public key
};

struct BuildOutcome {
  bool active = false;
  NovaPowerState power_state = NovaPowerState::kNoState;
  // Why the build failed (kiln's own words, e.g. the image inspector's reason).
  std::string fault;
};

enum class PowerRequest { kSoftReboot, kHardReboot, kStop, kStart };

struct PowerOutcome {
  bool active = false;  // running (vm_state active) rather than stopped
  NovaPowerState power_state = NovaPowerState::kNoState;
  // Why the action failed; empty when it succeeded.
  std::string fault;
};

struct SnapshotOutcome {
  // Why the capture or the upload failed (the image is deleted then); empty when the image is
  // active with the snapshot's bytes.
  std::string fault;
};

// One guest as kiln's lifecycle holds it, for the power-state sync.
struct GuestState {
  bool active = false;  // running (kiln's state active) rather than stopped or failed
  bool stopped = false;
  bool busy = false;  // a task is in progress
  NovaPowerState power_state = NovaPowerState::kNoState;
};

class InstanceHost {
 public:
  virtual ~InstanceHost() = default;
  // Launches and waits, at most `timeout`, until the instance is active or failed. A failed
  // build leaves nothing behind on the host (kiln's launch rolls back), and the record stays in
  // ERROR until deleted. An error here means the launch was not even accepted.
  virtual Result<BuildOutcome> build(const BuildRequest& request,
                                     std::chrono::milliseconds timeout) = 0;
  // Deletes and waits until the domain, its files and its record are gone; an instance kiln
  // does not know is already gone.
  virtual Result<void> destroy(const std::string& uuid, std::chrono::milliseconds timeout) = 0;
  // Runs a reboot, stop or start and waits, at most `timeout`, until it settled.
  virtual Result<PowerOutcome> power(const std::string& uuid, PowerRequest request,
                                     std::chrono::milliseconds timeout) = 0;
  // Captures the root disk into `image_id`, a queued image that Nova's API created, and waits,
  // at most `timeout`, until the upload ended. An error means the snapshot did not start (the
  // instance is busy, say) or kiln stopped waiting; the image is then left to the caller.
  virtual Result<SnapshotOutcome> snapshot(const std::string& uuid, const std::string& image_id,
                                           std::chrono::milliseconds timeout) = 0;
  // Every guest kiln holds, by instance uuid.
  virtual std::map<std::string, GuestState> guests() = 0;
  // The end of the guest's serial console log, at most `max_bytes`.
  virtual Result<std::string> consoleOutput(const std::string& uuid, std::uint64_t max_bytes) = 0;

  // kilnd is stopping: every wait above ends at once with an error, and stopping() holds from
  // now on, so that a handler leaves its instance as Nova sees it (the next start's recovery
  // settles it, as nova's init_host does) instead of failing it. The work itself goes on or
  // is dropped as kiln's shutdown decides; it is not cancelled here.
  virtual void stopWaiting() = 0;
  virtual bool stopping() const = 0;
};

}  // namespace kiln::openstack::compute
