#include "agent/sync/orphan_sweep.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "common/fs.h"
#include "common/log.h"

namespace kiln::sync {

using state::InstanceState;

std::string_view orphanActionName(OrphanAction action) {
  switch (action) {
    case OrphanAction::kReport:
      return "report";
    case OrphanAction::kQuarantine:
      return "quarantine";
    case OrphanAction::kDelete:
      return "delete";
  }
  return "report";
}

std::optional<OrphanAction> orphanActionFromName(std::string_view name) {
  for (auto a : {OrphanAction::kReport, OrphanAction::kQuarantine, OrphanAction::kDelete}) {
    if (orphanActionName(a) == name) return a;
  }
  return std::nullopt;
}

OrphanSweep::OrphanSweep(lifecycle::InstanceTable& table, drivers::ComputeDriver& driver,
                         const Clock& clock, OrphanOptions options)
    : table_(table), driver_(driver), clock_(clock), options_(std::move(options)) {}

std::vector<Orphan> findUnowned(drivers::ComputeDriver& driver, const std::string& instances_dir,
                                const std::function<Owners()>& readOwners,
                                drivers::network::HostNetwork* network) {
  const std::string prefix = instances_dir + "/";
  auto under = [&](const std::string& path) { return path.starts_with(prefix); };
  // The host first, then the records.
  const bool connected = driver.connected();
  auto domains = connected ? driver.listManaged()
                           : Result<std::vector<drivers::DomainStatus>>(Error::unavailable(""));
  auto secrets = connected ? driver.listSecrets()
                           : Result<std::vector<drivers::SecretInfo>>(Error::unavailable(""));
  auto taps = network != nullptr ? network->listKilnTaps()
                                 : Result<std::vector<drivers::network::KilnTap>>(
                                       std::vector<drivers::network::KilnTap>{});
  auto filters = network != nullptr ? network->listFilters()
                                    : Result<std::vector<std::string>>(std::vector<std::string>{});
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& d : std::filesystem::directory_iterator(instances_dir, ec)) {
    dirs.push_back(d.path().filename().string());
  }
  const Owners owners = readOwners();
  std::vector<Orphan> found;
  if (domains) {
    for (const auto& dom : *domains) {
      if (owners.instances.count(dom.uuid)) continue;
      auto devices = driver.domainDevices(dom.uuid);
      if (!devices || !*devices) continue;
      bool ours = std::any_of((*devices)->files.begin(), (*devices)->files.end(), under);
      if (!ours) continue;  // another kilnd's (another state_path) on the same libvirtd
      found.push_back({"domain", dom.uuid, ""});
    }
  }
  for (const auto& name : dirs) {
    if (!owners.instances.count(name)) found.push_back({"directory", prefix + name, ""});
  }
  if (secrets) {
    for (const auto& secret : *secrets) {
      bool ours = false;
      if (secret.usage_type == "iscsi") {
        // CHAP secrets: usage kiln-<uuid>-<volume>, described with this kilnd's instances dir.
        ours = secret.usage_id.starts_with("kiln-") &&
               secret.description.find(instances_dir) != std::string::npos &&
               !owners.secret_usages.count(secret.usage_id);
      } else if (secret.usage_type == "volume" && under(secret.usage_id)) {
        // A disk's encryption key: its usage is the disk's path, in an instance's directory.
        std::string rest = secret.usage_id.substr(prefix.size());
        ours = !owners.instances.count(rest.substr(0, rest.find('/')));
      }
      if (ours) found.push_back({"secret", secret.usage_id, "", false, secret.uuid});
    }
  }
  if (taps) {
    for (const auto& tap : *taps) {
      if (!owners.taps.count(tap.devname)) {
        found.push_back({"tap", tap.devname, "", false, "", tap.instance_uuid});
      }
    }
  }
  if (filters) {
    for (const auto& devname : *filters) {
      if (!owners.taps.count(devname)) found.push_back({"filter", devname, ""});
    }
  }
  return found;
}

Result<void> removeOrphan(drivers::ComputeDriver& driver, const Orphan& orphan,
                          drivers::disk::ClearMethod clear,
                          drivers::network::HostNetwork* network) {
  if (orphan.kind == "domain") return driver.destroy(orphan.id);
  if (orphan.kind == "tap" || orphan.kind == "filter") {
    if (network == nullptr) {
      return Error::unavailable("This kilnd has no network plumbing to remove it with");
    }
    if (auto r = network->removeFilter(orphan.id); !r) return r;
    return orphan.kind == "tap" ? network->removeTap(orphan.id, orphan.instance_uuid) : success();
  }
  if (orphan.kind == "secret") return driver.removeSecret(orphan.secret_uuid);
  // A directory holds tenants' disks: cleared like an instance's files on delete.
  if (auto cleared = drivers::disk::clearDirectory(orphan.id, clear); !cleared) {
    return cleared.error();
  }
  return fs::removeTree(orphan.id);
}

