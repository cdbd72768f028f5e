// The queue arguments oslo.messaging 14 declares for each kind of queue, option by option: kiln
// must declare exactly these, or RabbitMQ refuses the declare (406).

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "openstack/messaging/rabbit_options.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack::messaging;

RabbitOptions withBroker() {
  RabbitOptions options;
  options.url.brokers.push_back({"127.0.0.1", 5672, "u", "p"});
  return options;
}

TEST_CASE(
    "rabbit options: the defaults: no arguments on topic queues, x-expires on transient ones") {
  const RabbitOptions options = withBroker();
  CHECK(queueArguments(options, false) == json::object());
  CHECK(queueArguments(options, true) == json{{"x-expires", 1800000}});
  CHECK_FALSE(durableQueues(options));
  CHECK(validateRabbitOptions(options).ok());
}

TEST_CASE("rabbit options: quorum queues are durable, and only topic queues are quorum queues") {
  RabbitOptions options = withBroker();
  options.rabbit_quorum_queue = true;
  options.rabbit_quorum_delivery_limit = 3;
  options.rabbit_quorum_max_memory_bytes = 1 << 20;
  CHECK(durableQueues(options));
  CHECK(queueArguments(options, false) == json{{"x-queue-type", "quorum"},
                                               {"x-delivery-limit", 3},
                                               {"x-max-in-memory-bytes", 1 << 20}});
  CHECK(queueArguments(options, true) == json{{"x-expires", 1800000}});
}

TEST_CASE("rabbit options: HA queues mark every queue; a TTL changes x-expires") {
  RabbitOptions options = withBroker();
  options.rabbit_ha_queues = true;
  options.rabbit_transient_queues_ttl = 60;
  CHECK(queueArguments(options, false) == json{{"x-ha-policy", "all"}});
  CHECK(queueArguments(options, true) == json{{"x-ha-policy", "all"}, {"x-expires", 60000}});
}

TEST_CASE("rabbit options: contradictions are refused as oslo refuses them") {
  RabbitOptions options = withBroker();
  options.rabbit_ha_queues = true;
  options.rabbit_quorum_queue = true;
  CHECK_FALSE(validateRabbitOptions(options).ok());
  RabbitOptions no_ttl = withBroker();
  no_ttl.rabbit_transient_queues_ttl = 0;
  CHECK_FALSE(validateRabbitOptions(no_ttl).ok());
  RabbitOptions no_broker;
  CHECK_FALSE(validateRabbitOptions(no_broker).ok());
}

}  // namespace
