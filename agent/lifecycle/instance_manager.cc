#include "agent/lifecycle/instance_manager.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>

#include "common/failpoint.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/uuid.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;

// Launches that kilnd's own restart interrupted are failed, not retried: the scheduler decides
// whether to try again, and the fault says why.
constexpr const char* kInterruptedLaunch =
    "The launch was interrupted by a restart of kilnd; the instance was cleaned up";

// Volume and image actions need an instance that is active or stopped and runs no other task.
Result<void> requireIdleActiveOrStopped(const InstanceRecord& rec, std::string_view action) {
  if ((rec.state == InstanceState::kActive || rec.state == InstanceState::kStopped) &&
      rec.task_state.empty()) {
    return success();
  }
  return Error::conflict(
      fmt::format("Instance '{}' is {}{}; {} needs an idle active or stopped "
                  "instance",
                  rec.uuid, state::stateName(rec.state),
                  rec.task_state.empty() ? "" : " (" + rec.task_state + ")", action));
}

}  // namespace

InstanceManager::InstanceManager(drivers::ComputeDriver& driver, imagecache::ImageCache& cache,
                                 drivers::disk::DiskBuilder& disks,
                                 drivers::volume::VolumeConnector& volumes,
                                 const SecretBox& secrets, imagecache::ImageUploader& uploader,
                                 state::InstanceStore& store, const Clock& clock,
                                 ManagerOptions options)
    : driver_(driver),
      cache_(cache),
      disks_(disks),
      volumes_(volumes),
      secrets_(secrets),
      uploader_(uploader),
      store_(store),
      clock_(clock),
      options_(std::move(options)),
      jobs_(options_.workers) {}

InstanceManager::~InstanceManager() { shutdown(); }

void InstanceManager::shutdown() {
  shutting_down_ = true;
  jobs_.shutdown();
}

std::string InstanceManager::instanceDir(const std::string& uuid) const {
  return options_.instances_dir + "/" + uuid;
}

InstanceManager::EntryPtr InstanceManager::find(const std::string& uuid) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(uuid);
  return it == entries_.end() ? nullptr : it->second;
}

Result<void> InstanceManager::saveLocked(Entry& entry) {
  entry.record.updated_at = formatUtc(clock_.wallNow());
  return store_.put(entry.record);
}

Result<void> InstanceManager::recover() {
  if (auto r = fs::makeDirectories(options_.instances_dir, 0711); !r) return r;
  auto records = store_.loadAll();
  if (!records) return records.error();
  std::vector<EntryPtr> interrupted_launches;
  std::vector<EntryPtr> pending_deletes;
  {
    std::lock_guard lock(mutex_);
    for (auto& rec : *records) {
      auto entry = std::make_shared<Entry>();
      entry->record = std::move(rec);
      if (entry->record.state == InstanceState::kBuilding) interrupted_launches.push_back(entry);
      if (entry->record.state == InstanceState::kDeleting) {
        entry->delete_requested = true;
        pending_deletes.push_back(entry);
      } else if (entry->record.state != InstanceState::kBuilding &&
                 !entry->record.task_state.empty()) {
        // Settled by the first reconcile, which asks the hypervisor what really happened.
        entry->interrupted_action = true;
      }
      entries_.emplace(entry->record.uuid, entry);
    }
  }
  for (auto& entry : interrupted_launches) {
    jobs_.post([this, entry] {
      std::lock_guard job(entry->job);
      const std::string uuid = entry->record.uuid;
      // The launch may have got as far as a running domain before the restart: keep it then.
      auto power = driver_.powerState(uuid);
      if (power && *power && **power == drivers::PowerState::kRunning) {
        std::lock_guard lock(entry->mu);
        entry->record.state = InstanceState::kActive;
        entry->record.power_state = "running";
        entry->record.task_state.clear();
        if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
        log::info("Instance '{}' was started before the restart; it is active", uuid);
        return;
      }
      rollbackLaunch(entry);
      std::lock_guard lock(entry->mu);
      if (entry->delete_requested) return;
      entry->record.state = InstanceState::kError;
      entry->record.task_state.clear();
      entry->record.power_state = "nostate";
      entry->record.fault = kInterruptedLaunch;
      entry->record.disks.clear();
      entry->record.volumes.clear();
      entry->record.sealed_passwords.clear();
      if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
      log::warn("Instance '{}': {}", uuid, kInterruptedLaunch);
    });
  }
  for (auto& entry : pending_deletes) {
    log::info("Resuming the delete of instance '{}'", entry->record.uuid);
    jobs_.post([this, entry] { runDelete(entry); });
  }
  // Markers listed now, before the API takes new snapshots whose markers must stay.
  std::vector<std::string> markers;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(options_.snapshots_dir, ec)) {
    markers.push_back(f.path().string());
  }
  if (!markers.empty()) jobs_.post([this, markers] { discardInterruptedSnapshots(markers); });
  jobs_.post([this] { reconcileAll(); });
  return success();
}

