#pragma once
// [DEFAULT] transport_url and control_exchange, and [oslo_messaging_rabbit], with
// oslo.messaging 14's names and defaults. The queue flags and x-arguments derived from them must
// be exactly the ones the control plane's services declare: RabbitMQ refuses (406
// PRECONDITION_FAILED) a declare of an existing queue or exchange with other ones.

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/result.h"
#include "openstack/messaging/transport_url.h"

namespace kiln::openstack::messaging {

struct RabbitOptions {
  TransportUrl url;
  std::string control_exchange = "nova";
  bool amqp_durable_queues = false;
  bool amqp_auto_delete = false;
  bool rabbit_ha_queues = false;
  bool rabbit_quorum_queue = false;
  int rabbit_quorum_delivery_limit = 0;
  int rabbit_quorum_max_memory_length = 0;  // oslo spells it rabbit_quroum_max_memory_length
  int rabbit_quorum_max_memory_bytes = 0;   // and rabbit_quroum_max_memory_bytes
  int rabbit_transient_queues_ttl = 1800;   // seconds: x-expires of reply and fanout queues
  int heartbeat_timeout_threshold = 60;     // seconds; 0: no AMQP heartbeats
  // Reconnect delays: retry_interval, then retry_backoff more each time, at most interval_max.
  std::chrono::seconds rabbit_retry_interval{1};
  std::chrono::seconds rabbit_retry_backoff{2};
  std::chrono::seconds rabbit_interval_max{30};
  bool ssl = false;
  std::string ssl_ca_file;
  std::string ssl_cert_file;
  std::string ssl_key_file;
  bool ssl_enforce_hostname_verification = false;
  // Shown in RabbitMQ's connection list ("kilnd:<host>").
  std::string connection_name = "kilnd";
};

// What oslo refuses too: quorum and HA queues together, negative limits.
Result<void> validateRabbitOptions(const RabbitOptions& options);

// Durable exchanges and queues: amqp_durable_queues, or quorum queues (always durable).
bool durableQueues(const RabbitOptions& options);

// oslo's _get_queue_arguments(): x-ha-policy, x-queue-type and the quorum limits, and x-expires
// when `ttl` is positive. Topic queues get no TTL and may be quorum queues; reply and fanout queues
// get rabbit_transient_queues_ttl and are never quorum queues.
nlohmann::json queueArguments(const RabbitOptions& options, bool transient);

}  // namespace kiln::openstack::messaging
