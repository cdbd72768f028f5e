#pragma once
// What no instance record owns, found on every reconcile: domains named kiln-<uuid> whose files
// are under this kilnd's instances directory, directories in that directory, and libvirt secrets
// whose description names it or whose usage is a path in it. Records of failed launches own
// nothing (their launch was rolled back). Another kilnd's objects on the same libvirtd are not
// this kilnd's and are never touched.
//
// An orphan is evidence that the records and the host disagree (a database restored from an old
// backup, a half-done manual cleanup), so what happens to it is the operator's choice, as with
// nova's running_deleted_instance_action:
//   report      (the default) logged when first found, listed in GET /v1/host, left alone;
//   quarantine  once it has been an orphan for the grace period: a domain is powered off (kept
//               defined), a directory moved to state_path/quarantine/<name>-<time>; secrets stay
//               (a quarantined domain needs them to start again);
//   delete      once it has been an orphan for the grace period: removed.
// Nothing is acted on at first sight, whatever the action: an object must be found again on a
// later pass, at least the grace period after it was first found.

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "agent/lifecycle/instance_table.h"
#include "common/clock.h"
#include "drivers/compute_driver.h"
#include "drivers/disk/disk_purge.h"
#include "drivers/network/host_network.h"

namespace kiln::sync {

enum class OrphanAction { kReport, kQuarantine, kDelete };
std::string_view orphanActionName(OrphanAction action);
std::optional<OrphanAction> orphanActionFromName(std::string_view name);

struct OrphanOptions {
  std::string instances_dir;   // state_path/instances
  std::string quarantine_dir;  // state_path/quarantine
  OrphanAction action = OrphanAction::kReport;
  std::chrono::seconds grace{3600};
  // How a removed directory's files are cleared first: they are tenants' disks.
  drivers::disk::ClearMethod clear = drivers::disk::ClearMethod::kZero;
  // Taps and anti-spoofing filters are looked for when set.
  std::shared_ptr<drivers::network::HostNetwork> network{};
};

struct Orphan {
  std::string kind;  // "domain", "directory", "secret", "tap", "filter"
  // The domain's uuid, the directory's path, the secret's usage, the tap's name (a filter's too)
  std::string id;
  std::string first_seen;  // RFC 3339
  bool quarantined = false;
  std::string secret_uuid{};    // kind "secret": the libvirt secret's own uuid
  std::string instance_uuid{};  // kind "tap": the instance its mark names
};

// Who may own something: the instances with records (but for rolled-back launches), and the CHAP
// secrets their volumes name.
struct Owners {
  std::set<std::string> instances;
  std::set<std::string> secret_usages;
  std::set<std::string> taps;  // devnames of the recorded interfaces
};

// Every object on the host that is provably this kilnd's (under `instances_dir`) and that no
// owner owns. `readOwners` is called after the host has been listed: anything made after the
// listing has its record already (records are written before side effects), so nothing in
// flight is taken for an orphan.
// Taps are this kilnd's when they carry kiln's mark (drivers/network/host_network.h) and filters
// when they are in kiln's nftables table; `network` may be null (then neither is looked for).
std::vector<Orphan> findUnowned(drivers::ComputeDriver& driver, const std::string& instances_dir,
                                const std::function<Owners()>& readOwners,
                                drivers::network::HostNetwork* network = nullptr);

// Removes one orphan now: a domain destroyed and undefined, a directory cleared (as
// ephemeral_clear says) and removed, a secret removed.
Result<void> removeOrphan(drivers::ComputeDriver& driver, const Orphan& orphan,
                          drivers::disk::ClearMethod clear,
                          drivers::network::HostNetwork* network = nullptr);

class OrphanSweep {
 public:
  OrphanSweep(lifecycle::InstanceTable& table, drivers::ComputeDriver& driver, const Clock& clock,
              OrphanOptions options);

  // One pass: finds the orphans, logs the new ones, acts on those past the grace period.
  void run();
  // What the last pass found (and has not removed).
  std::vector<Orphan> orphans() const;

 private:
  struct Seen {
    Orphan orphan;
    std::chrono::steady_clock::time_point first_seen;
    bool quarantined = false;  // a domain powered off and left defined
  };
  enum class Outcome { kFailed, kGone, kQuarantined };
  // Applies the action to one orphan past its grace period.
  Outcome act(const Seen& seen);

  lifecycle::InstanceTable& table_;
  drivers::ComputeDriver& driver_;
  const Clock& clock_;
  const OrphanOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, Seen> seen_;  // key: kind + ":" + id
};

}  // namespace kiln::sync
