#include "agent/lifecycle/adoption.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;

namespace {

constexpr std::uint64_t kGiB = 1024ULL * 1024 * 1024;

// ".../ip-HOST:PORT-iscsi-IQN-lun-N": the kernel connector's by-path name, read back.
std::optional<drivers::volume::IscsiPath> pathFromByPath(const std::string& device_path) {
  const std::string name = device_path.substr(device_path.rfind('/') + 1);
  auto iscsi = name.find("-iscsi-");
  auto lun = name.rfind("-lun-");
  if (!name.starts_with("ip-") || iscsi == std::string::npos || lun == std::string::npos ||
      lun < iscsi) {
    return std::nullopt;
  }
  const std::string portal = name.substr(3, iscsi - 3);
  auto colon = portal.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  drivers::volume::IscsiPath p;
  p.host = portal.substr(0, colon);
  if (p.host.size() > 2 && p.host.front() == '[') p.host = p.host.substr(1, p.host.size() - 2);
  std::from_chars(portal.data() + colon + 1, portal.data() + portal.size(), p.port);
  p.iqn = name.substr(iscsi + 7, lun - iscsi - 7);
  const std::string lun_text = name.substr(lun + 5);
  std::from_chars(lun_text.data(), lun_text.data() + lun_text.size(), p.lun);
  return p;
}

drivers::volume::Attachment attachmentOf(const drivers::DiskSpec& disk) {
  drivers::volume::Attachment a;
  a.volume_id = disk.serial;
  a.device = disk.device;
  a.boot = disk.boot;
  a.read_only = disk.read_only;
  if (disk.source == drivers::DiskSpec::Source::kIscsi) {
    a.connector = "native";
    const std::string& name = disk.iscsi_name;  // "<iqn>/<lun>"
    auto slash = name.rfind('/');
    for (const auto& host : disk.iscsi_hosts) {
      drivers::volume::IscsiPath p;
      p.host = host.name;
      p.port = host.port;
      p.iqn = name.substr(0, slash);
      if (slash != std::string::npos) {
        std::from_chars(name.data() + slash + 1, name.data() + name.size(), p.lun);
      }
      a.paths.push_back(p);
    }
    if (!disk.secret_usage.empty()) {
      a.auth_method = "CHAP";
      a.auth_username = disk.auth_username;
      a.secret_usage = disk.secret_usage;
    }
  } else {
    a.connector = "kernel";
    a.device_path = disk.path;
    if (auto p = pathFromByPath(disk.path)) a.paths.push_back(*p);
  }
  return a;
}

std::string powerName(drivers::PowerState p) { return std::string(drivers::powerStateName(p)); }

}  // namespace

Result<AdoptionResult> adoptDomains(drivers::ComputeDriver& driver, state::InstanceStore& store,
                                    const config::FlavorCatalog& flavors, QemuImg& qemu_img,
                                    const Clock& clock, const std::string& instances_dir) {
  auto records = store.loadAll();
  if (!records) return records.error();
  std::set<std::string> known;
  for (const auto& rec : *records) known.insert(rec.uuid);
  auto domains = driver.listManaged();
  if (!domains) return domains.error();
  AdoptionResult result;
  for (const auto& dom : *domains) {
    if (known.count(dom.uuid)) continue;
    auto described = driver.describe(dom.uuid);
    if (!described) {
      result.warnings.push_back(
          fmt::format("Domain 'kiln-{}' was not adopted: {}", dom.uuid, described.error().message));
      continue;
    }
    if (!*described) continue;  // gone meanwhile
    const drivers::DomainDescription& d = **described;
    const std::string dir = instances_dir + "/" + d.uuid + "/";
    const bool ours = std::any_of(d.disks.begin(), d.disks.end(), [&](const auto& disk) {
      return disk.source == drivers::DiskSpec::Source::kFile && disk.path.starts_with(dir);
    });
    if (!ours) continue;  // another kilnd's, or not made by a launch of this one
    InstanceRecord rec;
    rec.uuid = d.uuid;
    rec.name = d.display_name;
    rec.project_id = d.project_id;
    rec.image_id = d.image_id;
    rec.request_fingerprint = "adopted";
    rec.created_at = d.created_at.empty() ? formatUtc(clock.wallNow()) : d.created_at;
    rec.updated_at = formatUtc(clock.wallNow());
    for (const auto& disk : d.disks) {
      if (disk.source != drivers::DiskSpec::Source::kFile || !disk.path.starts_with(dir)) {
        rec.volumes.push_back(attachmentOf(disk));
        continue;
      }
      state::DiskRecord r;
      r.device = disk.device;
      r.path = disk.path;
      r.format = disk.format;
      r.backing_path = disk.backing_path;
      r.backing_format = disk.backing_format;
      r.encryption_secret_uuid = disk.encryption_secret_uuid;
      if (auto info = qemu_img.info(disk.path, disk.format)) r.virtual_size = info->virtual_size;
      if (!r.encryption_secret_uuid.empty()) {
        result.warnings.push_back(fmt::format(
            "Instance '{}': the key of its encrypted disk {} was only in the lost record; the "
            "disk keeps working until libvirtd restarts",
            d.uuid, disk.device));
      }
      rec.disks.push_back(r);
    }
    for (const auto& v : rec.volumes) {
      if (v.connector == "native" && !v.secret_usage.empty()) {
        result.warnings.push_back(fmt::format(
            "Instance '{}': the CHAP password of volume '{}' was only in the lost record; the "
            "volume keeps working until libvirtd restarts",
            d.uuid, v.volume_id));
      }
    }
    auto disk_gb = [&](std::string_view device) -> std::uint64_t {
      for (const auto& r : rec.disks) {
        if (r.device == device) return (r.virtual_size + kGiB - 1) / kGiB;
      }
      return 0;
    };
    if (auto flavor = flavors.find(d.flavor_name)) {
      rec.flavor = *flavor;
    } else {
      rec.flavor.name = d.flavor_name;
      rec.flavor.vcpus = d.vcpus;
      rec.flavor.memory_mb = d.memory_mb;
      rec.flavor.root_gb = disk_gb("vda");
      rec.flavor.ephemeral_gb = disk_gb("vdb");
      result.warnings.push_back(
          fmt::format("Instance '{}': flavor '{}' is not in the catalog; its sizes are read from "
                      "the domain and its disks",
                      d.uuid, d.flavor_name));
    }
    switch (d.power) {
      case drivers::PowerState::kShutoff:
      case drivers::PowerState::kShutdown:
        rec.state = InstanceState::kStopped;
        break;
      case drivers::PowerState::kCrashed:
        rec.state = InstanceState::kError;
        rec.fault = "The instance crashed: its QEMU process ended unexpectedly";
        break;
      default:
        rec.state = InstanceState::kActive;
        break;
    }
    rec.power_state = powerName(d.power);
    if (!d.image_id.empty()) {
      result.warnings.push_back(fmt::format(
          "Instance '{}': the properties of image '{}' were only in the lost record; a snapshot "
          "of it inherits none",
          d.uuid, d.image_id));
    }
    if (auto w = store.insertNew(rec); !w) return w.error();
    log::info("Adopted instance '{}' ('{}', {}) from its domain", rec.uuid, rec.name,
              state::stateName(rec.state));
    result.adopted.push_back(rec.uuid);
  }
  return result;
}

}  // namespace kiln::lifecycle
