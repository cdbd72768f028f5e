#pragma once
// What a restart of kilnd left half done, settled at start (QEMU processes belong to libvirtd, so
// the guests ran on meanwhile):
//   1. a launch cut short (`building`) becomes `active` if its domain runs, else it is rolled back
//      and ends `error` with a fault saying so; only once libvirt has answered: while it cannot
//      say whether the domain exists, nothing is removed (a guest may be running on those disks)
//      and every reconcile asks again;
//   2. a delete (`deleting`) resumes;
//   3. an interrupted volume action or snapshot is settled by what the domain really has, at the
//      first reconcile (settleInterruptedAction);
//   4. the images of interrupted snapshots are discarded.

#include "agent/lifecycle/delete.h"
#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "agent/lifecycle/snapshot.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"
#include "drivers/volume/volume_connector.h"

namespace kiln::lifecycle {

class Recovery {
 public:
  Recovery(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
           drivers::volume::VolumeConnector& volumes, InstanceResources& resources,
           Deleter& deleter, Snapshotter& snapshots, const ManagerOptions& options);

  // Loads every record into the table and queues 1, 2 and 4; 3 waits for the first reconcile.
  Result<void> recover();

  // Settles the action a restart interrupted (entry->interrupted_action); the caller holds the
  // instance's job. False when the hypervisor could not be asked (the next reconcile tries again).
  bool settleInterruptedAction(const EntryPtr& entry);
  // Settles a launch a restart cut short (entry->interrupted_launch); the caller holds the job.
  // False when libvirt could not answer (the flag stays, the next reconcile tries again).
  bool settleInterruptedLaunch(const EntryPtr& entry);

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  drivers::volume::VolumeConnector& volumes_;
  InstanceResources& resources_;
  Deleter& deleter_;
  Snapshotter& snapshots_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
