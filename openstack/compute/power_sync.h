#pragma once
// Nova's _sync_power_states for a kiln host: kiln's lifecycle knows at once when a guest stops
// by itself (libvirt's events, the reconcile), and this pass tells Nova, so `openstack server
// show` agrees with the host. For each instance Nova places here with no task in progress:
//   - the power state kiln reports differs from Nova's: saved;
//   - Nova has it ACTIVE and kiln's guest is stopped (shut down from inside, crashed, killed):
//     saved STOPPED with that power state, as nova's stop does after "Instance shutdown by
//     itself";
//   - Nova has it STOPPED and kiln's guest runs (started through kiln's own API, the other
//     front of the same lifecycle): saved ACTIVE. kiln's host is the truth here, where nova
//     would stop the guest again;
//   - kiln has no such guest: logged (libvirt may be away), nothing saved, as nova does.

#include <map>
#include <string>

#include "common/result.h"
#include "openstack/compute/instance_host.h"
#include "openstack/nova/conductor.h"

namespace kiln::openstack::compute {

struct PowerSyncReport {
  std::size_t instances = 0;  // Nova's instances on the host
  std::size_t saved = 0;      // of them, saved with a new power or vm state
};

Result<PowerSyncReport> syncPowerStates(nova::Conductor& conductor, const std::string& host,
                                        InstanceHost& instances);

}  // namespace kiln::openstack::compute