void OrphanSweep::run() {
  if (!driver_.connected()) return;
  std::vector<Seen> found;
  for (auto& o : findUnowned(
           driver_, options_.instances_dir,
           [this] {
             Owners owners;
             for (const auto& rec : table_.records()) {
               bool rolled_back = rec.state == InstanceState::kError && rec.disks.empty() &&
                                  rec.volumes.empty() && rec.task_state == state::TaskState::kNone;
               if (!rolled_back) owners.instances.insert(rec.uuid);
               for (const auto& v : rec.volumes) owners.secret_usages.insert(v.secret_usage);
               for (const auto& i : rec.interfaces) owners.taps.insert(i.nic.devname);
             }
             return owners;
           },
           options_.network.get())) {
    found.push_back({std::move(o), {}, false});
  }

  const auto now = clock_.steadyNow();
  std::vector<Seen> due;
  {
    std::lock_guard lock(mutex_);
    std::map<std::string, Seen> still;
    for (auto& f : found) {
      const std::string key = f.orphan.kind + ":" + f.orphan.id;
      auto it = seen_.find(key);
      if (it == seen_.end()) {
        f.first_seen = now;
        f.orphan.first_seen = formatUtc(clock_.wallNow());
        log::warn("Found a {} that no instance owns: '{}'; orphan_action = {}{}", f.orphan.kind,
                  f.orphan.id, orphanActionName(options_.action),
                  options_.action == OrphanAction::kReport
                      ? " leaves it (docs/operations.md says what to do)"
                      : fmt::format(" acts on it if it is still an orphan in {} s",
                                    options_.grace.count()));
        still.emplace(key, std::move(f));
        continue;
      }
      Seen kept = it->second;
      kept.orphan.secret_uuid = f.orphan.secret_uuid;
      if (options_.action != OrphanAction::kReport && !kept.quarantined &&
          now - kept.first_seen >= options_.grace) {
        due.push_back(kept);
      }
      still.emplace(key, std::move(kept));
    }
    seen_ = std::move(still);
  }
  for (const auto& seen : due) {
    const Outcome outcome = act(seen);
    if (outcome == Outcome::kFailed) continue;
    std::lock_guard lock(mutex_);
    auto it = seen_.find(seen.orphan.kind + ":" + seen.orphan.id);
    if (it == seen_.end()) continue;
    if (outcome == Outcome::kGone) {
      seen_.erase(it);
    } else {
      it->second.quarantined = true;
      it->second.orphan.quarantined = true;
    }
  }
}

OrphanSweep::Outcome OrphanSweep::act(const Seen& seen) {
  const Orphan& o = seen.orphan;
  if (options_.action == OrphanAction::kDelete) {
    if (auto r = removeOrphan(driver_, o, options_.clear, options_.network.get()); !r) {
      log::error("Removing the orphaned {} '{}': {}", o.kind, o.id, r.error().message);
      return Outcome::kFailed;
    }
    log::warn("Removed the {} '{}': no instance has owned it since {}", o.kind, o.id, o.first_seen);
    return Outcome::kGone;
  }
  // Quarantine: nothing is destroyed; the operator decides later.
  if (o.kind == "domain") {
    auto off = driver_.powerOff(o.id, std::chrono::seconds(0));
    if (!off) {
      log::error("Quarantining the orphaned domain 'kiln-{}': {}", o.id, off.error().message);
      return Outcome::kFailed;
    }
    log::warn("Powered off the domain 'kiln-{}' (kept defined): no instance has owned it since {}",
              o.id, o.first_seen);
    return Outcome::kQuarantined;  // still defined: it stays listed
  }
  if (o.kind == "directory") {
    if (auto r = fs::makeDirectories(options_.quarantine_dir, 0700); !r) {
      log::error("Quarantining '{}': {}", o.id, r.error().message);
      return Outcome::kFailed;
    }
    std::string stamp = formatUtc(clock_.wallNow());
    std::replace(stamp.begin(), stamp.end(), ':', '-');
    const std::string target = fmt::format("{}/{}-{}", options_.quarantine_dir,
                                           std::filesystem::path(o.id).filename().string(), stamp);
    std::error_code ec;
    std::filesystem::rename(o.id, target, ec);
    if (ec) {
      log::error("Quarantining '{}': {}", o.id, ec.message());
      return Outcome::kFailed;
    }
    log::warn("Moved '{}' to '{}': no instance has owned it since {}", o.id, target, o.first_seen);
    return Outcome::kGone;
  }
  // Secrets, taps and filters stay: a quarantined domain needs them to start again.
  return Outcome::kQuarantined;
}

std::vector<Orphan> OrphanSweep::orphans() const {
  std::lock_guard lock(mutex_);
  std::vector<Orphan> out;
  for (const auto& [key, seen] : seen_) out.push_back(seen.orphan);
  return out;
}

}  // namespace kiln::sync
