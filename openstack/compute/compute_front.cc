#include "openstack/compute/compute_front.h"

#include "common/log.h"

namespace kiln::openstack::compute {

ComputeFront::ComputeFront(ComputeFrontOptions options)
    : options_(std::move(options)),
      handlers_(options_.rpc_workers, 1024),
      rpc_(options_.rabbit, handlers_),
      conductor_(rpc_, options_.rpc_response_timeout),
      service_(conductor_, options_.host),
      compute_rpc_(ComputeRpc::Hooks{[this](bool enabled) {
        log::info("OpenStack: Nova says service nova-compute on {} is {}", options_.host,
                  enabled ? "enabled" : "disabled");
      }}) {
  rpc_.listen(kTopic, options_.host, [this](const messaging::RpcRequest& request) {
    return compute_rpc_.handle(request);
  });
}

ComputeFront::~ComputeFront() { stop(); }

void ComputeFront::start() {
  log::info(
      "OpenStack: kilnd is nova-compute of host {} (RabbitMQ {}, exchange '{}')", options_.host,
      [&] {
        std::string brokers;
        for (const auto& broker : options_.rabbit.url.brokers) {
          brokers += (brokers.empty() ? "" : ",") + messaging::describeBroker(broker);
        }
        return brokers;
      }(),
      options_.rabbit.control_exchange);
  rpc_.start();
  reporter_ = std::thread([this] { reportLoop(); });
}

void ComputeFront::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (reporter_.joinable()) reporter_.join();
  rpc_.stop();
  handlers_.shutdown();
}

void ComputeFront::reportLoop() {
  bool reported_failure = false;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (stopping_) return;
    }
    // The first pass registers (the heartbeat makes the row when there is none yet).
    if (rpc_.waitConnected(std::chrono::seconds(1))) {
      if (auto beat = service_.heartbeat(); !beat) {
        if (!reported_failure)
          log::warn("OpenStack: the service heartbeat failed: {}", beat.error().message);
        reported_failure = true;
      } else if (reported_failure) {
        log::info("OpenStack: service heartbeats reach nova-conductor again");
        reported_failure = false;
      }
    }
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, options_.report_interval, [this] { return stopping_; });
    if (stopping_) return;
  }
}

}  // namespace kiln::openstack::compute
