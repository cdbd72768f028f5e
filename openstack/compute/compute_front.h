#pragma once
// kilnd as this host's nova-compute, when [DEFAULT] transport_url is set: the RPC transport
// consuming the compute topic, this host's service row kept alive by heartbeats every
// report_interval, the compute RPC answered (compute_rpc.h), and at each report the host
// measured afresh: its compute node row saved where a figure changed (compute_node_record.h),
// and with [placement] configured its resource provider's inventories and traits made to match
// (placement/host_inventory.h), as nova's resource tracker does in update_available_resource.
// It starts in the background and never holds up kilnd's own API: RabbitMQ, the conductor or
// Placement being away is logged and retried.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/keyed_mutex.h"
#include "common/work_queue.h"
#include "imagecache/http_client.h"
#include "openstack/compute/compute_node_record.h"
#include "openstack/compute/compute_rpc.h"
#include "openstack/compute/instance_host.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/service_record.h"
#include "openstack/keystone/keystone_session.h"
#include "openstack/messaging/rpc_transport.h"
#include "openstack/nova/conductor.h"
#include "openstack/placement/host_inventory.h"
#include "openstack/placement/placement_client.h"

namespace kiln::openstack::compute {

// What kilnd measured of its host for one report (agent/host_probe.h).
struct HostMeasurement {
  ComputeNodeFigures node;  // the allocation ratios are the front's to fill
  placement::HostResources resources;
  placement::HostCapabilities capabilities;  // service_disabled is the front's to fill
};

struct ComputeFrontOptions {
  messaging::RabbitOptions rabbit;
  std::string host;
  // The compute node's uuid and the Placement provider's (nodeUuid(state_path)).
  std::string node_uuid;
  std::function<Result<HostMeasurement>()> measure_host;
  placement::InventoryOptions inventory;
  // [placement]; unset: no provider is kept (the scheduler cannot pick this host).
  std::optional<keystone::KeystoneAuthOptions> placement;
  // kilnd's lifecycle, which builds and deletes what Nova asks for; null: the instance methods
  // answer NoSuchMethod (tests of the registration alone).
  InstanceHost* instances = nullptr;
  std::chrono::seconds report_interval{10};
  std::chrono::seconds rpc_response_timeout{60};
  unsigned rpc_workers = 16;
};

class ComputeFront {
 public:
  // `http` and `clock` serve the Placement client's Keystone session; both outlive the front.
  ComputeFront(ComputeFrontOptions options, imagecache::HttpClient& http, const Clock& clock);
  ~ComputeFront();
  ComputeFront(const ComputeFront&) = delete;
  ComputeFront& operator=(const ComputeFront&) = delete;

  // Checks the [placement] options; connects to nobody yet.
  Result<void> start();
  // Stops the heartbeats, then the transport; Nova sees the service down after its
  // service_down_time. Idempotent.
  void stop();

 private:
  void reportLoop();
  // One measurement written to the compute node row and to Placement.
  Result<void> reportResources();
  // COMPUTE_STATUS_DISABLED on the provider follows `disabled`.
  Result<void> syncProviderTraits(const placement::HostCapabilities& capabilities);
  void onHostEnabled(bool enabled);
  // Tells Nova of guests whose power state changed outside its actions (power_sync.h).
  void syncPowerStatesOnce();
  bool power_sync_failed_ = false;  // reporter thread only
  // At the first report that reaches the conductor, Nova's instances on this host are settled
  // (instance_operations.h recoverInstances). Until then the instance methods wait, as nova
  // runs init_host before it consumes RPC: a build must not be settled as an interrupted one.
  bool recoverOnce();
  bool recoveredNow();
  messaging::RpcOutcome afterRecovery(
      const messaging::RpcRequest& request,
      messaging::RpcOutcome (*operation)(const InstanceOperations&, const messaging::RpcRequest&));
  bool recovered_ = false;  // guarded by mutex_; wake_ tells the waiting handlers

  const ComputeFrontOptions options_;
  WorkQueue handlers_;
  messaging::RpcTransport rpc_;
  nova::Conductor conductor_;
  ServiceRecord service_;
  ComputeNodeRecord node_;
  ComputeRpc compute_rpc_;
  imagecache::HttpClient& http_;
  const Clock& clock_;
  std::unique_ptr<keystone::KeystoneSession> placement_session_;
  std::unique_ptr<placement::PlacementClient> placement_;
  KeyedMutex instance_locks_;
  std::unique_ptr<InstanceOperations> instance_operations_;
  // What the reports last wrote to Placement, and when Placement was last read: until
  // kPlacementRefresh has passed, an unchanged measurement sends nothing. Reporter thread only.
  struct PlacementState {
    placement::Inventories inventories;
    std::set<std::string> traits;
  };
  // nova's [compute] resource_provider_association_refresh default.
  static constexpr std::chrono::seconds kPlacementRefresh{300};
  std::optional<PlacementState> placement_state_;
  std::chrono::steady_clock::time_point refreshed_at_{};
  // The last capabilities measured, for a trait update between reports.
  std::mutex capabilities_mutex_;
  std::optional<placement::HostCapabilities> capabilities_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread reporter_;
};

}  // namespace kiln::openstack::compute
