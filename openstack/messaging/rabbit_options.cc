#include "openstack/messaging/rabbit_options.h"

namespace kiln::openstack::messaging {

Result<void> validateRabbitOptions(const RabbitOptions& options) {
  if (options.rabbit_quorum_queue && options.rabbit_ha_queues) {
    return Error::invalid(
        "[oslo_messaging_rabbit] rabbit_quorum_queue and rabbit_ha_queues are both set; a queue is "
        "a quorum "
        "queue or a mirrored one, not both (oslo.messaging refuses this too)");
  }
  if (options.rabbit_transient_queues_ttl < 1) {
    return Error::invalid(
        "[oslo_messaging_rabbit] rabbit_transient_queues_ttl must be at least 1 second");
  }
  if (options.heartbeat_timeout_threshold < 0) {
    return Error::invalid(
        "[oslo_messaging_rabbit] heartbeat_timeout_threshold must not be negative");
  }
  if (options.rabbit_quorum_delivery_limit < 0 || options.rabbit_quorum_max_memory_length < 0 ||
      options.rabbit_quorum_max_memory_bytes < 0) {
    return Error::invalid("[oslo_messaging_rabbit] the quorum queue limits must not be negative");
  }
  if (options.url.brokers.empty()) return Error::invalid("[DEFAULT] transport_url names no broker");
  if (options.control_exchange.empty())
    return Error::invalid("[DEFAULT] control_exchange is empty");
  return success();
}

bool durableQueues(const RabbitOptions& options) {
  return options.amqp_durable_queues || options.rabbit_quorum_queue;
}

nlohmann::json queueArguments(const RabbitOptions& options, bool transient) {
  nlohmann::json arguments = nlohmann::json::object();
  if (options.rabbit_ha_queues) arguments["x-ha-policy"] = "all";
  if (options.rabbit_quorum_queue && !transient) {
    arguments["x-queue-type"] = "quorum";
    if (options.rabbit_quorum_delivery_limit > 0) {
      arguments["x-delivery-limit"] = options.rabbit_quorum_delivery_limit;
    }
    if (options.rabbit_quorum_max_memory_length > 0) {
      arguments["x-max-in-memory-length"] = options.rabbit_quorum_max_memory_length;
    }
    if (options.rabbit_quorum_max_memory_bytes > 0) {
      arguments["x-max-in-memory-bytes"] = options.rabbit_quorum_max_memory_bytes;
    }
  }
  if (transient)
    arguments["x-expires"] = static_cast<std::int64_t>(options.rabbit_transient_queues_ttl) * 1000;
  return arguments;
}

}  // namespace kiln::openstack::messaging
