#include "agent/lifecycle/snapshot.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "agent/lifecycle/transitions.h"
#include "common/failpoint.h"
#include "common/fs.h"
#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;
using state::TaskState;

namespace {

// As nova: the new image inherits the base image's properties, minus what describes the base's
// own bits, and says where it came from.
nlohmann::json inheritedProperties(const InstanceRecord& rec) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : rec.image_properties.items()) {
    if (key.starts_with("os_glance") || key.starts_with("img_signature") ||
        key == "cache_in_nova" || key == "bittorrent" || key == "image_type" ||
        key == "instance_uuid" || key == "base_image_ref") {
      continue;
    }
    // A key Glance would refuse on a new image (an operator's "Description", say) is dropped,
    // not allowed to fail the snapshot.
    bool glance_key =
        !key.empty() && key.size() <= 255 && std::all_of(key.begin(), key.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ':' ||
                 c == '.' || c == '-';
        });
    if (!glance_key) {
      log::info("Snapshot of '{}': not inheriting image property '{}'", rec.uuid,
                key.substr(0, 64));
      continue;
    }
    out[key] = value.is_string() ? value.get<std::string>() : value.dump();
  }
  return out;
}

// Gives the instance back when a snapshot did not get as far as its job.
void releaseTask(InstanceTable& table, InstanceTable::Entry& entry) {
  table.settle(entry, [](InstanceRecord& rec) {
    if (rec.task_state == TaskState::kImageUploading) rec.task_state = TaskState::kNone;
  });
}

}  // namespace

Snapshotter::Snapshotter(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                         drivers::disk::DiskBuilder& disks, imagecache::ImageUploader& uploader,
                         const Clock& clock, const ManagerOptions& options)
    : table_(table),
      jobs_(jobs),
      driver_(driver),
      disks_(disks),
      uploader_(uploader),
      clock_(clock),
      options_(options) {}

std::string Snapshotter::markerPath(const std::string& image_id) const {
  return options_.snapshots_dir + "/" + image_id + ".pending";
}

Result<std::string> Snapshotter::request(const std::string& uuid, const std::string& name,
                                         const nlohmann::json& metadata) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  imagecache::NewImage image;
  image.name = name;
  image.disk_format = "qcow2";
  // The task is taken first, so no other action starts while the image record is being made.
  auto taken = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kSnapshot, rec); !r) return r;
    if (rec.disks.empty() || rec.disks[0].device != "vda") {
      return Error::conflict(fmt::format(
          "Instance '{}' boots from a volume; snapshot the volume in the volume service", uuid));
    }
    image.properties = inheritedProperties(rec);
    for (const auto& [key, value] : metadata.items()) image.properties[key] = value;
    image.properties["image_type"] = "snapshot";
    image.properties["instance_uuid"] = uuid;
    image.properties["base_image_ref"] = rec.image_id;
    image.owner = rec.project_id;
    if (auto v = imagecache::validateNewImage(image); !v) return v;
    rec.task_state = taskOf(Operation::kSnapshot);
    rec.action_error.clear();
    return success();
  });
  if (!taken) return taken.error();
  // The image record exists before the answer, so the scheduler gets an id it can poll.
  auto image_id = uploader_.create(image);
  if (!image_id) {
    releaseTask(table_, *entry);
    return image_id.error();
  }
  if (auto started = start(entry, *image_id); !started) return started.error();
  return *image_id;
}

Result<void> Snapshotter::requestInto(const std::string& uuid, const std::string& image_id) {
  // As nova's @delete_image_on_error: a snapshot that cannot start takes its image with it, so
  // no queued image outlives the request.
  EntryPtr entry = table_.find(uuid);
  if (!entry) {
    (void)uploader_.discard(image_id);
    return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  }
  auto taken = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kSnapshot, rec); !r) return r;
    if (rec.disks.empty() || rec.disks[0].device != "vda") {
      return Error::conflict(fmt::format(
          "Instance '{}' boots from a volume; snapshot the volume in the volume service", uuid));
    }
    rec.task_state = taskOf(Operation::kSnapshot);
    rec.action_error.clear();
    return success();
  });
  if (!taken) {
    (void)uploader_.discard(image_id);
    return taken.error();
  }
  if (auto adopted = uploader_.adopt(image_id, "qcow2", "bare"); !adopted) {
    // An image that is not queued (kConflict) was never this snapshot's to fill or delete.
    if (adopted.error().code != ErrorCode::kConflict) (void)uploader_.discard(image_id);
    releaseTask(table_, *entry);
    return adopted.error();
  }
  return start(entry, image_id);
}

