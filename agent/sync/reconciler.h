#pragma once
// The hypervisor is the truth; kiln's records follow it. One reconcile pass compares every
// settled instance with its domain (power state, crash, disappearance), re-creates the secrets a
// libvirtd restart forgot, settles actions a kilnd restart interrupted, retries deferred deletes,
// then sweeps orphans. Passes run on the reconciler's own thread: at start, after every
// reconnect to libvirtd, and every `interval`. libvirt's lifecycle events are hints only: each
// queues a reconcile of its one instance on the job executor.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "agent/lifecycle/delete.h"
#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/recovery.h"
#include "agent/sync/orphan_sweep.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"

namespace kiln::sync {

class Reconciler {
 public:
  Reconciler(lifecycle::InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
             lifecycle::InstanceResources& resources, lifecycle::Deleter& deleter,
             lifecycle::Recovery& recovery, OrphanSweep& sweep, std::chrono::milliseconds interval);
  ~Reconciler();
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // One whole pass, on the calling thread (passes never overlap).
  void reconcileAll();
  // One instance; an instance whose job is running is left to its job.
  void reconcileOne(const lifecycle::EntryPtr& entry);
  // Called on the driver's event thread: hands over and returns at once.
  void onDomainEvent(const drivers::DomainEvent& event);

  // The periodic thread: a first pass at once, then one every interval or when asked.
  void start();
  // Wakes the thread for a pass now (after a reconnect); safe from any thread.
  void requestPass();
  void stop();

 private:
  void loop();

  lifecycle::InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  lifecycle::InstanceResources& resources_;
  lifecycle::Deleter& deleter_;
  lifecycle::Recovery& recovery_;
  OrphanSweep& sweep_;
  const std::chrono::milliseconds interval_;

  std::mutex pass_mutex_;  // one pass at a time
  std::mutex mutex_;       // guards the two flags below
  std::condition_variable wake_;
  bool pass_requested_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace kiln::sync
