#include "agent/sync/orphan_sweep.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "common/fs.h"
#include "common/log.h"

namespace kiln::sync {

using state::InstanceState;

OrphanSweep::OrphanSweep(lifecycle::InstanceTable& table, drivers::ComputeDriver& driver,
                         std::string instances_dir)
    : table_(table), driver_(driver), instances_dir_(std::move(instances_dir)) {}

void OrphanSweep::run() {
  if (!driver_.connected()) return;
  const std::string prefix = instances_dir_ + "/";
  auto under = [&](const std::string& path) { return path.starts_with(prefix); };
  // Listed before the records are read: anything made after the listing has its record already
  // (records are written before side effects), so nothing in flight is taken for an orphan.
  auto domains = driver_.listManaged();
  auto secrets = driver_.listSecrets();
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const auto& d : std::filesystem::directory_iterator(instances_dir_, ec)) {
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
               secret.description.find(instances_dir_) != std::string::npos &&
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

}  // namespace kiln::sync
