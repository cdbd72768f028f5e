#include "agent/sync/reconciler.h"

#include "common/log.h"

namespace kiln::sync {

using lifecycle::EntryPtr;
using lifecycle::JobKind;
using state::InstanceRecord;
using state::InstanceState;

Reconciler::Reconciler(lifecycle::InstanceTable& table, Executor& jobs,
                       drivers::ComputeDriver& driver, lifecycle::InstanceResources& resources,
                       lifecycle::Deleter& deleter, lifecycle::Recovery& recovery,
                       OrphanSweep& sweep, std::chrono::milliseconds interval)
    : table_(table),
      jobs_(jobs),
      driver_(driver),
      resources_(resources),
      deleter_(deleter),
      recovery_(recovery),
      sweep_(sweep),
      interval_(interval) {}

Reconciler::~Reconciler() { stop(); }

void Reconciler::start() {
  std::lock_guard lock(mutex_);
  if (thread_.joinable()) return;
  pass_requested_ = true;
  thread_ = std::thread([this] { loop(); });
}

void Reconciler::requestPass() {
  {
    std::lock_guard lock(mutex_);
    pass_requested_ = true;
  }
  wake_.notify_one();
}

void Reconciler::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Reconciler::loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, interval_, [this] { return stopping_ || pass_requested_; });
    if (stopping_) break;
    pass_requested_ = false;
    lock.unlock();
    auto started = std::chrono::steady_clock::now();
    reconcileAll();
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started);
    log::debug("Reconcile pass over {} instances took {:.1f} ms", table_.entries().size(),
               ms.count());
    lock.lock();
  }
}

void Reconciler::reconcileAll() {
  std::lock_guard pass(pass_mutex_);
  if (!driver_.connected()) return;
  for (const auto& entry : table_.entries()) {
    // A delete that was deferred (libvirtd away, the instance busy) is tried again.
    bool retry_delete = false;
    table_.settleIfChanged(*entry, [&](InstanceRecord& rec) {
      retry_delete = rec.state == InstanceState::kDeleting && !rec.fault.empty();
      if (retry_delete) rec.fault.clear();
      return retry_delete;
    });
    if (retry_delete) {
      deleter_.resume(entry);
      continue;
    }
    reconcileOne(entry);
  }
  sweep_.run();
}

void Reconciler::reconcileOne(const EntryPtr& entry) {
  // A job in progress owns the instance; reconcile only settled ones.
  auto job = table_.tryBeginJob(entry, JobKind::kReconcile);
  if (!job) return;
  bool interrupted = false;
  bool launch_cut_short = false;
  {
    std::lock_guard lock(entry->mu);
    interrupted = entry->interrupted_action;
    launch_cut_short = entry->interrupted_launch;
  }
  if (launch_cut_short && !recovery_.settleInterruptedLaunch(entry)) return;
  if (interrupted && !recovery_.settleInterruptedAction(entry)) return;
  const InstanceRecord rec = table_.read(*entry);
  if (rec.state == InstanceState::kBuilding || rec.state == InstanceState::kDeleting) return;
  if (rec.state == InstanceState::kError && rec.disks.empty()) return;  // nothing runs
  const std::string& uuid = entry->uuid();
  resources_.restoreVolumeSecrets(*entry);
  resources_.restoreDiskSecrets(*entry);
  // Taps do not survive a host reboot; the guest's next start needs them (and their filters).
  if (auto r = resources_.plugInterfaces(*entry); !r) {
    log::warn("Instance '{}': restoring its NICs failed: {}", uuid, r.error().message);
  }
  auto power = driver_.powerState(uuid);
  if (!power) return;  // libvirt away: keep what we know
  table_.settleIfChanged(*entry, [&](InstanceRecord& now) {
    // The delete may have begun meanwhile: it owns the record then.
    if (now.state == InstanceState::kDeleting) return false;
    const InstanceState state_before = now.state;
    const std::string power_before = now.power_state;
    if (!*power) {
      if (now.state != InstanceState::kError) {
        now.state = InstanceState::kError;
        now.power_state = "nostate";
        now.fault = "The instance's domain disappeared from the hypervisor";
      }
    } else {
      drivers::PowerState p = **power;
      now.power_state = std::string(drivers::powerStateName(p));
      if (p == drivers::PowerState::kRunning && now.state == InstanceState::kStopped) {
        now.state = InstanceState::kActive;
      } else if (p == drivers::PowerState::kShutoff && now.state == InstanceState::kActive) {
        now.state = InstanceState::kStopped;
      } else if (p == drivers::PowerState::kCrashed && now.state != InstanceState::kError) {
        now.state = InstanceState::kError;
        now.fault = "The instance crashed: its QEMU process ended unexpectedly";
      }
    }
    if (now.state == state_before && now.power_state == power_before) return false;
    log::info("Instance '{}' is now {} (power {})", uuid, state::stateName(now.state),
              now.power_state);
    return true;
  });
}

void Reconciler::onDomainEvent(const drivers::DomainEvent& event) {
  EntryPtr entry = table_.find(event.uuid);
  if (!entry) return;
  jobs_.post([this, entry] { reconcileOne(entry); });
}

}  // namespace kiln::sync
