#include "agent/lifecycle/instance_table.h"

#include <fmt/format.h>

#include "common/log.h"

namespace kiln::lifecycle {

using state::InstanceRecord;

std::string_view jobName(JobKind kind) {
  switch (kind) {
    case JobKind::kLaunch:
      return "launch";
    case JobKind::kDelete:
      return "delete";
    case JobKind::kReboot:
      return "reboot";
    case JobKind::kStop:
      return "stop";
    case JobKind::kStart:
      return "start";
    case JobKind::kSnapshot:
      return "snapshot";
    case JobKind::kAttachVolume:
      return "volume attach";
    case JobKind::kDetachVolume:
      return "volume detach";
    case JobKind::kAttachInterface:
      return "interface attach";
    case JobKind::kDetachInterface:
      return "interface detach";
    case JobKind::kRecovery:
      return "recovery";
    case JobKind::kReconcile:
      return "reconcile";
  }
  return "job";
}

InstanceTable::Job& InstanceTable::Job::operator=(Job&& other) noexcept {
  if (this != &other) {
    end();
    entry_ = std::move(other.entry_);
  }
  return *this;
}

InstanceTable::Job::~Job() { end(); }

void InstanceTable::Job::end() {
  if (!entry_) return;
  {
    std::lock_guard lock(entry_->mu);
    entry_->job.reset();
  }
  entry_->job_ended.notify_all();
  entry_.reset();
}

InstanceTable::InstanceTable(state::InstanceStore& store, const Clock& clock)
    : store_(store), clock_(clock) {}

EntryPtr InstanceTable::find(const std::string& uuid) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(uuid);
  return it == entries_.end() ? nullptr : it->second;
}

std::vector<EntryPtr> InstanceTable::entries() const {
  std::lock_guard lock(mutex_);
  std::vector<EntryPtr> all;
  all.reserve(entries_.size());
  for (const auto& [uuid, entry] : entries_) all.push_back(entry);
  return all;
}

std::vector<InstanceRecord> InstanceTable::records() const {
  std::vector<InstanceRecord> out;
  for (const auto& entry : entries()) out.push_back(read(*entry));
  return out;
}

Result<InstanceTable::Inserted> InstanceTable::insertNew(InstanceRecord record) {
  const std::string uuid = record.uuid;
  EntryPtr entry;
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(uuid);
    if (it != entries_.end()) return Inserted{it->second, false};
    entry = std::make_shared<Entry>(std::move(record));
    entries_.emplace(uuid, entry);
  }
  Result<void> written = success();
  {
    std::lock_guard entry_lock(entry->mu);
    written = store_.insertNew(entry->record);
  }
  if (!written) {
    std::lock_guard lock(mutex_);
    entries_.erase(uuid);
    return written.error();
  }
  return Inserted{entry, true};
}

EntryPtr InstanceTable::adopt(InstanceRecord record, bool interrupted_action) {
  auto entry = std::make_shared<Entry>(std::move(record));
  entry->interrupted_action = interrupted_action;
  std::lock_guard lock(mutex_);
  entries_[entry->uuid()] = entry;
  return entry;
}

Result<void> InstanceTable::remove(Entry& entry) {
  {
    std::lock_guard entry_lock(entry.mu);
    if (auto r = store_.remove(entry.uuid()); !r) return r;
    entry.removed = true;
  }
  entry.changed.notify_all();
  std::lock_guard lock(mutex_);
  auto it = entries_.find(entry.uuid());
  if (it != entries_.end() && it->second.get() == &entry) entries_.erase(it);
  return success();
}

InstanceRecord InstanceTable::read(const Entry& entry) const {
  std::lock_guard lock(entry.mu);
  return entry.record;
}

Result<void> InstanceTable::writeLocked(InstanceRecord& record) {
  record.updated_at = formatUtc(clock_.wallNow());
  return store_.put(record);
}

Result<InstanceRecord> InstanceTable::update(
    Entry& entry, const std::function<Result<void>(InstanceRecord&)>& change) {
  std::lock_guard lock(entry.mu);
  if (entry.removed) {
    return Error::notFound(fmt::format("Instance '{}' does not exist", entry.uuid()));
  }
  InstanceRecord next = entry.record;
  if (auto r = change(next); !r) return r.error();
  if (auto w = writeLocked(next); !w) return w.error();
  entry.record = next;
  entry.changed.notify_all();
  return next;
}

void InstanceTable::settle(Entry& entry, const std::function<void(InstanceRecord&)>& change) {
  settleIfChanged(entry, [&](InstanceRecord& rec) {
    change(rec);
    return true;
  });
}

void InstanceTable::settleIfChanged(Entry& entry,
                                    const std::function<bool(InstanceRecord&)>& change) {
  std::lock_guard lock(entry.mu);
  if (!change(entry.record) || entry.removed) return;
  entry.changed.notify_all();
  if (auto w = writeLocked(entry.record); !w) {
    log::error("Instance '{}': the record could not be written: {}", entry.record.uuid,
               w.error().message);
  }
}

Result<std::optional<InstanceRecord>> InstanceTable::waitFor(
    Entry& entry, const std::function<bool(const InstanceRecord&)>& done,
    std::chrono::milliseconds timeout) const {
  std::unique_lock lock(entry.mu);
  const bool held = entry.changed.wait_for(
      lock, timeout, [&] { return stop_waiting_ || entry.removed || done(entry.record); });
  if (stop_waiting_ && !entry.removed && !done(entry.record)) {
    return Error::unavailable(
        fmt::format("kilnd is stopping: no longer waiting for instance '{}'", entry.uuid()));
  }
  if (!held) {
    return Error::unavailable(
        fmt::format("Instance '{}' did not settle within {} s", entry.uuid(),
                    std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
  }
  if (entry.removed) return std::optional<InstanceRecord>();
  return std::optional<InstanceRecord>(entry.record);
}

void InstanceTable::stopWaiting() {
  stop_waiting_ = true;
  // Under each entry's lock, so that a waiter between its check and its wait is not missed.
  for (const auto& entry : entries()) {
    std::lock_guard lock(entry->mu);
    entry->changed.notify_all();
  }
}

Result<InstanceTable::Job> InstanceTable::beginJob(const EntryPtr& entry, JobKind kind,
                                                   std::chrono::milliseconds timeout) {
  std::unique_lock lock(entry->mu);
  if (!entry->job_ended.wait_for(lock, timeout, [&] { return !entry->job.has_value(); })) {
    return Error::conflict(fmt::format("Instance '{}' is busy with {} since {}", entry->uuid(),
                                       jobName(*entry->job), formatUtc(entry->job_since)));
  }
  entry->job = kind;
  entry->job_since = clock_.wallNow();
  return Job(entry);
}

std::optional<InstanceTable::Job> InstanceTable::tryBeginJob(const EntryPtr& entry, JobKind kind) {
  std::lock_guard lock(entry->mu);
  if (entry->job) return std::nullopt;
  entry->job = kind;
  entry->job_since = clock_.wallNow();
  return Job(entry);
}

}  // namespace kiln::lifecycle
