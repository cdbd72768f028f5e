#include "agent/maintenance.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <iostream>
#include <set>

#include "agent/lifecycle/adoption.h"
#include "agent/sync/orphan_sweep.h"
#include "common/log.h"

namespace kiln::maintenance {

namespace {

std::string dbPath(const std::string& state_path) { return state_path + "/kiln.db"; }
std::string instancesDir(const std::string& state_path) { return state_path + "/instances"; }

std::string describe(const std::vector<sync::Orphan>& found) {
  std::vector<std::string> items;
  for (const auto& o : found) {
    items.push_back(o.kind == "domain" ? fmt::format("domain 'kiln-{}'", o.id)
                                       : fmt::format("{} '{}'", o.kind, o.id));
  }
  return fmt::format("{}", fmt::join(items, ", "));
}

// What the records of `store` own.
sync::Owners ownersIn(state::InstanceStore& store) {
  sync::Owners owners;
  if (auto records = store.loadAll()) {
    for (const auto& rec : *records) {
      owners.instances.insert(rec.uuid);
      for (const auto& v : rec.volumes) owners.secret_usages.insert(v.secret_usage);
    }
  }
  return owners;
}

}  // namespace

Result<std::unique_ptr<state::InstanceStore>> openStore(const std::string& state_path,
                                                        drivers::ComputeDriver& driver) {
  const std::string path = dbPath(state_path);
  auto exists = state::InstanceStore::exists(path);
  if (!exists) return exists.error();
  if (!*exists) {
    auto found = sync::findUnowned(driver, instancesDir(state_path), [] { return sync::Owners{}; });
    if (!found.empty()) {
      return Error::conflict(fmt::format(
          "kilnd will not start: '{}' is missing or new, but this host holds {} of this kilnd's "
          "objects with no record: {}. Nothing was changed. Restore the database from a backup, "
          "or run 'kilnd --adopt' to rebuild the records from the domains, or 'kilnd "
          "--purge-orphans' to remove them (docs/operations.md)",
          path, found.size(), describe(found)));
    }
    if (!driver.connected()) {
      log::warn(
          "Creating '{}' while libvirt cannot be asked whether it holds kiln's domains; "
          "none has a directory under '{}'",
          path, instancesDir(state_path));
    }
  }
  return state::InstanceStore::open(path);
}

Result<void> adopt(const std::string& state_path, drivers::ComputeDriver& driver,
                   const config::FlavorCatalog& flavors, QemuImg& qemu_img, const Clock& clock) {
  auto store = state::InstanceStore::open(dbPath(state_path));
  if (!store) return store.error();
  auto result =
      lifecycle::adoptDomains(driver, **store, flavors, qemu_img, clock, instancesDir(state_path));
  if (!result) return result.error();
  for (const auto& uuid : result->adopted) std::cout << "adopted " << uuid << "\n";
  for (const auto& w : result->warnings) std::cout << "warning: " << w << "\n";
  std::cout << result->adopted.size() << " instances adopted\n";
  // What is still unowned (a directory without a domain, a secret) is listed, not touched.
  auto left =
      sync::findUnowned(driver, instancesDir(state_path), [&] { return ownersIn(**store); });
  if (!left.empty()) {
    std::cout << "still without a record: " << describe(left)
              << " (kilnd --purge-orphans removes them)\n";
  }
  return success();
}

Result<void> purgeOrphans(const std::string& state_path, drivers::ComputeDriver& driver,
                          drivers::disk::ClearMethod clear) {
  if (!driver.connected()) {
    return Error::unavailable(
        "libvirt is not reachable: kilnd cannot tell which domains are orphans");
  }
  auto store = state::InstanceStore::open(dbPath(state_path));
  if (!store) return store.error();
  auto found =
      sync::findUnowned(driver, instancesDir(state_path), [&] { return ownersIn(**store); });
  std::size_t removed = 0;
  Result<void> outcome = success();
  std::set<std::string> still_defined;  // domains that could not be removed
  // Domains first: a directory is removed only once nothing can run on its disks.
  for (const char* kind : {"domain", "secret", "directory"}) {
    for (const auto& o : found) {
      if (o.kind != kind) continue;
      if (o.kind == "directory" &&
          still_defined.count(std::filesystem::path(o.id).filename().string())) {
        std::cout << "kept directory '" << o.id << "': its domain is still defined\n";
        continue;
      }
      if (auto r = sync::removeOrphan(driver, o, clear); !r) {
        if (o.kind == "domain") still_defined.insert(o.id);
        std::cout << "failed: " << o.kind << " '" << o.id << "': " << r.error().message << "\n";
        outcome = r;
        continue;
      }
      std::cout << "removed " << o.kind << " '" << o.id << "'\n";
      ++removed;
    }
  }
  std::cout << removed << " orphans removed\n";
  return outcome;
}

}  // namespace kiln::maintenance
