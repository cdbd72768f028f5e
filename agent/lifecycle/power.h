#pragma once
// Reboot (soft, hard), stop and start of an instance.

#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"

namespace kiln::lifecycle {

enum class PowerAction { kSoftReboot, kHardReboot, kStop, kStart };

class PowerControl {
 public:
  PowerControl(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
               InstanceResources& resources, const ManagerOptions& options);

  // 202-style; kConflict (from the transition table) when the action does not fit the state.
  Result<state::InstanceRecord> request(const std::string& uuid, PowerAction action);

 private:
  void run(const EntryPtr& entry, PowerAction action);

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  InstanceResources& resources_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
