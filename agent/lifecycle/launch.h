#pragma once
// Launch: admission (idempotent by uuid), then the steps that turn an image, a flavor and volumes
// into a running domain, each recorded before its side effect, and the rollback when one fails.
//
// The steps run in order on a worker; between two steps (a boundary) the launch looks for a
// delete that arrived meanwhile: it then rolls back what it made and leaves the rest to the
// delete. The boundaries carry the names of the crash tests' failpoints ("launch.<boundary>").

#include <functional>
#include <string_view>
#include <vector>

#include "agent/api/launch_request.h"
#include "agent/lifecycle/instance_resources.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/clock.h"
#include "common/executor.h"
#include "common/secret_box.h"
#include "common/timeline.h"
#include "drivers/compute_driver.h"
#include "drivers/disk/disk_builder.h"
#include "imagecache/image_cache.h"

namespace kiln::lifecycle {

class Launcher {
 public:
  Launcher(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
           imagecache::ImageCache& cache, drivers::disk::DiskBuilder& disks,
           InstanceResources& resources, const SecretBox& secrets, const Clock& clock,
           const ManagerOptions& options);

  // 202-style: the record as accepted, durable before this returns; the launch runs on. The same
  // uuid and body again returns the existing record; a different body is kConflict.
  Result<state::InstanceRecord> accept(const api::LaunchRequest& request);

  // The step boundaries, in order.
  static const std::vector<std::string_view>& boundaries();
  // Called at each boundary a launch passes, on the launch's worker (tests use it to send a
  // delete into the middle of a launch).
  void setBoundaryHookForTest(std::function<void(std::string_view boundary)> hook);

 private:
  struct Plan;

  void run(const EntryPtr& entry, const api::LaunchRequest& request);
  Result<void> runSteps(const EntryPtr& entry, Plan& plan, Timeline& timeline);
  Result<void> fetchImage(Plan& plan, Timeline& timeline);
  Result<void> checkHardware(Plan& plan, std::string_view disk_format);
  // The space a disk creation writes, taken before it begins; an empty hold without a reserve.
  Result<DiskReserve::Hold> reserveFor(std::uint64_t bytes, const std::string& what);
  Result<void> makeRootDisk(Plan& plan, Timeline& timeline);
  Result<void> makeEphemeralDisk(Plan& plan, Timeline& timeline);
  Result<void> recordDisks(InstanceTable::Entry& entry, Plan& plan);
  Result<void> plugInterfaces(Plan& plan, Timeline& timeline);
  Result<void> writeConfigDrive(Plan& plan, Timeline& timeline);
  Result<void> defineDiskSecrets(Plan& plan, Timeline& timeline);
  Result<void> connectVolumes(InstanceTable::Entry& entry, Plan& plan, Timeline& timeline);
  Result<void> start(Plan& plan, Timeline& timeline);

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  imagecache::ImageCache& cache_;
  drivers::disk::DiskBuilder& disks_;
  InstanceResources& resources_;
  const SecretBox& secrets_;
  const Clock& clock_;
  const ManagerOptions& options_;
  std::function<void(std::string_view)> boundary_hook_;
};

}  // namespace kiln::lifecycle
