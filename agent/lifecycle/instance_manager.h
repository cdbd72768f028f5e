#pragma once
// The lifecycle's front door: what the API router, the image cache service and main call. It
// composes the rooms that do the work and adds nothing of its own:
//
//   instance_table   the instances, their records and store writes, one job per instance
//   transitions      which operation may start in which state (the state machine)
//   launch, delete, power, snapshot, volumes      one operation each: admission, steps, rollback
//   instance_resources   what an instance owns on the host: files, volume connections, disk keys
//   recovery         what a restart left half done
//   ../sync/         reconcile with the hypervisor, libvirt events, the orphan sweep
//
// Background work runs on the injected Executor (a WorkQueue in kilnd, a ManualExecutor in
// tests), through a ScopedExecutor so that no job outlives the manager.

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "agent/api/launch_request.h"
#include "agent/lifecycle/delete.h"
#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/interfaces.h"
#include "agent/lifecycle/launch.h"
#include "agent/lifecycle/manager_options.h"
#include "agent/lifecycle/power.h"
#include "agent/lifecycle/recovery.h"
#include "agent/lifecycle/snapshot.h"
#include "agent/lifecycle/volumes.h"
#include "agent/state/instance_store.h"
#include "agent/sync/orphan_sweep.h"
#include "agent/sync/reconciler.h"
#include "common/clock.h"
#include "common/executor.h"
#include "common/scoped_executor.h"
#include "common/secret_box.h"
#include "drivers/compute_driver.h"
#include "drivers/disk/disk_builder.h"
#include "drivers/volume/volume_connector.h"
#include "imagecache/image_cache.h"
#include "imagecache/image_uploader.h"

namespace kiln::lifecycle {

struct Usage {
  std::uint64_t vcpus = 0;
  std::uint64_t memory_mb = 0;
  std::uint64_t disk_gb = 0;
  std::size_t instances = 0;
};

class InstanceManager {
 public:
  InstanceManager(drivers::ComputeDriver& driver, imagecache::ImageCache& cache,
                  drivers::disk::DiskBuilder& disks, drivers::volume::VolumeConnector& volumes,
                  const SecretBox& secrets, imagecache::ImageUploader& uploader,
                  state::InstanceStore& store, const Clock& clock, Executor& jobs,
                  ManagerOptions options);
  ~InstanceManager();
  InstanceManager(const InstanceManager&) = delete;
  InstanceManager& operator=(const InstanceManager&) = delete;

  // Loads the records and queues what a restart left half done (recovery.h). The first reconcile
  // (startReconciler) then settles interrupted actions and sweeps orphans.
  Result<void> recover();

  // 202-style: returns the record as accepted. The same uuid and body again returns the
  // existing record; a different body is kConflict.
  Result<state::InstanceRecord> launch(const api::LaunchRequest& request);
  Result<state::InstanceRecord> requestDelete(const std::string& uuid);
  // reboot, stop, start; 202-style, kConflict when the action does not fit the state.
  Result<state::InstanceRecord> powerAction(const std::string& uuid, PowerAction action);
  // Captures the root disk (paused for a consistent copy) and uploads it as a new image that
  // inherits the base image's properties. Returns the new image's id; the upload runs on.
  Result<std::string> snapshot(const std::string& uuid, const std::string& name,
                               const nlohmann::json& metadata);
  // The same capture into `image_id`, a queued image another service created (Nova's API):
  // it gets its formats and the bytes; the properties are the creator's. 202-style.
  Result<void> snapshotInto(const std::string& uuid, const std::string& image_id);
  // Hot-plug and unplug of volumes on an active or stopped instance; 202-style.
  Result<state::InstanceRecord> attachVolume(const std::string& uuid,
                                             api::BlockDeviceRequest request);
  Result<state::InstanceRecord> detachVolume(const std::string& uuid, const std::string& volume_id);
  Result<state::InstanceRecord> attachInterface(const std::string& uuid, api::VifRequest request);
  Result<state::InstanceRecord> detachInterface(const std::string& uuid,
                                                const std::string& port_id);
  Result<state::InstanceRecord> get(const std::string& uuid) const;
  // Blocks until `done` holds for the instance's record (returned) or the instance is gone
  // (nothing returned; also when it was never known), at most `timeout` (kUnavailable).
  Result<std::optional<state::InstanceRecord>> waitFor(
      const std::string& uuid, const std::function<bool(const state::InstanceRecord&)>& done,
      std::chrono::milliseconds timeout) const;
  // Ends every waitFor at once, now and later, with kUnavailable (kilnd is stopping).
  void stopWaiting();
  bool stoppedWaiting() const;
  std::vector<state::InstanceRecord> list() const;
  Result<std::string> consoleLog(const std::string& uuid, std::uint64_t max_bytes) const;
  Usage usage() const;
  // The image ids that instances on this host (in any state) were launched from: their bases
  // must stay in the cache.
  std::set<std::string> imagesInUse() const;

  // What the last reconcile found that no instance owns (sync/orphan_sweep.h).
  std::vector<sync::Orphan> orphans() const;
  // One reconcile pass on the calling thread (sync/reconciler.h).
  void reconcileAll();
  // Called on the driver's event thread: only enqueues.
  void onDomainEvent(const drivers::DomainEvent& event);
  // The reconcile thread: a first pass at once, then every reconcile_interval and whenever
  // requestReconcile() wakes it (after a reconnect).
  void startReconciler();
  void requestReconcile();

  // Stops taking work and stops the reconcile thread; jobs already queued still run (the
  // executor's owner drains it). The destructor then waits for running jobs and drops the rest.
  void shutdown();

  void setLaunchBoundaryHookForTest(std::function<void(std::string_view boundary)> hook);

 private:
  ManagerOptions options_;
  ScopedExecutor jobs_;
  InstanceTable table_;
  InstanceResources resources_;
  Launcher launcher_;
  Deleter deleter_;
  PowerControl power_;
  Snapshotter snapshots_;
  VolumeActions volume_actions_;
  InterfaceActions interface_actions_;
  Recovery recovery_;
  sync::OrphanSweep sweep_;
  sync::Reconciler reconciler_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace kiln::lifecycle
