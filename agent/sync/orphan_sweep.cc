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

void OrphanSweep::run() {
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
  for (const auto& rec : table_.records()) {
    bool rolled_back = rec.state == InstanceState::kError && rec.disks.empty() &&
                       rec.volumes.empty() && rec.task_state == state::TaskState::kNone;
    if (!rolled_back) owners.insert(rec.uuid);
    for (const auto& v : rec.volumes) secret_usages.insert(v.secret_usage);
  }
  // What this pass finds; an object not found again is no longer an orphan.
  std::vector<Seen> found;
  if (domains) {
    for (const auto& dom : *domains) {
      if (owners.count(dom.uuid)) continue;
      auto devices = driver_.domainDevices(dom.uuid);
      if (!devices || !*devices) continue;
      bool ours = std::any_of((*devices)->files.begin(), (*devices)->files.end(), under);
      if (!ours) continue;  // another kilnd's (another state_path) on the same libvirtd
      found.push_back({{"domain", dom.uuid, ""}, {}, ""});
    }
  }
  for (const auto& name : dirs) {
    if (!owners.count(name)) found.push_back({{"directory", prefix + name, ""}, {}, ""});
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
      if (ours) found.push_back({{"secret", secret.usage_id, ""}, {}, secret.uuid});
    }
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
      kept.secret_uuid = f.secret_uuid;
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
    Result<void> r = success();
    if (o.kind == "domain") {
      r = driver_.destroy(o.id);
    } else if (o.kind == "directory") {
      r = fs::removeTree(o.id);
    } else {
      r = driver_.removeSecret(seen.secret_uuid);
    }
    if (!r) {
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
  return Outcome::kQuarantined;  // secrets stay: a quarantined domain needs them to start again
}

std::vector<Orphan> OrphanSweep::orphans() const {
  std::lock_guard lock(mutex_);
  std::vector<Orphan> out;
  for (const auto& [key, seen] : seen_) out.push_back(seen.orphan);
  return out;
}

}  // namespace kiln::sync