Result<void> Snapshotter::start(const EntryPtr& entry, const std::string& image_id) {
  // The marker names the image until the snapshot ends: after a crash, the recovery discards the
  // image it names, so no image that never got its bytes is left behind.
  const std::string marker = markerPath(image_id);
  Result<void> marked = fs::makeDirectories(options_.snapshots_dir, 0700);
  if (marked) marked = fs::writeFileAtomically(marker, entry->uuid(), 0600);
  if (!marked) {
    (void)uploader_.discard(image_id);
    releaseTask(table_, *entry);
    return marked.error();
  }
  if (!jobs_.post([this, entry, image_id] { run(entry, image_id); })) {
    // The marker stays: the next start discards the image.
    return Error::unavailable("kilnd is shutting down");
  }
  return success();
}

void Snapshotter::run(const EntryPtr& entry, const std::string& image_id) {
  const std::string& uuid = entry->uuid();
  const std::string tmp = options_.snapshots_dir + "/" + image_id + ".qcow2";
  const std::string marker = markerPath(image_id);
  auto job = table_.beginJob(entry, JobKind::kSnapshot, options_.job_timeout);
  Result<void> result = job ? success() : Result<void>(job.error());
  const std::vector<state::DiskRecord> disks = table_.read(*entry).disks;
  const state::DiskRecord root = disks.empty() ? state::DiskRecord{} : disks.front();
  if (result && root.device != "vda") {
    result = Error::conflict(fmt::format("Instance '{}' has no root disk to snapshot", uuid));
  }
  auto started = clock_.steadyNow();
  if (result) result = failpoint("snapshot.after_record");
  if (result) result = fs::makeDirectories(options_.snapshots_dir, 0700);
  if (result) {
    // A short pause makes the copy one point in time; the guest resumes before the upload.
    auto paused = driver_.pause(uuid);
    if (!paused) {
      result = paused.error();
    } else {
      result = failpoint("snapshot.after_pause");
      if (result) result = disks_.exportDisk(root.path, root.format, tmp, "qcow2");
      if (result) result = failpoint("snapshot.after_export");
      if (*paused) {
        if (auto r = driver_.resume(uuid); !r) {
          log::error("Instance '{}' stays paused after its snapshot: {}", uuid, r.error().message);
          if (result) result = r;
        }
      }
    }
  }
  if (result) result = failpoint("snapshot.after_resume");
  auto captured = clock_.steadyNow();
  if (result) result = uploader_.upload(image_id, tmp);
  if (!result) (void)uploader_.discard(image_id);
  ::unlink(tmp.c_str());
  ::unlink(marker.c_str());
  if (auto fp = failpoint("snapshot.after_upload"); !fp && result) result = fp;
  table_.settle(*entry, [&](InstanceRecord& rec) {
    if (rec.task_state == TaskState::kImageUploading) rec.task_state = TaskState::kNone;
    if (result) {
      auto ms = [](auto d) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
      };
      log::info("Instance '{}': snapshot '{}' uploaded (capture {} ms, upload {} ms)", uuid,
                image_id, ms(captured - started), ms(clock_.steadyNow() - captured));
    } else {
      rec.action_error = fmt::format("Snapshot '{}' failed: {}", image_id, result.error().message);
      log::warn("Instance '{}': {}", uuid, rec.action_error);
    }
  });
}

std::vector<std::string> Snapshotter::interruptedMarkers() const {
  std::vector<std::string> markers;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(options_.snapshots_dir, ec)) {
    markers.push_back(f.path().string());
  }
  return markers;
}

void Snapshotter::discardInterrupted(const std::vector<std::string>& markers) {
  for (const auto& path : markers) {
    std::string name = std::filesystem::path(path).filename().string();
    if (name.ends_with(".pending")) {
      std::string image_id = name.substr(0, name.size() - std::string_view(".pending").size());
      if (auto r = uploader_.discard(image_id); !r) {
        // Kept: the next start tries again.
        log::warn("Discarding the interrupted snapshot '{}': {}", image_id, r.error().message);
        continue;
      }
      log::info("Discarded the image '{}' of a snapshot a restart interrupted", image_id);
    }
    ::unlink(path.c_str());
  }
}

}  // namespace kiln::lifecycle
