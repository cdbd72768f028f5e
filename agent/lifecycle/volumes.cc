#include "agent/lifecycle/volumes.h"

#include <fmt/format.h>

#include <algorithm>

#include "agent/lifecycle/transitions.h"
#include "common/failpoint.h"
#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::TaskState;

namespace {

std::optional<drivers::volume::Attachment> attachmentOf(const InstanceRecord& rec,
                                                        const std::string& volume_id) {
  for (const auto& v : rec.volumes) {
    if (v.volume_id == volume_id) return v;
  }
  return std::nullopt;
}

}  // namespace

VolumeActions::VolumeActions(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                             drivers::volume::VolumeConnector& volumes,
                             InstanceResources& resources, const ManagerOptions& options)
    : table_(table),
      jobs_(jobs),
      driver_(driver),
      volumes_(volumes),
      resources_(resources),
      options_(options) {}

Result<InstanceRecord> VolumeActions::attach(const std::string& uuid,
                                             api::BlockDeviceRequest request) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  auto recorded = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kAttachVolume, rec); !r) return r;
    std::vector<std::string> taken;
    for (const auto& d : rec.disks) taken.push_back(d.device);
    for (const auto& v : rec.volumes) {
      taken.push_back(v.device);
      if (v.volume_id == request.volume_id) {
        return Error::conflict(
            fmt::format("Volume '{}' is already attached to instance '{}'", v.volume_id, uuid));
      }
    }
    if (request.boot) {
      return Error::invalid("A volume cannot become the root disk of a running instance");
    }
    std::vector<api::BlockDeviceRequest> one = {request};
    if (auto r = api::assignDevices(one, taken); !r) return r;
    request.device = one[0].device;
    rec.task_state = taskOf(Operation::kAttachVolume);
    rec.action_error.clear();
    return success();
  });
  if (!recorded) return recorded.error();
  if (!jobs_.post([this, entry, request] { runAttach(entry, request); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return recorded;
}

void VolumeActions::runAttach(const EntryPtr& entry, const api::BlockDeviceRequest& bdm) {
  const std::string& uuid = entry->uuid();
  auto job = table_.beginJob(entry, JobKind::kAttachVolume, options_.job_timeout);
  Result<void> result = job ? failpoint("attach.after_record") : Result<void>(job.error());
  Result<drivers::DiskSpec> disk = Error::internal("not connected");
  if (result) {
    disk = resources_.connectVolume(*entry, bdm, "attach");
    if (!disk) result = disk.error();
  }
  if (result) result = driver_.attachDisk(uuid, *disk);
  if (result) {
    if (auto fp = failpoint("attach.after_device"); !fp) {
      // The domain has the disk: take it out again before the host side goes.
      if (auto d = driver_.detachDisk(uuid, *disk); !d) {
        log::error("Instance '{}': {}", uuid, d.error().message);
      }
      result = fp;
    }
  }
  if (!result) {
    // Undo the host side; the attachment never happened.
    if (auto att = attachmentOf(table_.read(*entry), bdm.volume_id)) {
      (void)volumes_.disconnect(*att, resources_.otherAttachments(uuid));
    }
  }
  table_.settle(*entry, [&](InstanceRecord& rec) {
    if (rec.task_state == TaskState::kAttachingVolume) rec.task_state = TaskState::kNone;
    if (!result) {
      std::erase_if(rec.volumes, [&](const auto& v) { return v.volume_id == bdm.volume_id; });
      rec.sealed_passwords.erase(bdm.volume_id);
      rec.action_error =
          fmt::format("Attaching volume '{}' failed: {}", bdm.volume_id, result.error().message);
      log::warn("Instance '{}': {}", uuid, rec.action_error);
    } else {
      log::info("Instance '{}': volume '{}' attached as {}", uuid, bdm.volume_id, bdm.device);
    }
  });
}

Result<InstanceRecord> VolumeActions::detach(const std::string& uuid,
                                             const std::string& volume_id) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  auto recorded = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kDetachVolume, rec); !r) return r;
    auto att = attachmentOf(rec, volume_id);
    if (!att) {
      return Error::notFound(
          fmt::format("Volume '{}' is not attached to instance '{}'", volume_id, uuid));
    }
    if (att->boot) {
      return Error::conflict(
          fmt::format("Volume '{}' is the root disk of instance '{}'", volume_id, uuid));
    }
    rec.task_state = taskOf(Operation::kDetachVolume);
    rec.action_error.clear();
    return success();
  });
  if (!recorded) return recorded.error();
  if (!jobs_.post([this, entry, volume_id] { runDetach(entry, volume_id); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return recorded;
}

void VolumeActions::runDetach(const EntryPtr& entry, const std::string& volume_id) {
  const std::string& uuid = entry->uuid();
  auto job = table_.beginJob(entry, JobKind::kDetachVolume, options_.job_timeout);
  Result<void> result = job ? failpoint("detach.after_record") : Result<void>(job.error());
  auto att = attachmentOf(table_.read(*entry), volume_id).value_or(drivers::volume::Attachment{});
  if (result) result = driver_.detachDisk(uuid, drivers::volume::diskFor(att));
  if (result) result = failpoint("detach.after_device");
  // Only once the guest has let go is the host side removed (nova's lesson from CVE-2023-2088).
  if (result) result = volumes_.disconnect(att, resources_.otherAttachments(uuid));
  if (result) result = failpoint("detach.after_volume_disconnect");
  table_.settle(*entry, [&](InstanceRecord& rec) {
    if (rec.task_state == TaskState::kDetachingVolume) rec.task_state = TaskState::kNone;
    if (result) {
      std::erase_if(rec.volumes, [&](const auto& v) { return v.volume_id == volume_id; });
      rec.sealed_passwords.erase(volume_id);
      log::info("Instance '{}': volume '{}' detached", uuid, volume_id);
    } else {
      rec.action_error =
          fmt::format("Detaching volume '{}' failed: {}", volume_id, result.error().message);
      log::warn("Instance '{}': {}", uuid, rec.action_error);
    }
  });
}

}  // namespace kiln::lifecycle
