#pragma once
// The compute RPC methods that act on an instance (nova/compute/manager.py's, Zed's argument
// lists), one file each: build_instance.cc, terminate_instance.cc, power_instance.cc (reboot,
// stop, start), console_output.cc, snapshot_instance.cc, external_event.cc, unsupported_cast.cc.
// Each saves the instance with the vm_state / task_state sequence nova-compute uses, records its
// instance-action event and, on failure, an instance fault; the lifecycle work itself is kiln's
// (InstanceHost).

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/keyed_mutex.h"
#include "common/result.h"
#include "openstack/compute/instance_host.h"
#include "openstack/messaging/rpc_transport.h"
#include "openstack/nova/conductor.h"
#include "openstack/nova/nova_object.h"
#include "openstack/placement/placement_client.h"

namespace kiln::openstack::compute {

struct InstanceOperations {
  nova::Conductor& conductor;
  // Null without [placement]: no allocations to remove.
  placement::PlacementClient* placement = nullptr;
  InstanceHost& instances;
  // One operation at a time per instance, as nova's @utils.synchronized(instance.uuid): a delete
  // that arrives during a build waits for it.
  KeyedMutex& locks;
  std::string host;
  // How long a build may take on the host (the image download included), and a delete.
  std::chrono::milliseconds build_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds delete_timeout{std::chrono::minutes(5)};
};

// build_and_run_instance (a cast): builds, then ACTIVE; or ERROR with a fault, the allocations
// removed and nothing left on the host.
messaging::RpcOutcome buildAndRunInstance(const InstanceOperations& ops,
                                          const messaging::RpcRequest& request);
// terminate_instance (a cast): the guest and its files gone, the row DELETED and destroyed, the
// allocations removed.
messaging::RpcOutcome terminateInstance(const InstanceOperations& ops,
                                        const messaging::RpcRequest& request);

// The body of terminate_instance for an instance held locked: kiln's guest gone, the row
// DELETED, the allocations removed, the row destroyed; or ERROR with a fault. Also what the
// recovery at start runs for an instance a crash left in deleting.
class NovaInstance;
Result<void> completeDelete(const InstanceOperations& ops, NovaInstance& instance);

// At start, as nova's init_host: every instance Nova places on this host settled
// (recover_instances.cc). Runs once kiln can reach the conductor.
struct RecoveryReport {
  std::size_t failed_builds = 0;      // building when kilnd stopped: now ERROR with a fault
  std::size_t completed_deletes = 0;  // deleting when kilnd stopped: deleted now
  std::size_t settled_tasks = 0;      // another task cut short: cleared, state from kiln
  std::size_t removed_deleted = 0;    // kiln still held a guest Nova has deleted: removed
};
Result<RecoveryReport> recoverInstances(const InstanceOperations& ops);

// reboot_instance (SOFT or HARD), stop_instance, start_instance (casts).
messaging::RpcOutcome rebootInstance(const InstanceOperations& ops,
                                     const messaging::RpcRequest& request);
messaging::RpcOutcome stopInstance(const InstanceOperations& ops,
                                   const messaging::RpcRequest& request);
messaging::RpcOutcome startInstance(const InstanceOperations& ops,
                                    const messaging::RpcRequest& request);
// get_console_output (a call): the last tail_length lines of the serial console, or all of it.
messaging::RpcOutcome getConsoleOutput(const InstanceOperations& ops,
                                       const messaging::RpcRequest& request);
// snapshot_instance (a cast): the root disk captured into the queued image nova-api created.
messaging::RpcOutcome snapshotInstance(const InstanceOperations& ops,
                                       const messaging::RpcRequest& request);
// external_instance_event (a cast): Neutron's and Cinder's events about instances on this host,
// through nova-api. Each is logged and handed to what waits for it (nothing yet: no Neutron).
messaging::RpcOutcome externalInstanceEvent(const InstanceOperations& ops,
                                            const messaging::RpcRequest& request);
// A cast kiln does not implement, for an instance (pause_instance, ...): answered, never left
// hanging: the instance's task state cleared, a fault and an Error event saying kiln does not
// support the operation.
messaging::RpcOutcome unsupportedInstanceCast(const InstanceOperations& ops,
                                              const messaging::RpcRequest& request);

// What kiln launches for build_and_run_instance's arguments, or why it cannot: networks other
// than "none" need Neutron (not configured), volumes in the block device mappings are not yet
// attached through Nova. `context` is the request's (its token and project).
Result<BuildRequest> buildRequestFrom(const nova::NovaObject& instance,
                                      const nlohmann::json& context, const nlohmann::json& args);

}  // namespace kiln::openstack::compute
