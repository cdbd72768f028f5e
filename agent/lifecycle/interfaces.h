#pragma once
// Hot-plug and unplug of NICs on an active or stopped instance (nova's interface attach and
// detach). The interface is recorded before its tap is made, and the tap is removed only once
// the guest let go of the NIC.

#include "agent/api/network_info.h"
#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"

namespace kiln::lifecycle {

class InterfaceActions {
 public:
  InterfaceActions(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                   InstanceResources& resources, const ManagerOptions& options);

  // 202-style: the record with the interface (and task_state interface_attaching), then the
  // attach runs on. A port, MAC or devname the instance has already is kConflict.
  Result<state::InstanceRecord> attach(const std::string& uuid, api::VifRequest request);
  Result<state::InstanceRecord> detach(const std::string& uuid, const std::string& port_id);

 private:
  void runAttach(const EntryPtr& entry, const drivers::NicSpec& nic);
  void runDetach(const EntryPtr& entry, const std::string& port_id);

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  InstanceResources& resources_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
