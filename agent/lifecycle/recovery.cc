#include "agent/lifecycle/recovery.h"

#include <fmt/format.h>

#include "common/fs.h"
#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;
using state::TaskState;

namespace {

// Launches that kilnd's own restart interrupted are failed, not retried: the scheduler decides
// whether to try again, and the fault says why.
constexpr const char* kInterruptedLaunch =
    "The launch was interrupted by a restart of kilnd; the instance was cleaned up";

}  // namespace

Recovery::Recovery(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                   drivers::volume::VolumeConnector& volumes, InstanceResources& resources,
                   Deleter& deleter, Snapshotter& snapshots, const ManagerOptions& options)
    : table_(table),
      jobs_(jobs),
      driver_(driver),
      volumes_(volumes),
      resources_(resources),
      deleter_(deleter),
      snapshots_(snapshots),
      options_(options) {}

Result<void> Recovery::recover() {
  if (auto r = fs::makeDirectories(options_.instances_dir, 0711); !r) return r;
  auto records = table_.store().loadAll();
  if (!records) return records.error();
  std::vector<EntryPtr> interrupted_launches;
  std::vector<EntryPtr> pending_deletes;
  for (auto& rec : *records) {
    const InstanceState s = rec.state;
    // Settled by the first reconcile, which asks the hypervisor what really happened.
    const bool interrupted_action = s != InstanceState::kBuilding &&
                                    s != InstanceState::kDeleting &&
                                    rec.task_state != TaskState::kNone;
    EntryPtr entry = table_.adopt(std::move(rec), interrupted_action);
    if (s == InstanceState::kBuilding) {
      entry->interrupted_launch = true;  // not shared with any other thread yet
      interrupted_launches.push_back(entry);
    }
    if (s == InstanceState::kDeleting) pending_deletes.push_back(entry);
  }
  for (auto& entry : interrupted_launches) {
    jobs_.post([this, entry] {
      auto job = table_.beginJob(entry, JobKind::kRecovery, options_.job_timeout);
      if (!job) {
        log::warn("{}", job.error().message);  // the next reconcile settles it
        return;
      }
      settleInterruptedLaunch(entry);
    });
  }
  for (auto& entry : pending_deletes) {
    log::info("Resuming the delete of instance '{}'", entry->uuid());
    deleter_.resume(entry);
  }
  // Markers listed now, before the API takes new snapshots whose markers must stay.
  auto markers = snapshots_.interruptedMarkers();
  if (!markers.empty()) {
    jobs_.post([this, markers] { snapshots_.discardInterrupted(markers); });
  }
  return success();
}

bool Recovery::settleInterruptedLaunch(const EntryPtr& entry) {
  {
    std::lock_guard lock(entry->mu);
    if (!entry->interrupted_launch) return true;
  }
  const std::string& uuid = entry->uuid();
  auto power = driver_.powerState(uuid);
  if (!power) {
    // Unreachable or failing: the guest may be running on these disks. Nothing is removed.
    log::warn("Instance '{}': the launch a restart interrupted is settled once libvirt answers: {}",
              uuid, power.error().message);
    return false;
  }
  // The launch may have got as far as a running domain before the restart: keep it then.
  if (*power && **power == drivers::PowerState::kRunning) {
    table_.settle(*entry, [&](InstanceRecord& rec) {
      entry->interrupted_launch = false;
      rec.state = InstanceState::kActive;
      rec.power_state = "running";
      rec.task_state = TaskState::kNone;
    });
    log::info("Instance '{}' was started before the restart; it is active", uuid);
    return true;
  }
  // No such domain, or one that never ran: what the launch made is rolled back.
  if (!resources_.releaseAll(*entry)) return false;
  table_.settle(*entry, [&](InstanceRecord& rec) {
    entry->interrupted_launch = false;
    if (rec.state == InstanceState::kDeleting) return;
    rec.state = InstanceState::kError;
    rec.task_state = TaskState::kNone;
    rec.power_state = "nostate";
    rec.fault = kInterruptedLaunch;
    rec.disks.clear();
    rec.volumes.clear();
    rec.sealed_passwords.clear();
    log::warn("Instance '{}': {}", uuid, kInterruptedLaunch);
  });
  return true;
}

bool Recovery::settleInterruptedAction(const EntryPtr& entry) {
  const std::string& uuid = entry->uuid();
  const InstanceRecord rec = table_.read(*entry);
  const TaskState task = rec.task_state;
  std::vector<std::string> dropped;
  if (task == TaskState::kAttachingVolume || task == TaskState::kDetachingVolume) {
    // The domain is the truth: a volume it does not have (live or persistent) was never
    // attached, or its detach reached the guest; its host side goes. A volume it has stays.
    auto devices = driver_.domainDevices(uuid);
    if (!devices) return false;
    if (*devices) {
      for (const auto& v : rec.volumes) {
        if (v.boot || (*devices)->disk_targets.count(v.device)) continue;
        if (auto r = volumes_.disconnect(v, resources_.otherAttachments(uuid)); !r) {
          log::warn("Instance '{}': volume '{}': {}", uuid, v.volume_id, r.error().message);
          return false;
        }
        dropped.push_back(v.volume_id);
      }
    }
  } else if (task == TaskState::kImageUploading) {
    // The snapshot may have been interrupted while the guest was paused for the copy (its image
    // is discarded with the snapshot markers).
    auto power = driver_.powerState(uuid);
    if (!power) return false;
    if (*power && **power == drivers::PowerState::kPaused) {
      if (auto r = driver_.resume(uuid); !r) {
        log::warn("Instance '{}': {}", uuid, r.error().message);
        return false;
      }
    }
  }
  table_.settle(*entry, [&](InstanceRecord& now) {
    for (const auto& id : dropped) {
      std::erase_if(now.volumes, [&](const auto& v) { return v.volume_id == id; });
      now.sealed_passwords.erase(id);
    }
    entry->interrupted_action = false;
    now.task_state = TaskState::kNone;
    now.action_error = fmt::format("The '{}' task was interrupted by a restart of kilnd",
                                   state::taskStateName(task));
    log::warn("Instance '{}': {}", uuid, now.action_error);
  });
  return true;
}

}  // namespace kiln::lifecycle
