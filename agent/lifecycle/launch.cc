#include "agent/lifecycle/launch.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <optional>

#include "common/failpoint.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/uuid.h"
#include "drivers/configdrive/config_drive.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;
using state::TaskState;

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;
// What creating a qcow2 overlay or blank disk writes at most (its header, L1 table and refcounts;
// qemu's LUKS header is about 2 MiB): a launch does not begin on a filesystem that cannot hold it.
constexpr std::uint64_t kDiskMetadataBytes = 4ULL << 20;

struct Boundary {
  std::string_view name;
  bool has_failpoint;  // "launch.<name>" in the crash tests' kilnd
};

// After the record (written by accept), then after each step.
constexpr Boundary kAfterRecord{"after_record", true};
constexpr Boundary kAfterImage{"after_image", true};
constexpr Boundary kAfterRootDisk{"after_root_disk", true};
constexpr Boundary kAfterDisks{"after_disks", true};
constexpr Boundary kAfterDisksRecorded{"after_disks_recorded", true};
constexpr Boundary kAfterInterfaces{"after_interfaces", true};
constexpr Boundary kAfterConfigDrive{"after_config_drive", true};
constexpr Boundary kAfterDiskSecrets{"after_disk_secrets", false};
constexpr Boundary kAfterVolumes{"after_volumes", true};
constexpr Boundary kAfterStart{"after_start", true};

}  // namespace

// What the steps make, handed from one to the next.
struct Launcher::Plan {
  Plan(const api::LaunchRequest& r, std::string d) : request(r), dir(std::move(d)) {}

  const api::LaunchRequest& request;
  std::string dir;
  bool image_pinned = false;  // the cache pins the image from fetch() until release()
  // Set when the rollback could not remove the domain: the disks and volumes stay recorded, so
  // that a delete removes them later.
  std::optional<Error> rollback_incomplete;
  std::optional<imagecache::CachedImage> base;
  nlohmann::json properties = nlohmann::json::object();
  drivers::hardware::HardwareSpec hardware;
  std::string cdrom_path;
  std::vector<state::DiskRecord> disks;
  std::vector<state::InterfaceRecord> interfaces;
  std::string config_drive_path;
  // device -> passphrase of the disks made encrypted, held until their libvirt secrets exist.
  std::map<std::string, std::string> disk_keys;
  drivers::InstanceSpec spec;
};

Launcher::Launcher(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                   imagecache::ImageCache& cache, drivers::disk::DiskBuilder& disks,
                   InstanceResources& resources, const SecretBox& secrets, const Clock& clock,
                   const ManagerOptions& options)
    : table_(table),
      jobs_(jobs),
      driver_(driver),
      cache_(cache),
      disks_(disks),
      resources_(resources),
      secrets_(secrets),
      clock_(clock),
      options_(options) {}

const std::vector<std::string_view>& Launcher::boundaries() {
  static const std::vector<std::string_view> names = {
      kAfterRecord.name,      kAfterImage.name,         kAfterRootDisk.name,
      kAfterDisks.name,       kAfterDisksRecorded.name, kAfterInterfaces.name,
      kAfterConfigDrive.name, kAfterDiskSecrets.name,   kAfterVolumes.name,
      kAfterStart.name};
  return names;
}

void Launcher::setBoundaryHookForTest(std::function<void(std::string_view)> hook) {
  boundary_hook_ = std::move(hook);
}

