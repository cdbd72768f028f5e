#pragma once
// Delete: the intent is recorded first (so a crash resumes it), then the domain, the volume
// connections, the disk keys (crypto-erase), the files and the record go, in that order. A step
// that cannot be done now (libvirtd away, the instance busy) leaves the instance `deleting` with
// a fault saying why, and the periodic reconcile tries again.

#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"

namespace kiln::lifecycle {

class Deleter {
 public:
  Deleter(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
          InstanceResources& resources, const ManagerOptions& options);

  // 202-style: the record, now `deleting` (durable); the delete runs on. A delete that is already
  // under way answers the same.
  Result<state::InstanceRecord> request(const std::string& uuid);
  // Queues the delete of an instance recorded `deleting` (after a restart, or to retry one that
  // was deferred).
  bool resume(const EntryPtr& entry);

 private:
  void run(const EntryPtr& entry);
  // Leaves the delete for the periodic reconcile to retry, saying why.
  void defer(InstanceTable::Entry& entry, const Error& why);

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  InstanceResources& resources_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
