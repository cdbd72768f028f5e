#pragma once
// Hot-plug and unplug of Cinder volumes on an active or stopped instance. The attachment is
// recorded before the host side is connected, and the host side is disconnected only once the
// guest let go of the disk.

#include "agent/api/launch_request.h"
#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"
#include "drivers/volume/volume_connector.h"

namespace kiln::lifecycle {

class VolumeActions {
 public:
  VolumeActions(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
                drivers::volume::VolumeConnector& volumes, InstanceResources& resources,
                const ManagerOptions& options);

  // 202-style. The device is the next free one when the request names none.
  Result<state::InstanceRecord> attach(const std::string& uuid, api::BlockDeviceRequest request);
  Result<state::InstanceRecord> detach(const std::string& uuid, const std::string& volume_id);

 private:
  void runAttach(const EntryPtr& entry, const api::BlockDeviceRequest& bdm);
  void runDetach(const EntryPtr& entry, const std::string& volume_id);

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  drivers::volume::VolumeConnector& volumes_;
  InstanceResources& resources_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
