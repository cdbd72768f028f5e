#pragma once
// kilnd as this host's nova-compute, when [DEFAULT] transport_url is set: the RPC transport
// consuming the compute topic, this host's service row kept alive by heartbeats every
// report_interval, and the compute RPC answered (compute_rpc.h). It starts in the background and
// never holds up kilnd's own API: RabbitMQ or the conductor being away is logged and retried.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/work_queue.h"
#include "openstack/compute/compute_rpc.h"
#include "openstack/compute/service_record.h"
#include "openstack/messaging/rpc_transport.h"
#include "openstack/nova/conductor.h"

namespace kiln::openstack::compute {

struct ComputeFrontOptions {
  messaging::RabbitOptions rabbit;
  std::string host;
  std::chrono::seconds report_interval{10};
  std::chrono::seconds rpc_response_timeout{60};
  unsigned rpc_workers = 16;
};

class ComputeFront {
 public:
  explicit ComputeFront(ComputeFrontOptions options);
  ~ComputeFront();
  ComputeFront(const ComputeFront&) = delete;
  ComputeFront& operator=(const ComputeFront&) = delete;

  void start();
  // Stops the heartbeats, then the transport; Nova sees the service down after its
  // service_down_time. Idempotent.
  void stop();

 private:
  void reportLoop();

  const ComputeFrontOptions options_;
  WorkQueue handlers_;
  messaging::RpcTransport rpc_;
  nova::Conductor conductor_;
  ServiceRecord service_;
  ComputeRpc compute_rpc_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread reporter_;
};

}  // namespace kiln::openstack::compute
