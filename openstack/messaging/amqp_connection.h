#pragma once
// One AMQP 0-9-1 connection to RabbitMQ over Debian's librabbitmq (rabbitmq-c), with one channel.
// librabbitmq is not thread-safe: an AmqpConnection belongs to one thread (RpcTransport's I/O
// thread) for its whole life. The only file that includes librabbitmq's headers is
// amqp_connection.cc.
//
// Every error is a whole sentence naming the broker and what it refused, with RabbitMQ's reply
// code and text ("406 PRECONDITION_FAILED - inequivalent arg 'durable' ..."): a declare whose
// arguments differ from the queue's is the usual mistake, and the broker's text names the argument.

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/result.h"
#include "openstack/messaging/transport_url.h"

namespace kiln::openstack::messaging {

struct AmqpOptions {
  BrokerAddress broker;
  std::string virtual_host = "/";
  // Seconds; 0 turns AMQP heartbeats off. librabbitmq sends them from inside next() and
  // publish(), so the owner must call next() at least every heartbeat/2 seconds.
  int heartbeat_seconds = 60;
  std::chrono::milliseconds connect_timeout{5000};
  bool ssl = false;
  std::string ssl_ca_file;    // empty: the system's trust store
  std::string ssl_cert_file;  // client certificate, with ssl_key_file
  std::string ssl_key_file;
  bool ssl_verify_hostname = false;  // oslo's ssl_enforce_hostname_verification
  std::string connection_name;       // shown by `rabbitmqctl list_connections client_properties`
};

struct ExchangeSpec {
  std::string name;
  std::string type;  // topic, fanout, direct
  bool durable = false;
  bool auto_delete = false;
};

struct QueueSpec {
  std::string name;
  bool durable = false;
  bool auto_delete = false;
  bool exclusive = false;
  // x-arguments: an object of strings, integers and booleans (x-expires, x-queue-type, ...).
  nlohmann::json arguments = nlohmann::json::object();
};

struct Delivery {
  std::string consumer_tag;
  std::uint64_t delivery_tag = 0;
  std::string exchange;
  std::string routing_key;
  std::string body;
  bool redelivered = false;
};

struct Publication {
  std::string exchange;  // "" is the default exchange (replies go there, keyed by queue name)
  std::string routing_key;
  std::string body;
  // Milliseconds until RabbitMQ drops the message unread (a call nobody answers in time).
  std::optional<std::chrono::milliseconds> expiration;
};

class AmqpConnection {
 public:
  // Connects, logs in (PLAIN), negotiates heartbeats and opens channel 1.
  static Result<std::unique_ptr<AmqpConnection>> open(const AmqpOptions& options);
  ~AmqpConnection();
  AmqpConnection(const AmqpConnection&) = delete;
  AmqpConnection& operator=(const AmqpConnection&) = delete;

  Result<void> declareExchange(const ExchangeSpec& exchange);
  Result<void> declareQueue(const QueueSpec& queue);
  Result<void> bindQueue(const std::string& queue, const std::string& exchange,
                         const std::string& routing_key);
  // Starts consuming `queue` with explicit acks; returns the consumer tag.
  Result<std::string> consume(const std::string& queue);
  Result<void> publish(const Publication& message);
  Result<void> ack(std::uint64_t delivery_tag);

  // The next delivery, waiting at most `timeout` (0: only what is already here). nullopt when
  // none came; an error when the connection or the channel failed (the connection is then
  // unusable). Messages RabbitMQ returns as unroutable are dropped here.
  Result<std::optional<Delivery>> next(std::chrono::milliseconds timeout);
  // Whether next(0) may find something without reading the socket (librabbitmq buffers frames).
  bool hasBufferedInput() const;
  int socketFd() const;
  const std::string& peer() const { return peer_; }

 private:
  struct State;
  explicit AmqpConnection(std::unique_ptr<State> state, std::string peer);
  std::unique_ptr<State> state_;
  std::string peer_;
};

}  // namespace kiln::openstack::messaging
