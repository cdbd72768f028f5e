#include "agent/lifecycle/delete.h"

#include <fmt/format.h>

#include "agent/lifecycle/transitions.h"
#include "common/failpoint.h"
#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::InstanceState;

Deleter::Deleter(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                 InstanceResources& resources, const ManagerOptions& options)
    : table_(table), jobs_(jobs), driver_(driver), resources_(resources), options_(options) {}

Result<InstanceRecord> Deleter::request(const std::string& uuid) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  bool already = false;
  // The intent is durable before anything is removed: a crash resumes the delete.
  auto recorded = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kDelete, rec); !r) return r;
    already = rec.state == InstanceState::kDeleting;
    rec.state = InstanceState::kDeleting;
    rec.task_state = taskOf(Operation::kDelete);
    return success();
  });
  if (!recorded) return recorded.error();
  if (already) return recorded;
  if (!resume(entry)) {
    return Error::unavailable("kilnd is shutting down; the delete resumes at its next start");
  }
  return recorded;
}

bool Deleter::resume(const EntryPtr& entry) {
  return jobs_.post([this, entry] { run(entry); });
}

void Deleter::run(const EntryPtr& entry) {
  // A launch sees the delete at its next step boundary and ends; other jobs finish first.
  auto job = table_.beginJob(entry, JobKind::kDelete, options_.job_timeout);
  if (!job) return defer(*entry, job.error());
  const std::string& uuid = entry->uuid();
  if (table_.find(uuid) != entry) return;  // an earlier run of this delete finished it
  if (auto fp = failpoint("delete.before_destroy"); !fp) return defer(*entry, fp.error());
  // Most likely libvirtd is away; the periodic reconcile retries the delete.
  if (auto d = driver_.destroy(uuid); !d) return defer(*entry, d.error());
  if (auto fp = failpoint("delete.after_destroy"); !fp) return defer(*entry, fp.error());
  if (auto r = resources_.disconnectVolumes(*entry); !r) return defer(*entry, r.error());
  if (auto fp = failpoint("delete.after_volumes"); !fp) return defer(*entry, fp.error());
  // The domain is gone, so no guest holds the taps any more.
  if (auto r = resources_.unplugInterfaces(*entry); !r) return defer(*entry, r.error());
  if (auto fp = failpoint("delete.after_interfaces"); !fp) return defer(*entry, fp.error());
  // Crypto-erase first: the keys are gone (from libvirtd and the record) before the files.
  if (auto r = resources_.destroyDiskKeys(*entry); !r) return defer(*entry, r.error());
  if (auto fp = failpoint("delete.after_keys"); !fp) return defer(*entry, fp.error());
  if (auto r = resources_.purgeFiles(uuid); !r) return defer(*entry, r.error());
  if (auto fp = failpoint("delete.after_files"); !fp) return defer(*entry, fp.error());
  if (auto r = table_.remove(*entry); !r) return defer(*entry, r.error());
  log::info("Instance '{}' is deleted", uuid);
}

void Deleter::defer(InstanceTable::Entry& entry, const Error& why) {
  table_.settle(entry, [&](InstanceRecord& rec) {
    rec.fault = fmt::format("Delete is waiting to be retried: {}", why.message);
    log::warn("Instance '{}': {}", rec.uuid, rec.fault);
  });
}

}  // namespace kiln::lifecycle
