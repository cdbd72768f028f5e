#include "agent/lifecycle/instance_resources.h"

#include <fmt/format.h>

#include <utility>

#include "common/failpoint.h"
#include "common/fs.h"
#include "common/log.h"
#include "drivers/disk/disk_purge.h"

namespace kiln::lifecycle {

using state::InstanceRecord;

InstanceResources::InstanceResources(InstanceTable& table, drivers::ComputeDriver& driver,
                                     drivers::volume::VolumeConnector& volumes,
                                     const SecretBox& secrets, const ManagerOptions& options)
    : table_(table), driver_(driver), volumes_(volumes), secrets_(secrets), options_(options) {}

std::string InstanceResources::instanceDir(const std::string& uuid) const {
  return options_.instances_dir + "/" + uuid;
}

Result<drivers::DiskSpec> InstanceResources::connectVolume(InstanceTable::Entry& entry,
                                                           const api::BlockDeviceRequest& bdm,
                                                           std::string_view operation) {
  drivers::volume::Attachment att =
      volumes_.plan(entry.uuid(), bdm.volume_id, bdm.device, bdm.boot, bdm.target);
  auto recorded = table_.update(entry, [&](InstanceRecord& rec) -> Result<void> {
    rec.volumes.push_back(att);
    if (bdm.target.auth_method == "CHAP") {
      auto sealed = secrets_.seal(bdm.target.auth_password);
      if (!sealed) return sealed.error();
      rec.sealed_passwords[bdm.volume_id] = *sealed;
    }
    return success();
  });
  if (!recorded) return recorded.error();
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

std::vector<drivers::volume::Attachment> InstanceResources::otherAttachments(
    const std::string& uuid) const {
  std::vector<drivers::volume::Attachment> out;
  for (const auto& rec : table_.records()) {
    if (rec.uuid == uuid) continue;
    out.insert(out.end(), rec.volumes.begin(), rec.volumes.end());
  }
  return out;
}

Result<void> InstanceResources::disconnectVolumes(const InstanceTable::Entry& entry) {
  const std::vector<drivers::volume::Attachment> attached = table_.read(entry).volumes;
  auto others = otherAttachments(entry.uuid());
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

void InstanceResources::restoreVolumeSecrets(const InstanceTable::Entry& entry) {
  const InstanceRecord rec = table_.read(entry);
  for (const auto& att : rec.volumes) {
    auto sealed = rec.sealed_passwords.find(att.volume_id);
    if (sealed == rec.sealed_passwords.end()) continue;
    auto password = secrets_.open(sealed->second);
    if (!password) {
      log::error("Volume '{}': {}", att.volume_id, password.error().message);
      continue;
    }
    if (auto r = volumes_.restore(att, *password); !r) {
      log::warn("Volume '{}': {}", att.volume_id, r.error().message);
    }
  }
}

Result<void> InstanceResources::destroyDiskKeys(InstanceTable::Entry& entry) {
  const std::vector<state::DiskRecord> disks = table_.read(entry).disks;
  bool sealed = false;
  for (const auto& d : disks) {
    if (d.encryption_secret_uuid.empty()) continue;
    if (auto r = driver_.undefineDiskSecret(d.path); !r) return r;
    sealed = sealed || !d.sealed_key.empty();
  }
  if (!sealed) return success();
  auto erased = table_.update(entry, [](InstanceRecord& rec) -> Result<void> {
    for (auto& d : rec.disks) d.sealed_key.clear();
    return success();
  });
  if (!erased) return erased.error();
  // Older versions of the record, key included, must not stay behind in the database's log.
  return table_.store().forgetHistory();
}

void InstanceResources::restoreDiskSecrets(const InstanceTable::Entry& entry) {
  for (const auto& d : table_.read(entry).disks) {
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

Result<void> InstanceResources::plugInterface(const std::string& uuid,
                                              const drivers::NicSpec& nic) {
  if (!options_.host_network) {
    return Error::invalid("This host has no network plumbing configured; it cannot plug NICs");
  }
  return options_.host_network->plug(uuid, nic);
}

Result<void> InstanceResources::unplugInterface(const std::string& uuid,
                                                const drivers::NicSpec& nic) {
  if (!options_.host_network) return success();  // nothing can have been plugged
  return options_.host_network->unplug(uuid, nic);
}

Result<void> InstanceResources::plugInterfaces(const InstanceTable::Entry& entry) {
  const state::InstanceRecord rec = table_.read(entry);
  for (const auto& iface : rec.interfaces) {
    if (auto r = plugInterface(rec.uuid, iface.nic); !r) return r;
  }
  return success();
}

Result<void> InstanceResources::unplugInterfaces(const InstanceTable::Entry& entry) {
  const state::InstanceRecord rec = table_.read(entry);
  Result<void> first = success();
  for (const auto& iface : rec.interfaces) {
    if (auto r = unplugInterface(rec.uuid, iface.nic); !r) {
      log::warn("Instance '{}': {}", rec.uuid, r.error().message);
      if (first) first = r;
    }
  }
  return first;
}

Result<void> InstanceResources::purgeFiles(const std::string& uuid) {
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

Result<void> InstanceResources::releaseAll(InstanceTable::Entry& entry) {
  const std::string& uuid = entry.uuid();
  if (auto d = driver_.destroy(uuid); !d) {
    log::error("Rolling back instance '{}': {}; its disks and volumes are kept", uuid,
               d.error().message);
    return d;
  }
  (void)disconnectVolumes(entry);
  (void)unplugInterfaces(entry);
  // The guest may have run (and written) before the launch failed: its files are purged as on
  // delete, and its disk secrets go.
  if (auto r = destroyDiskKeys(entry); !r) {
    log::error("Rolling back instance '{}': {}", uuid, r.error().message);
  }
  if (auto r = purgeFiles(uuid); !r) {
    log::error("Rolling back instance '{}': {}", uuid, r.error().message);
  }
  return success();
}

}  // namespace kiln::lifecycle
