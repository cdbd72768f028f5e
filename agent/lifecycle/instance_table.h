#pragma once
// The one owner of the instances this kilnd knows: their records in memory, the store writes that
// keep them durable, and the per-instance job that lets one operation at a time act on an
// instance.
//
// Locking, in the order they may nest: the table's map lock (find, add, remove an entry; never
// held while anything else runs), then an entry's `mu` (its record and flags; held briefly,
// including the store write that must precede a side effect). The job is not a lock anyone holds
// across a wait: beginJob() waits, bounded, for the instance's current job to end, and the Job it
// returns ends its own when destroyed. No lock is held across a slow call (a download, qemu-img,
// a libvirt start); only the job is.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/state/instance_record.h"
#include "agent/state/instance_store.h"
#include "common/clock.h"
#include "common/result.h"

namespace kiln::lifecycle {

// What a job is doing, for the "busy" message and the logs.
enum class JobKind {
  kLaunch,
  kDelete,
  kReboot,
  kStop,
  kStart,
  kSnapshot,
  kAttachVolume,
  kDetachVolume,
  kAttachInterface,
  kDetachInterface,
  kRecovery,
  kReconcile,
};

std::string_view jobName(JobKind kind);

class InstanceTable {
 public:
  class Entry {
   public:
    explicit Entry(state::InstanceRecord initial)
        : uuid_(initial.uuid), record(std::move(initial)) {}
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;

    // Kept apart from the record, so it can be read without the lock.
    const std::string& uuid() const { return uuid_; }

   private:
    const std::string uuid_;

   public:
    // Guards everything below, and the job.
    mutable std::mutex mu;
    state::InstanceRecord record;
    // A restart of kilnd interrupted the action named in record.task_state; the first reconcile
    // settles it by what the hypervisor has.
    bool interrupted_action = false;
    // A restart of kilnd cut the launch short, and it is not settled yet (libvirt could not say
    // whether the domain exists).
    bool interrupted_launch = false;
    // The delete removed the record from the store: nothing may write it again (a job that
    // still holds the entry would otherwise bring the row back).
    bool removed = false;

   private:
    friend class InstanceTable;
    std::condition_variable job_ended;
    // Notified whenever the record changes or the instance is removed (waitFor()).
    std::condition_variable changed;
    std::optional<JobKind> job;
    std::chrono::system_clock::time_point job_since{};
  };
  using EntryPtr = std::shared_ptr<Entry>;

  // One operation's hold on an instance (libvirt's BeginJob/EndJob): ends when destroyed.
  class Job {
   public:
    Job(Job&& other) noexcept = default;
    Job& operator=(Job&& other) noexcept;
    ~Job();
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;

   private:
    friend class InstanceTable;
    explicit Job(EntryPtr entry) : entry_(std::move(entry)) {}
    void end();
    EntryPtr entry_;
  };

  InstanceTable(state::InstanceStore& store, const Clock& clock);

  EntryPtr find(const std::string& uuid) const;
  std::vector<EntryPtr> entries() const;
  // A copy of every record, each read under its entry's lock.
  std::vector<state::InstanceRecord> records() const;

  struct Inserted {
    EntryPtr entry;
    bool created = false;  // false: the uuid was known, `entry` is the existing instance
  };
  // Adds a new instance and writes its record before returning (durable before it is
  // acknowledged); on a failed write the instance is not added. A known uuid is left as it is.
  Result<Inserted> insertNew(state::InstanceRecord record);
  // Adds an instance whose record the store already holds (at start).
  EntryPtr adopt(state::InstanceRecord record, bool interrupted_action);
  // The last step of a delete: removes the record from the store, then the instance from the
  // table. From then on update() refuses and settle() writes nothing for this entry.
  Result<void> remove(Entry& entry);

  state::InstanceRecord read(const Entry& entry) const;

  // Update-then-save, for intents: `change` edits a copy of the record; the copy is written, and
  // only once it is durable does it become the entry's record, so what the API shows and what a
  // restart finds agree. A change that fails writes nothing. Returns the record as written.
  Result<state::InstanceRecord> update(
      Entry& entry, const std::function<Result<void>(state::InstanceRecord&)>& change);
  // For outcomes that already happened on the host: the record in memory changes whatever the
  // store says (it must tell the truth), the write is attempted and a failure logged; the next
  // write, or the recovery at the next start, catches up.
  void settle(Entry& entry, const std::function<void(state::InstanceRecord&)>& change);
  // settle() for a change that may find nothing to do: writes only when `change` returns true.
  void settleIfChanged(Entry& entry, const std::function<bool(state::InstanceRecord&)>& change);

  // Waits up to `timeout` for the instance's current job to end, then holds it. kConflict
  // "Instance 'u' is busy with <job> since <time>" when it does not end in time.
  Result<Job> beginJob(const EntryPtr& entry, JobKind kind, std::chrono::milliseconds timeout);
  // The job if it is free now, else nothing (reconcile leaves a busy instance to its job).
  std::optional<Job> tryBeginJob(const EntryPtr& entry, JobKind kind);

  // Waits up to `timeout` until `done` holds for the entry's record, or the instance is removed.
  // Returns the record `done` held for, or nothing after a removal; kUnavailable when the time
  // ran out.
  Result<std::optional<state::InstanceRecord>> waitFor(
      Entry& entry, const std::function<bool(const state::InstanceRecord&)>& done,
      std::chrono::milliseconds timeout) const;
  // Ends every waitFor, those under way and those to come, with kUnavailable: kilnd is stopping
  // and its callers must not hold the shutdown up for the length of a download.
  void stopWaiting();
  bool stoppedWaiting() const { return stop_waiting_; }

  state::InstanceStore& store() { return store_; }

 private:
  Result<void> writeLocked(state::InstanceRecord& record);

  state::InstanceStore& store_;
  const Clock& clock_;
  mutable std::mutex mutex_;
  std::map<std::string, EntryPtr> entries_;
  std::atomic<bool> stop_waiting_{false};
};

using EntryPtr = InstanceTable::EntryPtr;

}  // namespace kiln::lifecycle