Result<InstanceRecord> Launcher::accept(const api::LaunchRequest& request) {
  if (!request.interfaces.empty() && !options_.host_network) {
    return Error::invalid("This host has no network plumbing; it cannot plug network_info's VIFs");
  }
  InstanceRecord rec;
  rec.uuid = request.uuid;
  rec.name = request.name;
  rec.project_id = request.project_id;
  rec.flavor = request.flavor;
  rec.image_id = request.image_id;
  rec.request_fingerprint = request.fingerprint;
  rec.state = InstanceState::kBuilding;
  rec.task_state = TaskState::kSpawning;
  rec.created_at = formatUtc(clock_.wallNow());
  rec.updated_at = rec.created_at;
  // Durable before it is acknowledged: an accepted instance is never forgotten.
  auto inserted = table_.insertNew(rec);
  if (!inserted) return inserted.error();
  if (!inserted->created) {
    InstanceRecord existing = table_.read(*inserted->entry);
    if (existing.request_fingerprint != request.fingerprint) {
      return Error::conflict(
          fmt::format("Instance '{}' already exists with a different request", request.uuid));
    }
    if (existing.state == InstanceState::kDeleting) {
      return Error::conflict(fmt::format("Instance '{}' is being deleted", request.uuid));
    }
    return existing;
  }
  EntryPtr entry = inserted->entry;
  if (!jobs_.post([this, entry, request] { run(entry, request); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return rec;
}

void Launcher::run(const EntryPtr& entry, const api::LaunchRequest& request) {
  auto job = table_.beginJob(entry, JobKind::kLaunch, options_.job_timeout);
  const std::string& uuid = entry->uuid();
  Timeline timeline(clock_);
  Plan plan(request, resources_.instanceDir(uuid));
  Result<void> result = job ? runSteps(entry, plan, timeline) : Result<void>(job.error());
  // The instance record names the image from here on; the launch's pin can go.
  if (plan.image_pinned) cache_.release(request.image_id);
  table_.settle(*entry, [&](InstanceRecord& rec) {
    rec.timeline = timeline.steps();
    // A delete arrived during the launch; it runs next and removes whatever was made.
    if (rec.state == InstanceState::kDeleting) return;
    rec.task_state = TaskState::kNone;
    if (result) {
      rec.state = InstanceState::kActive;
      rec.power_state = "running";
      log::info("Instance '{}' is active ({:.1f} ms)", uuid, timeline.totalMs());
    } else {
      rec.state = InstanceState::kError;
      rec.power_state = "nostate";
      rec.fault = result.error().message;
      if (plan.rollback_incomplete) {
        rec.fault += fmt::format(" (not rolled back: {}; delete the instance to remove it)",
                                 plan.rollback_incomplete->message);
      } else {
        rec.disks.clear();
        rec.volumes.clear();
        rec.interfaces.clear();
        rec.config_drive_path.clear();
        rec.sealed_passwords.clear();
      }
      log::warn("Instance '{}' failed to launch: {}", uuid, rec.fault);
    }
  });
}

Result<void> Launcher::runSteps(const EntryPtr& entry, Plan& plan, Timeline& timeline) {
  auto failed = [&](Error e) -> Result<void> {
    if (auto r = resources_.releaseAll(*entry); !r) plan.rollback_incomplete = r.error();
    return e;
  };
  // Where a crash test may kill kilnd, a test may interfere, and a delete takes over.
  auto boundary = [&](const Boundary& b) -> Result<void> {
    if (b.has_failpoint) {
      if (auto fp = failpoint(fmt::format("launch.{}", b.name)); !fp) return fp;
    }
    if (boundary_hook_) boundary_hook_(b.name);
    if (table_.read(*entry).state == InstanceState::kDeleting) {
      return Error::conflict("The instance was deleted during launch");
    }
    return success();
  };
  using Step = std::function<Result<void>()>;
  const std::vector<std::pair<Step, Boundary>> steps = {
      {[] { return success(); }, kAfterRecord},
      {[&] { return fetchImage(plan, timeline); }, kAfterImage},
      {[&] { return makeRootDisk(plan, timeline); }, kAfterRootDisk},
      {[&] { return makeEphemeralDisk(plan, timeline); }, kAfterDisks},
      {[&] { return recordDisks(*entry, plan); }, kAfterDisksRecorded},
      {[&] { return plugInterfaces(plan, timeline); }, kAfterInterfaces},
      {[&] { return writeConfigDrive(plan, timeline); }, kAfterConfigDrive},
      {[&] { return defineDiskSecrets(plan, timeline); }, kAfterDiskSecrets},
      {[&] { return connectVolumes(*entry, plan, timeline); }, kAfterVolumes},
      {[&] { return start(plan, timeline); }, kAfterStart},
  };
  for (const auto& [step, after] : steps) {
    if (auto r = step(); !r) return failed(r.error());
    if (auto r = boundary(after); !r) return failed(r.error());
  }
  return success();
}

Result<void> Launcher::checkHardware(Plan& plan, std::string_view disk_format) {
  const config::Flavor& flavor = plan.request.flavor;
  auto hw = drivers::hardware::hardwareSpecFrom(plan.properties, flavor.extra_specs, flavor.vcpus,
                                                disk_format);
  if (!hw) return hw.error();
  plan.hardware = std::move(hw).value();
  if (!plan.hardware.ignored_properties.empty()) {
    log::info("Instance '{}': image properties not honoured: {}", plan.request.uuid,
              fmt::join(plan.hardware.ignored_properties, ", "));
  }
  return success();
}

Result<void> Launcher::fetchImage(Plan& plan, Timeline& timeline) {
  const std::string& image_id = plan.request.image_id;
  // Before anything is made on the host, and on a cache hit too: a base cached for one project
  // is no licence for another. A denied image fails as a missing one.
  if (!image_id.empty()) {
    imagecache::ImageUser user{plan.request.project_id, plan.request.image_token};
    if (auto r = cache_.checkAccess(image_id, user, timeline); !r) return r;
  }
  // QEMU (another user) must traverse into the directory; nobody may list it.
  if (auto r = fs::makeDirectories(plan.dir, 0711); !r) return r;
  const config::Flavor& flavor = plan.request.flavor;
  // Boot from volume: no image, the virtual hardware comes from the flavor alone.
  if (image_id.empty()) return checkHardware(plan, "");
  // The cache refuses an image too big for the root disk from its header, before converting.
  plan.image_pinned = true;
  auto base = cache_.fetch(image_id, timeline, flavor.root_gb * kGiB);
  if (!base) return base.error();
  plan.base = *base;
  plan.properties = base->record.properties;
  if (auto r = checkHardware(plan, base->record.disk_format); !r) return r;
  if (plan.hardware.boot_from_cdrom && flavor.root_gb == 0) {
    return Error::invalid(fmt::format(
        "Image '{}' is an ISO: it needs a flavor with a root disk to install onto", image_id));
  }
  if (flavor.root_gb != 0 && base->virtual_size > flavor.root_gb * kGiB) {
    return Error::invalid(fmt::format(
        "Image '{}' has a virtual size of {} bytes, larger than the flavor's root disk of {} GiB",
        image_id, base->virtual_size, flavor.root_gb));
  }
  if (base->record.min_disk_gb && flavor.root_gb != 0 &&
      *base->record.min_disk_gb > flavor.root_gb) {
    return Error::invalid(fmt::format("Image '{}' needs a root disk of at least {} GiB", image_id,
                                      *base->record.min_disk_gb));
  }
  if (base->record.min_ram_mb && *base->record.min_ram_mb > flavor.memory_mb) {
    return Error::invalid(fmt::format("Image '{}' needs at least {} MB of memory", image_id,
                                      *base->record.min_ram_mb));
  }
  return success();
}

Result<DiskReserve::Hold> Launcher::reserveFor(std::uint64_t bytes, const std::string& what) {
  if (!options_.disk_reserve) return DiskReserve::Hold{};
  return options_.disk_reserve->take(bytes, what);
}

Result<void> Launcher::makeRootDisk(Plan& plan, Timeline& timeline) {
  if (!plan.base) return success();  // the root disk is a volume
  const imagecache::CachedImage& base = *plan.base;
  const config::Flavor& flavor = plan.request.flavor;
  // nova's meaning of a 0 GB root disk: the image's size.
  std::uint64_t root_bytes = flavor.root_gb == 0 ? base.virtual_size : flavor.root_gb * kGiB;
  auto step = timeline.step("disk.root");
  state::DiskRecord root{"vda", plan.dir + "/disk", "qcow2", root_bytes, base.path, base.format};
  // What creating it writes: a copy, the base's bytes; an overlay or a blank disk, metadata.
  const bool copies = !plan.hardware.boot_from_cdrom && !options_.use_cow_images;
  auto hold = reserveFor(copies ? base.virtual_size : kDiskMetadataBytes,
                         fmt::format("the root disk of instance '{}'", plan.request.uuid));
  if (!hold) {
    step.fail();
    return hold.error();
  }
  Result<void> r = success();
  if (plan.hardware.boot_from_cdrom) {
    // An ISO boots from a CD-ROM (the cached base, read-only) and installs onto an empty root.
    r = disks_.createBlank(root.path, root.format, root_bytes);
    root.backing_path.clear();
    root.backing_format.clear();
    plan.cdrom_path = base.path;
  } else if (options_.use_cow_images) {
    r = disks_.createOverlay(root.path, root.backing_path, root.backing_format, root_bytes);
  } else {
    // A standalone copy: the instance no longer depends on the cached base.
    r = disks_.createCopy(root.path, base.path, base.format, root_bytes);
    root.backing_path.clear();
    root.backing_format.clear();
  }
  if (!r) {
    step.fail();
    // qemu-img's words ("No space left on device") name neither the disk nor its filesystem.
    return Error{r.error().code, fmt::format("Creating the root disk '{}' failed: {}", root.path,
                                             r.error().message)};
  }
  plan.disks.push_back(root);
  return success();
}

Result<void> Launcher::makeEphemeralDisk(Plan& plan, Timeline& timeline) {
  const config::Flavor& flavor = plan.request.flavor;
  if (flavor.ephemeral_gb == 0) return success();
  auto step = timeline.step("disk.ephemeral");
  state::DiskRecord eph{"vdb", plan.dir + "/disk.local", "qcow2", flavor.ephemeral_gb * kGiB, "",
                        ""};
  // A blank qcow2 (LUKS or not) writes its metadata and headers only.
  auto hold = reserveFor(kDiskMetadataBytes,
                         fmt::format("the ephemeral disk of instance '{}'", plan.request.uuid));
  if (!hold) {
    step.fail();
    return hold.error();
  }
  Result<void> r = success();
  if (options_.encrypt_ephemeral) {
    auto passphrase = drivers::disk::newLuksPassphrase(options_.ephemeral_key_bits);
    auto sealed = passphrase ? secrets_.seal(*passphrase) : Result<std::string>(passphrase.error());
    if (!sealed) {
      r = sealed.error();
    } else {
      eph.encryption_secret_uuid = randomUuid();
      eph.sealed_key = *sealed;
      plan.disk_keys[eph.device] = *passphrase;
      r = disks_.createEncryptedBlank(eph.path, eph.virtual_size, options_.ephemeral_luks,
                                      *passphrase);
    }
  } else {
    r = disks_.createBlank(eph.path, eph.format, eph.virtual_size);
  }
  if (!r) {
    step.fail();
    return r;
  }
  plan.disks.push_back(eph);
  return success();
}

Result<void> Launcher::recordDisks(InstanceTable::Entry& entry, Plan& plan) {
  // The disks are recorded before the domain exists, so a crash from here on leaves a record that
  // names everything there is to clean up.
  // The NICs and the config drive too: a crash from here on leaves a record naming the taps and
  // the ISO to remove.
  for (const auto& vif : plan.request.interfaces) {
    state::InterfaceRecord iface{vif.nic, vif.vif};
    iface.nic.model = plan.hardware.vif_model;
    iface.nic.queues = iface.nic.model == "virtio" ? plan.hardware.vif_queues : 1;
    plan.interfaces.push_back(std::move(iface));
  }
  const bool mandatory = plan.properties.contains("img_config_drive") &&
                         plan.properties["img_config_drive"] == "mandatory";
  if (plan.request.config_drive || options_.force_config_drive || mandatory) {
    plan.config_drive_path = plan.dir + "/disk.config";
  }
  auto recorded = table_.update(entry, [&](InstanceRecord& rec) -> Result<void> {
    rec.disks = plan.disks;
    rec.image_properties = plan.properties;
    rec.interfaces = plan.interfaces;
    rec.config_drive_path = plan.config_drive_path;
    return success();
  });
  if (!recorded) return recorded.error();
  const config::Flavor& flavor = plan.request.flavor;
  drivers::InstanceSpec& spec = plan.spec;
  spec.uuid = recorded->uuid;
  spec.display_name = recorded->name;
  spec.vcpus = flavor.vcpus;
  spec.memory_mb = flavor.memory_mb;
  spec.console_log_path = plan.dir + "/console.log";
  spec.hardware = plan.hardware;
  spec.nvram_path = plan.dir + "/nvram.fd";
  spec.cdrom_path = plan.cdrom_path;
  spec.image_id = plan.request.image_id;
  spec.project_id = recorded->project_id;
  spec.flavor_name = flavor.name;
  spec.created_at = recorded->created_at;
  for (const auto& iface : plan.interfaces) spec.nics.push_back(iface.nic);
  spec.config_drive_path = plan.config_drive_path;
  for (const auto& d : plan.disks) {
    drivers::DiskSpec disk;
    disk.device = d.device;
    disk.path = d.path;
    disk.format = d.format;
    disk.backing_path = d.backing_path;
    disk.backing_format = d.backing_format;
    disk.encryption_secret_uuid = d.encryption_secret_uuid;
    disk.boot = d.device == "vda";
    spec.disks.push_back(disk);
  }
  return success();
}

Result<void> Launcher::plugInterfaces(Plan& plan, Timeline& timeline) {
  for (const auto& iface : plan.interfaces) {
    auto step = timeline.step("network.plug");
    if (auto r = resources_.plugInterface(plan.request.uuid, iface.nic); !r) {
      step.fail();
      return Error{r.error().code, fmt::format("Plugging port '{}' failed: {}", iface.nic.port_id,
                                               r.error().message)};
    }
  }
  return success();
}

Result<void> Launcher::writeConfigDrive(Plan& plan, Timeline& timeline) {
  if (plan.config_drive_path.empty()) return success();
  auto step = timeline.step("config_drive");
  const api::LaunchRequest& request = plan.request;
  drivers::configdrive::ConfigDriveInput input;
  input.uuid = request.uuid;
  input.name = request.name;
  input.hostname = request.hostname;
  input.availability_zone =
      request.availability_zone.empty() ? options_.availability_zone : request.availability_zone;
  input.project_id = request.project_id;
  input.public_keys = request.public_keys;
  input.user_data = request.user_data;
  for (const auto& iface : plan.interfaces) input.network_info.push_back(iface.vif);
  if (auto r = drivers::configdrive::writeConfigDrive(input, plan.config_drive_path); !r) {
    step.fail();
    return Error{r.error().code,
                 fmt::format("Writing the config drive failed: {}", r.error().message)};
  }
  return success();
}

Result<void> Launcher::defineDiskSecrets(Plan& plan, Timeline& timeline) {
  for (const auto& d : plan.disks) {
    if (d.encryption_secret_uuid.empty()) continue;
    // The record that names this secret is written already: a crash never leaves it unowned.
    auto step = timeline.step("disk.secret");
    if (auto r =
            driver_.defineDiskSecret(d.encryption_secret_uuid, d.path, plan.disk_keys[d.device]);
        !r) {
      step.fail();
      return r;
    }
  }
  plan.disk_keys.clear();
  return success();
}

Result<void> Launcher::connectVolumes(InstanceTable::Entry& entry, Plan& plan, Timeline& timeline) {
  for (const auto& bdm : plan.request.block_devices) {
    auto step = timeline.step("volume.connect");
    auto disk = resources_.connectVolume(entry, bdm, "launch");
    if (!disk) {
      step.fail();
      return disk.error();
    }
    plan.spec.disks.push_back(*disk);
  }
  return success();
}

Result<void> Launcher::start(Plan& plan, Timeline& timeline) {
  return driver_.spawn(plan.spec, timeline);
}

}  // namespace kiln::lifecycle