Result<InstanceRecord> InstanceManager::launch(const api::LaunchRequest& request) {
  if (shutting_down_) return Error::unavailable("kilnd is shutting down");
  EntryPtr entry;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(request.uuid);
    if (it != entries_.end()) {
      std::lock_guard entry_lock(it->second->mu);
      const InstanceRecord& existing = it->second->record;
      if (existing.request_fingerprint != request.fingerprint) {
        return Error::conflict(
            fmt::format("Instance '{}' already exists with a different request", request.uuid));
      }
      if (existing.state == InstanceState::kDeleting) {
        return Error::conflict(fmt::format("Instance '{}' is being deleted", request.uuid));
      }
      return existing;
    }
    entry = std::make_shared<Entry>();
    InstanceRecord& rec = entry->record;
    rec.uuid = request.uuid;
    rec.name = request.name;
    rec.project_id = request.project_id;
    rec.flavor = request.flavor;
    rec.image_id = request.image_id;
    rec.request_fingerprint = request.fingerprint;
    rec.state = InstanceState::kBuilding;
    rec.task_state = "spawning";
    rec.created_at = formatUtc(clock_.wallNow());
    rec.updated_at = rec.created_at;
    entries_.emplace(rec.uuid, entry);
  }
  InstanceRecord accepted;
  {
    std::lock_guard entry_lock(entry->mu);
    // Durable before it is acknowledged: an accepted instance is never forgotten.
    if (auto w = store_.insertNew(entry->record); !w) {
      std::lock_guard lock(mutex_);
      entries_.erase(request.uuid);
      return w.error();
    }
    accepted = entry->record;
  }
  if (!jobs_.post([this, entry, request] { runLaunch(entry, request); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return accepted;
}

void InstanceManager::runLaunch(const EntryPtr& entry, const api::LaunchRequest& request) {
  std::lock_guard job(entry->job);
  const std::string uuid = entry->record.uuid;
  {
    std::lock_guard lock(entry->mu);
    if (entry->delete_requested) return;  // the delete job cleans up
  }
  Timeline timeline(clock_);
  auto result = launchSteps(entry, request, timeline);
  // The instance record names the image from here on; the launch's pin can go.
  if (!request.image_id.empty()) cache_.release(request.image_id);
  std::lock_guard lock(entry->mu);
  entry->record.timeline = timeline.steps();
  if (entry->delete_requested) {
    // A delete arrived during the launch; it runs next and removes whatever was made.
    if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
    return;
  }
  if (result) {
    entry->record.state = InstanceState::kActive;
    entry->record.power_state = "running";
    entry->record.task_state.clear();
    log::info("Instance '{}' is active ({:.1f} ms)", uuid, timeline.totalMs());
  } else {
    entry->record.state = InstanceState::kError;
    entry->record.power_state = "nostate";
    entry->record.task_state.clear();
    entry->record.fault = result.error().message;
    entry->record.disks.clear();
    entry->record.volumes.clear();
    entry->record.sealed_passwords.clear();
    log::warn("Instance '{}' failed to launch: {}", uuid, result.error().message);
  }
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
}

Result<void> InstanceManager::launchSteps(const EntryPtr& entry, const api::LaunchRequest& request,
                                          Timeline& timeline) {
  const std::string uuid = entry->record.uuid;
  const std::string image_id = request.image_id;
  const config::Flavor& flavor = request.flavor;
  auto failed = [&](Error e) -> Result<void> {
    rollbackLaunch(entry);
    return e;
  };
  auto deleteRequested = [&] {
    std::lock_guard lock(entry->mu);
    return entry->delete_requested;
  };

  // Stored and acknowledged; nothing made yet.
  if (auto fp = failpoint("launch.after_record"); !fp) return failed(fp.error());
  std::string dir = instanceDir(uuid);
  // QEMU (another user) must traverse into the directory; nobody may list it.
  if (auto r = fs::makeDirectories(dir, 0711); !r) return failed(r.error());
  std::vector<state::DiskRecord> disks;
  nlohmann::json properties = nlohmann::json::object();
  drivers::hardware::HardwareSpec hardware;
  std::string cdrom_path;
  // The virtual hardware the image and flavor ask for, checked before any disk is made.
  auto checkHardware = [&](std::string_view disk_format) -> Result<void> {
    auto hw = drivers::hardware::hardwareSpecFrom(properties, flavor.extra_specs, flavor.vcpus,
                                                  disk_format);
    if (!hw) return hw.error();
    hardware = std::move(hw).value();
    if (!hardware.ignored_properties.empty()) {
      log::info("Instance '{}': image properties not honoured: {}", uuid,
                fmt::join(hardware.ignored_properties, ", "));
    }
    return success();
  };
  if (image_id.empty()) {
    if (auto r = checkHardware(""); !r) return failed(r.error());
  } else {
    // The cache refuses an image too big for the root disk from its header, before converting.
    auto base = cache_.fetch(image_id, timeline, flavor.root_gb * kGiB);
    if (!base) return failed(base.error());
    if (auto fp = failpoint("launch.after_image"); !fp) return failed(fp.error());
    properties = base->record.properties;
    if (auto r = checkHardware(base->record.disk_format); !r) return failed(r.error());
    if (hardware.boot_from_cdrom && flavor.root_gb == 0) {
      return failed(Error::invalid(fmt::format(
          "Image '{}' is an ISO: it needs a flavor with a root disk to install onto", image_id)));
    }

    std::uint64_t root_bytes = flavor.root_gb * kGiB;
    if (flavor.root_gb == 0) {
      root_bytes = base->virtual_size;  // nova's meaning of a 0 GB root disk: the image's size
    } else if (base->virtual_size > root_bytes) {
      return failed(Error::invalid(fmt::format(
          "Image '{}' has a virtual size of {} bytes, larger than the flavor's root disk of {} "
          "GiB",
          image_id, base->virtual_size, flavor.root_gb)));
    }
    if (base->record.min_disk_gb && flavor.root_gb != 0 &&
        *base->record.min_disk_gb > flavor.root_gb) {
      return failed(Error::invalid(fmt::format("Image '{}' needs a root disk of at least {} GiB",
                                               image_id, *base->record.min_disk_gb)));
    }
    if (base->record.min_ram_mb && *base->record.min_ram_mb > flavor.memory_mb) {
      return failed(Error::invalid(fmt::format("Image '{}' needs at least {} MB of memory",
                                               image_id, *base->record.min_ram_mb)));
    }
    auto step = timeline.step("disk.root");
    state::DiskRecord root{"vda", dir + "/disk", "qcow2", root_bytes, base->path, base->format};
    Result<void> r = success();
    if (hardware.boot_from_cdrom) {
      // An ISO boots from a CD-ROM (the cached base, read-only) and installs onto an empty root.
      r = disks_.createBlank(root.path, root.format, root_bytes);
      root.backing_path.clear();
      root.backing_format.clear();
      cdrom_path = base->path;
    } else if (options_.use_cow_images) {
      r = disks_.createOverlay(root.path, root.backing_path, root.backing_format, root_bytes);
    } else {
      // A standalone copy: the instance no longer depends on the cached base.
      r = disks_.createCopy(root.path, base->path, base->format, root_bytes);
      root.backing_path.clear();
      root.backing_format.clear();
    }
    if (!r) {
      step.fail();
      // qemu-img's words ("No space left on device") name neither the disk nor its filesystem.
      return failed(Error{r.error().code, fmt::format("Creating the root disk '{}' failed: {}",
                                                      root.path, r.error().message)});
    }
    disks.push_back(root);
    if (auto fp = failpoint("launch.after_root_disk"); !fp) return failed(fp.error());
  }
  // device -> passphrase of the disks made encrypted, held until their libvirt secrets exist.
  std::map<std::string, std::string> disk_keys;
  if (flavor.ephemeral_gb > 0) {
    auto step = timeline.step("disk.ephemeral");
    state::DiskRecord eph{"vdb", dir + "/disk.local", "qcow2", flavor.ephemeral_gb * kGiB, "", ""};
    Result<void> r = success();
    if (options_.encrypt_ephemeral) {
      auto passphrase = drivers::disk::newLuksPassphrase(options_.ephemeral_key_bits);
      auto sealed =
          passphrase ? secrets_.seal(*passphrase) : Result<std::string>(passphrase.error());
      if (!sealed) {
        r = sealed.error();
      } else {
        eph.encryption_secret_uuid = randomUuid();
        eph.sealed_key = *sealed;
        disk_keys[eph.device] = *passphrase;
        r = disks_.createEncryptedBlank(eph.path, eph.virtual_size, options_.ephemeral_luks,
                                        *passphrase);
      }
    } else {
      r = disks_.createBlank(eph.path, eph.format, eph.virtual_size);
    }
    if (!r) {
      step.fail();
      return failed(r.error());
    }
    disks.push_back(eph);
  }
  if (auto fp = failpoint("launch.after_disks"); !fp) return failed(fp.error());
  if (deleteRequested()) return failed(Error::conflict("The instance was deleted during launch"));

  drivers::InstanceSpec spec;
  Result<void> recorded = success();
  {
    std::lock_guard lock(entry->mu);
    entry->record.disks = disks;
    entry->record.image_properties = properties;
    // The disks are recorded before the domain exists, so a crash from here on leaves a record
    // that names everything there is to clean up. (The rollback takes entry->mu: not here.)
    recorded = saveLocked(*entry);
    spec.uuid = uuid;
    spec.display_name = entry->record.name;
    spec.vcpus = flavor.vcpus;
    spec.memory_mb = flavor.memory_mb;
    spec.console_log_path = dir + "/console.log";
    spec.hardware = hardware;
    spec.nvram_path = dir + "/nvram.fd";
    spec.cdrom_path = cdrom_path;
    spec.image_id = image_id;
    spec.flavor_name = flavor.name;
    spec.created_at = entry->record.created_at;
  }
  if (!recorded) return failed(recorded.error());
  if (auto fp = failpoint("launch.after_disks_recorded"); !fp) return failed(fp.error());
  for (const auto& d : disks) {
    drivers::DiskSpec disk;
    disk.device = d.device;
    disk.path = d.path;
    disk.format = d.format;
    disk.backing_path = d.backing_path;
    disk.backing_format = d.backing_format;
    disk.encryption_secret_uuid = d.encryption_secret_uuid;
    disk.boot = d.device == "vda";
    spec.disks.push_back(disk);
    if (d.encryption_secret_uuid.empty()) continue;
    // The record that names this secret is written above: a crash never leaves it unowned.
    auto step = timeline.step("disk.secret");
    if (auto r = driver_.defineDiskSecret(d.encryption_secret_uuid, d.path, disk_keys[d.device]);
        !r) {
      step.fail();
      return failed(r.error());
    }
  }
  disk_keys.clear();
  for (const auto& bdm : request.block_devices) {
    auto step = timeline.step("volume.connect");
    auto disk = connectVolume(entry, bdm, "launch");
    if (!disk) {
      step.fail();
      return failed(disk.error());
    }
    spec.disks.push_back(*disk);
  }
  if (auto fp = failpoint("launch.after_volumes"); !fp) return failed(fp.error());
  if (auto r = driver_.spawn(spec, timeline); !r) return failed(r.error());
  if (auto fp = failpoint("launch.after_start"); !fp) return failed(fp.error());
  return success();
}

Result<drivers::DiskSpec> InstanceManager::connectVolume(const EntryPtr& entry,
                                                         const api::BlockDeviceRequest& bdm,
                                                         std::string_view operation) {
  drivers::volume::Attachment att =
      volumes_.plan(entry->record.uuid, bdm.volume_id, bdm.device, bdm.boot, bdm.target);
  {
    std::lock_guard lock(entry->mu);
    // Recorded (with the password sealed) before anything is connected: a crash leaves a record
    // that names the secret or the session to remove.
    entry->record.volumes.push_back(att);
    if (bdm.target.auth_method == "CHAP") {
      auto sealed = secrets_.seal(bdm.target.auth_password);
      if (!sealed) return sealed.error();
      entry->record.sealed_passwords[bdm.volume_id] = *sealed;
    }
    if (auto s = saveLocked(*entry); !s) return s.error();
  }
  if (auto fp = failpoint(fmt::format("{}.before_volume_connect", operation)); !fp) {
    return fp.error();
  }
  auto disk = volumes_.connect(att, bdm.target);
  if (!disk) {
    return Error{disk.error().code, fmt::format("Connecting volume '{}' failed: {}", bdm.volume_id,
                                                disk.error().message)};
  }
  if (auto fp = failpoint(fmt::format("{}.after_volume_connect", operation)); !fp) {
    return fp.error();
  }
  return disk;
}

std::vector<drivers::volume::Attachment> InstanceManager::otherAttachments(
    const std::string& uuid) const {
  std::vector<drivers::volume::Attachment> out;
  for (const auto& rec : list()) {
    if (rec.uuid == uuid) continue;
    out.insert(out.end(), rec.volumes.begin(), rec.volumes.end());
  }
  return out;
}

Result<void> InstanceManager::disconnectVolumes(const EntryPtr& entry) {
  std::vector<drivers::volume::Attachment> attached;
  {
    std::lock_guard lock(entry->mu);
    attached = entry->record.volumes;
  }
  auto others = otherAttachments(entry->record.uuid);
  Result<void> outcome = success();
  for (const auto& att : attached) {
    // Volumes are only disconnected, never wiped: their data belongs to the user.
    if (auto r = volumes_.disconnect(att, others); !r) {
      log::error("Disconnecting volume '{}': {}", att.volume_id, r.error().message);
      outcome = r;
    }
  }
  return outcome;
}

void InstanceManager::rollbackLaunch(const EntryPtr& entry) {
  const std::string uuid = entry->record.uuid;
  if (auto d = driver_.destroy(uuid); !d) {
    log::error("Rolling back instance '{}': {}", uuid, d.error().message);
  }
  (void)disconnectVolumes(entry);
  // The guest may have run (and written) before the launch failed: its files are purged as on
  // delete, and its disk secrets go.
  if (auto r = destroyDiskKeys(entry); !r) {
    log::error("Rolling back instance '{}': {}", uuid, r.error().message);
  }
  if (auto r = purgeInstanceFiles(uuid); !r) {
    log::error("Rolling back instance '{}': {}", uuid, r.error().message);
  }
}

Result<void> InstanceManager::destroyDiskKeys(const EntryPtr& entry) {
  std::vector<state::DiskRecord> disks;
  {
    std::lock_guard lock(entry->mu);
    disks = entry->record.disks;
  }
  bool sealed = false;
  for (const auto& d : disks) {
    if (d.encryption_secret_uuid.empty()) continue;
    if (auto r = driver_.undefineDiskSecret(d.path); !r) return r;
    sealed = sealed || !d.sealed_key.empty();
  }
  if (!sealed) return success();
  std::lock_guard lock(entry->mu);
  for (auto& d : entry->record.disks) d.sealed_key.clear();
  if (auto s = saveLocked(*entry); !s) return s;
  // Older versions of the record, key included, must not stay behind in the database's log.
  return store_.forgetHistory();
}

Result<void> InstanceManager::purgeInstanceFiles(const std::string& uuid) {
  const std::string dir = instanceDir(uuid);
  auto cleared = drivers::disk::clearDirectory(dir, options_.ephemeral_clear);
  if (!cleared) return cleared.error();
  if (cleared->files > 0 && options_.ephemeral_clear != drivers::disk::ClearMethod::kNone) {
    log::info("Instance '{}': {} cleared {} files ({} bytes zeroed, {} punched, {} trimmed{}{})",
              uuid, drivers::disk::clearMethodName(options_.ephemeral_clear), cleared->files,
              cleared->bytes_zeroed, cleared->bytes_punched, cleared->bytes_trimmed,
              cleared->trim_unsupported ? "; the filesystem cannot trim" : "",
              cleared->skipped_linked > 0 ? "; files with other links were left as they are" : "");
  }
  return fs::removeTree(dir);
}

void InstanceManager::restoreDiskSecrets(const EntryPtr& entry) {
  std::vector<state::DiskRecord> disks;
  {
    std::lock_guard lock(entry->mu);
    disks = entry->record.disks;
  }
  for (const auto& d : disks) {
    if (d.sealed_key.empty()) continue;
    auto exists = driver_.diskSecretExists(d.path);
    if (!exists || *exists) continue;  // libvirt away (reconcile retries), or nothing lost
    auto passphrase = secrets_.open(d.sealed_key);
    if (!passphrase) {
      log::error("Disk '{}': {}", d.path, passphrase.error().message);
      continue;
    }
    log::info("Re-creating the key secret of disk '{}' (libvirtd lost it)", d.path);
    if (auto r = driver_.defineDiskSecret(d.encryption_secret_uuid, d.path, *passphrase); !r) {
      log::warn("Disk '{}': {}", d.path, r.error().message);
    }
  }
}

Result<InstanceRecord> InstanceManager::requestDelete(const std::string& uuid) {
  EntryPtr entry = find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  InstanceRecord snapshot;
  {
    std::lock_guard lock(entry->mu);
    if (entry->record.state == InstanceState::kDeleting) return entry->record;
    entry->delete_requested = true;
    entry->record.state = InstanceState::kDeleting;
    entry->record.task_state = "deleting";
    // The intent is durable before anything is removed: a crash resumes the delete.
    if (auto s = saveLocked(*entry); !s) return s.error();
    snapshot = entry->record;
  }
  if (!jobs_.post([this, entry] { runDelete(entry); })) {
    return Error::unavailable("kilnd is shutting down; the delete resumes at its next start");
  }
  return snapshot;
}

void InstanceManager::runDelete(const EntryPtr& entry) {
  std::lock_guard job(entry->job);
  const std::string uuid = entry->record.uuid;
  if (auto fp = failpoint("delete.before_destroy"); !fp) return deferDelete(entry, fp.error());
  if (auto d = driver_.destroy(uuid); !d) {
    // Most likely libvirtd is away; the periodic reconcile retries the delete.
    std::lock_guard lock(entry->mu);
    entry->record.fault = fmt::format("Delete is waiting to be retried: {}", d.error().message);
    if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
    log::warn("Instance '{}': {}", uuid, entry->record.fault);
    return;
  }
  if (auto fp = failpoint("delete.after_destroy"); !fp) return deferDelete(entry, fp.error());
  if (auto r = disconnectVolumes(entry); !r) {
    std::lock_guard lock(entry->mu);
    entry->record.fault = fmt::format("Delete is waiting to be retried: {}", r.error().message);
    if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
    return;
  }
  if (auto fp = failpoint("delete.after_volumes"); !fp) return deferDelete(entry, fp.error());
  // Crypto-erase first: the keys are gone (from libvirtd and the record) before the files.
  if (auto r = destroyDiskKeys(entry); !r) return deferDelete(entry, r.error());
  if (auto fp = failpoint("delete.after_keys"); !fp) return deferDelete(entry, fp.error());
  if (auto r = purgeInstanceFiles(uuid); !r) {
    std::lock_guard lock(entry->mu);
    entry->record.fault = fmt::format("Delete is waiting to be retried: {}", r.error().message);
    if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
    return;
  }
  if (auto fp = failpoint("delete.after_files"); !fp) return deferDelete(entry, fp.error());
  if (auto r = store_.remove(uuid); !r) {
    log::error("Instance '{}': {}", uuid, r.error().message);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    entries_.erase(uuid);
  }
  log::info("Instance '{}' is deleted", uuid);
}

void InstanceManager::deferDelete(const EntryPtr& entry, const Error& why) {
  std::lock_guard lock(entry->mu);
  entry->record.fault = fmt::format("Delete is waiting to be retried: {}", why.message);
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
  log::warn("Instance '{}': {}", entry->record.uuid, entry->record.fault);
}

Result<InstanceRecord> InstanceManager::powerAction(const std::string& uuid, PowerAction action) {
  EntryPtr entry = find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  InstanceRecord snapshot;
  {
    std::lock_guard lock(entry->mu);
    InstanceRecord& rec = entry->record;
    const char* name = "";
    bool fits = false;
    switch (action) {
      case PowerAction::kSoftReboot:
        name = "rebooting";
        fits = rec.state == InstanceState::kActive;
        break;
      case PowerAction::kHardReboot:
        // As nova: a hard reboot also recovers a stopped or failed instance that has a domain.
        name = "rebooting_hard";
        fits = rec.state == InstanceState::kActive || rec.state == InstanceState::kStopped ||
               (rec.state == InstanceState::kError && !rec.disks.empty());
        break;
      case PowerAction::kStop:
        name = "powering_off";
        fits = rec.state == InstanceState::kActive;
        break;
      case PowerAction::kStart:
        name = "powering_on";
        fits = rec.state == InstanceState::kStopped;
        break;
    }
    if (!fits || !rec.task_state.empty()) {
      return Error::conflict(fmt::format(
          "Instance '{}' is {}{}; that action does not fit", uuid, state::stateName(rec.state),
          rec.task_state.empty() ? "" : " (" + rec.task_state + ")"));
    }
    rec.task_state = name;
    rec.action_error.clear();
    if (auto sv = saveLocked(*entry); !sv) return sv.error();
    snapshot = rec;
  }
  if (!jobs_.post([this, entry, action] { runPowerAction(entry, action); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return snapshot;
}

void InstanceManager::runPowerAction(const EntryPtr& entry, PowerAction action) {
  std::lock_guard job(entry->job);
  const std::string uuid = entry->record.uuid;
  Result<void> result = success();
  std::string how;
  // A start needs the disk secrets; libvirtd may have lost them since the last reconcile.
  if (action != PowerAction::kStop) restoreDiskSecrets(entry);
  switch (action) {
    case PowerAction::kSoftReboot:
    case PowerAction::kHardReboot: {
      bool hard = action == PowerAction::kHardReboot;
      auto r = driver_.reboot(uuid, hard, options_.soft_reboot_timeout);
      if (!r) {
        result = r.error();
      } else {
        how = *r ? "soft" : "hard";
      }
      break;
    }
    case PowerAction::kStop: {
      auto r = driver_.powerOff(uuid, options_.shutdown_timeout);
      if (!r) {
        result = r.error();
      } else {
        how = *r ? "clean shutdown" : "powered off after the timeout";
      }
      break;
    }
    case PowerAction::kStart:
      result = driver_.powerOn(uuid);
      break;
  }
  std::lock_guard lock(entry->mu);
  InstanceRecord& rec = entry->record;
  rec.task_state.clear();
  if (result) {
    bool running = action != PowerAction::kStop;
    rec.state = running ? InstanceState::kActive : InstanceState::kStopped;
    rec.power_state = running ? "running" : "shutdown";
    rec.fault.clear();
    log::info("Instance '{}' is {}{}", uuid, state::stateName(rec.state),
              how.empty() ? "" : " (" + how + ")");
  } else {
    rec.action_error = result.error().message;
    log::warn("Instance '{}': {}", uuid, rec.action_error);
  }
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
}

Result<std::string> InstanceManager::snapshot(const std::string& uuid, const std::string& name,
                                              const nlohmann::json& metadata) {
  EntryPtr entry = find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  imagecache::NewImage image;
  image.name = name;
  image.disk_format = "qcow2";
  {
    std::lock_guard lock(entry->mu);
    const InstanceRecord& rec = entry->record;
    if (auto r = requireIdleActiveOrStopped(rec, "a snapshot"); !r) return r.error();
    if (rec.disks.empty() || rec.disks[0].device != "vda") {
      return Error::conflict(fmt::format(
          "Instance '{}' boots from a volume; snapshot the volume in the volume service", uuid));
    }
    // As nova: the new image inherits the base image's properties, minus what describes the
    // base's own bits, and says where it came from.
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
        log::info("Snapshot of '{}': not inheriting image property '{}'", uuid, key.substr(0, 64));
        continue;
      }
      image.properties[key] = value.is_string() ? value.get<std::string>() : value.dump();
    }
    for (const auto& [key, value] : metadata.items()) image.properties[key] = value;
    image.properties["image_type"] = "snapshot";
    image.properties["instance_uuid"] = uuid;
    image.properties["base_image_ref"] = rec.image_id;
  }
  if (auto v = imagecache::validateNewImage(image); !v) return v.error();
  // The image record exists before the answer, so the scheduler gets an id it can poll.
  auto image_id = uploader_.create(image);
  if (!image_id) return image_id.error();
  // The marker names the image until the snapshot ends: after a crash, recover() discards the
  // image it names, so no image that never got its bytes is left behind.
  const std::string marker = options_.snapshots_dir + "/" + *image_id + ".pending";
  Result<void> marked = fs::makeDirectories(options_.snapshots_dir, 0700);
  if (marked) marked = fs::writeFileAtomically(marker, uuid, 0600);
  if (!marked) {
    (void)uploader_.discard(*image_id);
    return marked.error();
  }
  {
    std::lock_guard lock(entry->mu);
    if (!entry->record.task_state.empty()) {
      (void)uploader_.discard(*image_id);
      ::unlink(marker.c_str());
      return Error::conflict(fmt::format("Instance '{}' became busy", uuid));
    }
    entry->record.task_state = "image_uploading";
    entry->record.action_error.clear();
    if (auto sv = saveLocked(*entry); !sv) {
      (void)uploader_.discard(*image_id);
      ::unlink(marker.c_str());
      return sv.error();
    }
  }
  std::string id = *image_id;
  if (!jobs_.post([this, entry, id] { runSnapshot(entry, id); })) {
    // The marker stays: the next start discards the image.
    return Error::unavailable("kilnd is shutting down");
  }
  return id;
}

void InstanceManager::runSnapshot(const EntryPtr& entry, const std::string& image_id) {
  std::lock_guard job(entry->job);
  const std::string uuid = entry->record.uuid;
  state::DiskRecord root;
  {
    std::lock_guard lock(entry->mu);
    root = entry->record.disks[0];
  }
  const std::string tmp = options_.snapshots_dir + "/" + image_id + ".qcow2";
  const std::string marker = options_.snapshots_dir + "/" + image_id + ".pending";
  auto started = clock_.steadyNow();
  Result<void> result = failpoint("snapshot.after_record");
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
  std::lock_guard lock(entry->mu);
  entry->record.task_state.clear();
  if (result) {
    auto ms = [](auto d) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    log::info("Instance '{}': snapshot '{}' uploaded (capture {} ms, upload {} ms)", uuid, image_id,
              ms(captured - started), ms(clock_.steadyNow() - captured));
  } else {
    entry->record.action_error =
        fmt::format("Snapshot '{}' failed: {}", image_id, result.error().message);
    log::warn("Instance '{}': {}", uuid, entry->record.action_error);
  }
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
}

Result<InstanceRecord> InstanceManager::attachVolume(const std::string& uuid,
                                                     api::BlockDeviceRequest request) {
  EntryPtr entry = find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  InstanceRecord snapshot;
  {
    std::lock_guard lock(entry->mu);
    InstanceRecord& rec = entry->record;
    if (auto r = requireIdleActiveOrStopped(rec, "attaching a volume"); !r) return r.error();
    std::vector<std::string> taken;
    for (const auto& d : rec.disks) taken.push_back(d.device);
    for (const auto& v : rec.volumes) {
      taken.push_back(v.device);
      if (v.volume_id == request.volume_id) {
        return Error::conflict(
            fmt::format("Volume '{}' is already attached to instance '{}'", v.volume_id, uuid));
      }
    }
    if (request.boot)
      return Error::invalid("A volume cannot become the root disk of a running instance");
    std::vector<api::BlockDeviceRequest> one = {request};
    if (auto r = api::assignDevices(one, taken); !r) return r.error();
    request.device = one[0].device;
    rec.task_state = "attaching_volume";
    rec.action_error.clear();
    if (auto sv = saveLocked(*entry); !sv) return sv.error();
    snapshot = rec;
  }
  if (!jobs_.post([this, entry, request] { runAttach(entry, request); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return snapshot;
}

void InstanceManager::runAttach(const EntryPtr& entry, const api::BlockDeviceRequest& bdm) {
  std::lock_guard job(entry->job);
  const std::string uuid = entry->record.uuid;
  Result<void> result = failpoint("attach.after_record");
  Result<drivers::DiskSpec> disk = Error::internal("not connected");
  if (result) {
    disk = connectVolume(entry, bdm, "attach");
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
    drivers::volume::Attachment att;
    {
      std::lock_guard lock(entry->mu);
      for (const auto& v : entry->record.volumes) {
        if (v.volume_id == bdm.volume_id) att = v;
      }
    }
    if (!att.volume_id.empty()) (void)volumes_.disconnect(att, otherAttachments(uuid));
  }
  std::lock_guard lock(entry->mu);
  InstanceRecord& rec = entry->record;
  rec.task_state.clear();
  if (!result) {
    std::erase_if(rec.volumes, [&](const auto& v) { return v.volume_id == bdm.volume_id; });
    rec.sealed_passwords.erase(bdm.volume_id);
    rec.action_error =
        fmt::format("Attaching volume '{}' failed: {}", bdm.volume_id, result.error().message);
    log::warn("Instance '{}': {}", uuid, rec.action_error);
  } else {
    log::info("Instance '{}': volume '{}' attached as {}", uuid, bdm.volume_id, bdm.device);
  }
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
}

Result<InstanceRecord> InstanceManager::detachVolume(const std::string& uuid,
                                                     const std::string& volume_id) {
  EntryPtr entry = find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  InstanceRecord snapshot;
  {
    std::lock_guard lock(entry->mu);
    InstanceRecord& rec = entry->record;
    if (auto r = requireIdleActiveOrStopped(rec, "detaching a volume"); !r) return r.error();
    auto it = std::find_if(rec.volumes.begin(), rec.volumes.end(),
                           [&](const auto& v) { return v.volume_id == volume_id; });
    if (it == rec.volumes.end()) {
      return Error::notFound(
          fmt::format("Volume '{}' is not attached to instance '{}'", volume_id, uuid));
    }
    if (it->boot) {
      return Error::conflict(
          fmt::format("Volume '{}' is the root disk of instance '{}'", volume_id, uuid));
    }
    rec.task_state = "detaching_volume";
    rec.action_error.clear();
    if (auto sv = saveLocked(*entry); !sv) return sv.error();
    snapshot = rec;
  }
  if (!jobs_.post([this, entry, volume_id] { runDetach(entry, volume_id); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return snapshot;
}

void InstanceManager::runDetach(const EntryPtr& entry, const std::string& volume_id) {
  std::lock_guard job(entry->job);
  const std::string uuid = entry->record.uuid;
  drivers::volume::Attachment att;
  {
    std::lock_guard lock(entry->mu);
    for (const auto& v : entry->record.volumes) {
      if (v.volume_id == volume_id) att = v;
    }
  }
  Result<void> result = failpoint("detach.after_record");
  if (result) result = driver_.detachDisk(uuid, drivers::volume::diskFor(att));
  if (result) result = failpoint("detach.after_device");
  // Only once the guest has let go is the host side removed (nova's lesson from CVE-2023-2088).
  if (result) result = volumes_.disconnect(att, otherAttachments(uuid));
  if (result) result = failpoint("detach.after_volume_disconnect");
  std::lock_guard lock(entry->mu);
  InstanceRecord& rec = entry->record;
  rec.task_state.clear();
  if (result) {
    std::erase_if(rec.volumes, [&](const auto& v) { return v.volume_id == volume_id; });
    rec.sealed_passwords.erase(volume_id);
    log::info("Instance '{}': volume '{}' detached", uuid, volume_id);
  } else {
    rec.action_error =
        fmt::format("Detaching volume '{}' failed: {}", volume_id, result.error().message);
    log::warn("Instance '{}': {}", uuid, rec.action_error);
  }
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
}

Result<InstanceRecord> InstanceManager::get(const std::string& uuid) const {
  EntryPtr entry = find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  std::lock_guard lock(entry->mu);
  return entry->record;
}

std::vector<InstanceRecord> InstanceManager::list() const {
  std::vector<EntryPtr> all;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [uuid, entry] : entries_) all.push_back(entry);
  }
  std::vector<InstanceRecord> out;
  out.reserve(all.size());
  for (const auto& entry : all) {
    std::lock_guard lock(entry->mu);
    out.push_back(entry->record);
  }
  return out;
}

Result<std::string> InstanceManager::consoleLog(const std::string& uuid,
                                                std::uint64_t max_bytes) const {
  if (!find(uuid)) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  auto text = fs::readFileTail(instanceDir(uuid) + "/console.log", max_bytes);
  if (!text && text.error().code == ErrorCode::kNotFound) return std::string();
  return text;
}

Usage InstanceManager::usage() const {
  Usage u;
  for (const auto& rec : list()) {
    ++u.instances;
    u.vcpus += rec.flavor.vcpus;
    u.memory_mb += rec.flavor.memory_mb;
    u.disk_gb += rec.flavor.root_gb + rec.flavor.ephemeral_gb;
  }
  return u;
}

std::set<std::string> InstanceManager::imagesInUse() const {
  std::set<std::string> ids;
  for (const auto& rec : list()) ids.insert(rec.image_id);
  return ids;
}

void InstanceManager::reconcileAll() {
  if (!driver_.connected()) return;
  std::vector<EntryPtr> all;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [uuid, entry] : entries_) all.push_back(entry);
  }
  for (const auto& entry : all) {
    bool retry_delete = false;
    {
      std::lock_guard lock(entry->mu);
      retry_delete =
          entry->record.state == InstanceState::kDeleting && !entry->record.fault.empty();
    }
    if (retry_delete) {
      std::lock_guard lock(entry->mu);
      entry->record.fault.clear();
      jobs_.post([this, entry] { runDelete(entry); });
      continue;
    }
    reconcileOne(entry);
  }
  sweepOrphans();
}

bool InstanceManager::finishInterruptedAction(const EntryPtr& entry) {
  std::string uuid;
  std::string task;
  std::vector<drivers::volume::Attachment> volumes;
  {
    std::lock_guard lock(entry->mu);
    uuid = entry->record.uuid;
    task = entry->record.task_state;
    volumes = entry->record.volumes;
  }
  if (task == "attaching_volume" || task == "detaching_volume") {
    // The domain is the truth: a volume it does not have (live or persistent) was never
    // attached, or its detach reached the guest; its host side goes. A volume it has stays.
    auto devices = driver_.domainDevices(uuid);
    if (!devices) return false;
    std::vector<std::string> dropped;
    if (*devices) {
      for (const auto& v : volumes) {
        if (v.boot || (*devices)->disk_targets.count(v.device)) continue;
        if (auto r = volumes_.disconnect(v, otherAttachments(uuid)); !r) {
          log::warn("Instance '{}': volume '{}': {}", uuid, v.volume_id, r.error().message);
          return false;
        }
        dropped.push_back(v.volume_id);
      }
    }
    std::lock_guard lock(entry->mu);
    for (const auto& id : dropped) {
      std::erase_if(entry->record.volumes, [&](const auto& v) { return v.volume_id == id; });
      entry->record.sealed_passwords.erase(id);
    }
  } else if (task == "image_uploading") {
    // The snapshot may have been interrupted while the guest was paused for the copy (its
    // image is discarded by discardInterruptedSnapshots).
    auto power = driver_.powerState(uuid);
    if (!power) return false;
    if (*power && **power == drivers::PowerState::kPaused) {
      if (auto r = driver_.resume(uuid); !r) {
        log::warn("Instance '{}': {}", uuid, r.error().message);
        return false;
      }
    }
  }
  std::lock_guard lock(entry->mu);
  entry->interrupted_action = false;
  entry->record.task_state.clear();
  entry->record.action_error =
      fmt::format("The '{}' task was interrupted by a restart of kilnd", task);
  if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
  log::warn("Instance '{}': {}", uuid, entry->record.action_error);
  return true;
}

void InstanceManager::discardInterruptedSnapshots(const std::vector<std::string>& markers) {
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

void InstanceManager::sweepOrphans() {
  if (!driver_.connected()) return;
  const std::string prefix = options_.instances_dir + "/";
  auto under = [&](const std::string& path) { return path.starts_with(prefix); };
  // Listed before the records are read: anything made after the listing has its record already
  // (records are written before side effects), so nothing in flight is taken for an orphan.
  auto domains = driver_.listManaged();
  auto secrets = driver_.listSecrets();
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& d : std::filesystem::directory_iterator(options_.instances_dir, ec)) {
    dirs.push_back(d.path().filename().string());
  }
  std::set<std::string> owners;  // instances that may own something
  std::set<std::string> secret_usages;
  for (const auto& rec : list()) {
    bool rolled_back = rec.state == InstanceState::kError && rec.disks.empty() &&
                       rec.volumes.empty() && rec.task_state.empty();
    if (!rolled_back) owners.insert(rec.uuid);
    for (const auto& v : rec.volumes) secret_usages.insert(v.secret_usage);
  }
  if (domains) {
    for (const auto& dom : *domains) {
      if (owners.count(dom.uuid)) continue;
      auto devices = driver_.domainDevices(dom.uuid);
      if (!devices || !*devices) continue;
      bool ours = std::any_of((*devices)->files.begin(), (*devices)->files.end(), under);
      if (!ours) continue;  // another kilnd's (another state_path) on the same libvirtd
      log::warn("Removing domain 'kiln-{}': no instance owns it", dom.uuid);
      if (auto r = driver_.destroy(dom.uuid); !r) log::error("{}", r.error().message);
    }
  }
  for (const auto& name : dirs) {
    if (owners.count(name)) continue;
    log::warn("Removing '{}{}': no instance owns it", prefix, name);
    if (auto r = fs::removeTree(prefix + name); !r) log::error("{}", r.error().message);
  }
  if (secrets) {
    for (const auto& secret : *secrets) {
      bool ours = false;
      if (secret.usage_type == "iscsi") {
        // CHAP secrets: usage kiln-<uuid>-<volume>, described with this kilnd's instances dir.
        ours = secret.usage_id.starts_with("kiln-") &&
               secret.description.find(options_.instances_dir) != std::string::npos &&
               !secret_usages.count(secret.usage_id);
      } else if (secret.usage_type == "volume" && under(secret.usage_id)) {
        // A disk's encryption key: its usage is the disk's path, in an instance's directory.
        std::string rest = secret.usage_id.substr(prefix.size());
        ours = !owners.count(rest.substr(0, rest.find('/')));
      }
      if (!ours) continue;
      log::warn("Removing the {} secret '{}': no instance owns it", secret.usage_type,
                secret.usage_id);
      if (auto r = driver_.removeSecret(secret.uuid); !r) log::error("{}", r.error().message);
    }
  }
}

void InstanceManager::reconcileOne(const EntryPtr& entry) {
  // A job in progress owns the instance; reconcile only settled ones.
  std::unique_lock job(entry->job, std::try_to_lock);
  if (!job.owns_lock()) return;
  bool interrupted = false;
  {
    std::lock_guard lock(entry->mu);
    interrupted = entry->interrupted_action;
  }
  if (interrupted && !finishInterruptedAction(entry)) return;
  std::string uuid;
  {
    std::lock_guard lock(entry->mu);
    InstanceState s = entry->record.state;
    if (s == InstanceState::kBuilding || s == InstanceState::kDeleting) return;
    if (s == InstanceState::kError && entry->record.disks.empty()) return;  // nothing runs
    uuid = entry->record.uuid;
  }
  std::vector<std::pair<drivers::volume::Attachment, std::string>> to_restore;
  {
    std::lock_guard lock(entry->mu);
    for (const auto& v : entry->record.volumes) {
      auto sealed = entry->record.sealed_passwords.find(v.volume_id);
      if (sealed != entry->record.sealed_passwords.end())
        to_restore.emplace_back(v, sealed->second);
    }
  }
  for (const auto& [att, sealed] : to_restore) {
    auto password = secrets_.open(sealed);
    if (!password) {
      log::error("Volume '{}': {}", att.volume_id, password.error().message);
      continue;
    }
    if (auto r = volumes_.restore(att, *password); !r) {
      log::warn("Volume '{}': {}", att.volume_id, r.error().message);
    }
  }
  restoreDiskSecrets(entry);
  auto power = driver_.powerState(uuid);
  if (!power) return;  // libvirt away: keep what we know
  std::lock_guard lock(entry->mu);
  InstanceRecord& rec = entry->record;
  InstanceRecord before = rec;
  if (!*power) {
    if (rec.state != InstanceState::kError) {
      rec.state = InstanceState::kError;
      rec.power_state = "nostate";
      rec.fault = "The instance's domain disappeared from the hypervisor";
    }
  } else {
    drivers::PowerState p = **power;
    rec.power_state = std::string(drivers::powerStateName(p));
    if (p == drivers::PowerState::kRunning && rec.state == InstanceState::kStopped) {
      rec.state = InstanceState::kActive;
    } else if (p == drivers::PowerState::kShutoff && rec.state == InstanceState::kActive) {
      rec.state = InstanceState::kStopped;
    } else if (p == drivers::PowerState::kCrashed && rec.state != InstanceState::kError) {
      rec.state = InstanceState::kError;
      rec.fault = "The instance crashed: its QEMU process ended unexpectedly";
    }
  }
  if (rec.state != before.state || rec.power_state != before.power_state) {
    log::info("Instance '{}' is now {} (power {})", uuid, state::stateName(rec.state),
              rec.power_state);
    if (auto s = saveLocked(*entry); !s) log::error("{}", s.error().message);
  }
}

void InstanceManager::onDomainEvent(const drivers::DomainEvent& event) {
  // Called on the libvirt event thread: hand over and return at once.
  EntryPtr entry = find(event.uuid);
  if (!entry) return;
  jobs_.post([this, entry] { reconcileOne(entry); });
}

}  // namespace kiln::lifecycle
