#pragma once
// The lifecycle of instances on this host: launch and delete as per-instance jobs on a worker
// pool, recovery after a restart, and reconciliation with what the hypervisor really runs.
//
// Locking: `mutex_` guards the map only. Each instance has `mu` (its record; held briefly,
// including the store write that must precede a side effect) and `job` (one long operation at a
// time: a delete waits for a launch to reach a step boundary, where it sees the request).

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "agent/api/launch_request.h"
#include "agent/state/instance_store.h"
#include "common/clock.h"
#include "common/secret_box.h"
#include "common/work_queue.h"
#include "drivers/compute_driver.h"
#include "drivers/disk/disk_builder.h"
#include "drivers/disk/disk_purge.h"
#include "drivers/volume/volume_connector.h"
#include "imagecache/image_cache.h"
#include "imagecache/image_uploader.h"

namespace kiln::lifecycle {

struct ManagerOptions {
  std::string instances_dir;  // state_path/instances
  std::string snapshots_dir;  // state_path/snapshots: temporary copies being uploaded
  unsigned workers = 4;
  bool use_cow_images = true;                 // vda: qcow2 overlay over the base, or a full copy
  std::chrono::seconds shutdown_timeout{60};  // stop: clean shutdown, then power off
  std::chrono::seconds soft_reboot_timeout{120};  // SOFT reboot falls back to HARD after it
  // How the instance's private files are cleared on delete and on a rolled-back launch.
  drivers::disk::ClearMethod ephemeral_clear = drivers::disk::ClearMethod::kZero;
  // [ephemeral_storage_encryption]: vdb as LUKS qcow2 with a fresh key per instance.
  bool encrypt_ephemeral = false;
  drivers::disk::LuksOptions ephemeral_luks{};
  unsigned ephemeral_key_bits = 512;
};

enum class PowerAction { kSoftReboot, kHardReboot, kStop, kStart };

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
                  state::InstanceStore& store, const Clock& clock, ManagerOptions options);
  ~InstanceManager();

  // Loads the records, finishes interrupted deletes, fails interrupted launches, settles
  // interrupted actions (volume attach/detach, snapshot, power), removes the half-made images of
  // interrupted snapshots, then reconciles with the hypervisor (which sweeps orphans).
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
  // Hot-plug and unplug of volumes on an active or stopped instance; 202-style.
  Result<state::InstanceRecord> attachVolume(const std::string& uuid,
                                             api::BlockDeviceRequest request);
  Result<state::InstanceRecord> detachVolume(const std::string& uuid, const std::string& volume_id);
  Result<state::InstanceRecord> get(const std::string& uuid) const;
  std::vector<state::InstanceRecord> list() const;
  Result<std::string> consoleLog(const std::string& uuid, std::uint64_t max_bytes) const;
  Usage usage() const;
  // The image ids that instances on this host (in any state) were launched from: their bases
  // must stay in the cache.
  std::set<std::string> imagesInUse() const;

  // Compares every settled instance with the hypervisor and records what it finds, then sweeps
  // what no instance owns (see sweepOrphans).
  void reconcileAll();
  void onDomainEvent(const drivers::DomainEvent& event);

  // Stops taking work and waits for running jobs.
  void shutdown();

 private:
  struct Entry {
    std::mutex mu;
    std::mutex job;
    state::InstanceRecord record;
    bool delete_requested = false;
    // A restart of kilnd interrupted the action named in record.task_state.
    bool interrupted_action = false;
  };
  using EntryPtr = std::shared_ptr<Entry>;

  EntryPtr find(const std::string& uuid) const;
  void runLaunch(const EntryPtr& entry, const api::LaunchRequest& request);
  Result<void> launchSteps(const EntryPtr& entry, const api::LaunchRequest& request,
                           Timeline& timeline);
  // `operation` ("launch" or "attach") names the failpoints around the connection.
  Result<drivers::DiskSpec> connectVolume(const EntryPtr& entry, const api::BlockDeviceRequest& bdm,
                                          std::string_view operation);
  void runDelete(const EntryPtr& entry);
  // Leaves the delete for the periodic reconcile to retry, saying why.
  void deferDelete(const EntryPtr& entry, const Error& why);
  void runPowerAction(const EntryPtr& entry, PowerAction action);
  void runSnapshot(const EntryPtr& entry, const std::string& image_id);
  void runAttach(const EntryPtr& entry, const api::BlockDeviceRequest& bdm);
  void runDetach(const EntryPtr& entry, const std::string& volume_id);
  void reconcileOne(const EntryPtr& entry);
  // Settles an action a restart interrupted; the caller holds entry->job. False when the
  // hypervisor could not be asked (the next reconcile tries again).
  bool finishInterruptedAction(const EntryPtr& entry);
  // Removes what a crash can leave that no instance owns, and only what is provably this
  // kilnd's: domains named kiln-<uuid> whose files are under instances_dir, directories in
  // instances_dir, secrets whose description names instances_dir or whose usage is a path in it.
  // Records of failed launches own nothing (their launch was rolled back).
  void sweepOrphans();
  // Discards the images of snapshots a restart interrupted (named by their marker files).
  void discardInterruptedSnapshots(const std::vector<std::string>& markers);
  void rollbackLaunch(const EntryPtr& entry);
  Result<void> disconnectVolumes(const EntryPtr& entry);
  // Crypto-erase: undefines the encrypted disks' libvirt secrets, then erases their sealed keys
  // from the record and writes it, all before any file is touched.
  Result<void> destroyDiskKeys(const EntryPtr& entry);
  // Clears the instance directory's files (ephemeral_clear), then removes the directory.
  Result<void> purgeInstanceFiles(const std::string& uuid);
  // Defines again the disk secrets libvirtd lost (a libvirtd restart forgets ephemeral secrets).
  void restoreDiskSecrets(const EntryPtr& entry);
  // Every volume attachment on this host except those of `uuid`.
  std::vector<drivers::volume::Attachment> otherAttachments(const std::string& uuid) const;
  // Applies `change` to the record and writes it to the store; the caller holds entry->mu.
  Result<void> saveLocked(Entry& entry);
  std::string instanceDir(const std::string& uuid) const;

  drivers::ComputeDriver& driver_;
  imagecache::ImageCache& cache_;
  drivers::disk::DiskBuilder& disks_;
  drivers::volume::VolumeConnector& volumes_;
  const SecretBox& secrets_;
  imagecache::ImageUploader& uploader_;
  state::InstanceStore& store_;
  const Clock& clock_;
  ManagerOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, EntryPtr> entries_;
  WorkQueue jobs_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace kiln::lifecycle
