#pragma once
// oslo.messaging's RPC over RabbitMQ, both sides, on one connection owned by one I/O thread:
//
//   server  listen(topic, server, handler) consumes what an oslo RPC server consumes: the queue
//           `topic` and the queue `topic.server` on the control exchange (a topic exchange), and
//           an auto-expiring `topic_fanout_<id>` queue on the `topic_fanout` exchange. Each message
//           is acknowledged on receipt (as oslo does), dropped if its _unique_id was seen lately,
//           and handed to the handler on the handlers' executor, never run on the I/O thread. A
//           call's reply goes to its _reply_q; while the handler runs, a call-monitor heartbeat
//           ({"ending": false}) goes every _timeout/2 seconds.
//   client  call() and cast() publish to the control exchange with routing key topic[.server];
//           replies come back on this transport's own `reply_<id>` queue.
//
// The connection comes up in the background and comes back after any failure (the next broker of
// transport_url each time, with oslo's back-off), every exchange, queue, binding and consumer
// declared again. What callers publish meanwhile waits (a call's message only until its timeout).
// A declare RabbitMQ refuses (406: the queue exists with other flags or arguments) is logged with
// the broker's reason and the options that decide it.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/executor.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "openstack/messaging/oslo_message.h"
#include "openstack/messaging/rabbit_options.h"

namespace kiln::openstack::messaging {

class AmqpConnection;
struct Delivery;
struct Publication;

// What a handler answers: a result, or a failure the caller raises.
struct RpcOutcome {
  nlohmann::json result;
  std::optional<RpcFailure> failure;

  static RpcOutcome ok(nlohmann::json value = nullptr) { return {std::move(value), std::nullopt}; }
  static RpcOutcome fail(std::string class_name, std::string module, std::string message,
                         nlohmann::json kwargs = nlohmann::json::object()) {
    return {nullptr, RpcFailure{std::move(class_name), std::move(module), std::move(message),
                                std::move(kwargs)}};
  }
};

using RpcHandler = std::function<RpcOutcome(const RpcRequest& request)>;

struct RpcTarget {
  std::string topic;       // conductor, scheduler, compute
  std::string server;      // empty: any server of the topic
  std::string version;     // the API version the call needs ("3.0")
  std::string namespace_;  // empty: the default namespace
};

// A remote failure as an Error: kNotFound for *NotFound classes, kConflict for nova's
// unexpected-state errors, kInternal otherwise; the message names the topic and the class.
Error errorFromFailure(const RpcFailure& failure, std::string_view topic);

class RpcTransport {
 public:
  RpcTransport(RabbitOptions options, Executor& handlers);
  ~RpcTransport();
  RpcTransport(const RpcTransport&) = delete;
  RpcTransport& operator=(const RpcTransport&) = delete;

  // Before start(): the queues to consume and who handles their messages.
  void listen(std::string topic, std::string server, RpcHandler handler);
  // Starts the I/O thread, which connects in the background.
  void start();
  // Stops the I/O thread; calls still waiting fail at once. Idempotent.
  void stop();

  // Blocks the calling thread (never the I/O thread) until the reply or `timeout`.
  Result<nlohmann::json> call(const RpcTarget& target, const nlohmann::json& context,
                              const std::string& method, nlohmann::json args,
                              std::chrono::milliseconds timeout);
  // Queues the message and returns; it is published as soon as the connection is up.
  void cast(const RpcTarget& target, const nlohmann::json& context, const std::string& method,
            nlohmann::json args);

  bool connected() const;
  bool waitConnected(std::chrono::milliseconds timeout) const;
  // How many times the connection came up (1 after the first connect).
  std::uint64_t connections() const;
  // Why the last connection attempt or connection failed; empty when none did.
  std::string lastError() const;
  const std::string& replyQueue() const { return reply_queue_; }

 private:
  struct Listener {
    std::string topic;
    std::string server;
    std::string fanout_queue;
    RpcHandler handler;
  };
  struct Outgoing {
    std::string exchange;
    std::string routing_key;
    std::string body;
    std::optional<std::chrono::milliseconds> expiration;
    std::optional<std::chrono::steady_clock::time_point> discard_after;
  };
  struct Waiter {
    std::optional<RpcReply> reply;
  };
  struct ActiveCall {
    std::string reply_q;
    std::chrono::steady_clock::duration interval;
    std::chrono::steady_clock::time_point next_heartbeat;
  };

  void run();
  Result<void> connect(const BrokerAddress& broker);
  Result<void> declareListener(Listener& listener, std::size_t index);
  void publishQueued();
  void sendCallHeartbeats();
  void handle(const Delivery& delivery);
  void handleReply(const std::string& body);
  void handleRequest(std::size_t listener, const std::string& body);
  void enqueue(Outgoing message);
  void wake();
  void dropConnection(const Error& error);
  bool seenRecently(const std::string& unique_id);
  std::chrono::milliseconds pollTimeout() const;

  const RabbitOptions options_;
  Executor& handlers_;
  const std::string reply_queue_;
  std::vector<Listener> listeners_;
  UniqueFd wake_fd_;
  std::thread io_;

  // The I/O thread's own state.
  std::unique_ptr<AmqpConnection> connection_;
  std::map<std::string, std::optional<std::size_t>>
      consumers_;  // tag -> listener (nullopt: replies)
  std::deque<std::string> recent_ids_;
  std::size_t next_broker_ = 0;
  unsigned failed_attempts_ = 0;

  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;  // connection state, replies, stop
  std::deque<Outgoing> outgoing_;
  std::map<std::string, std::shared_ptr<Waiter>> waiters_;  // msg_id -> the caller waiting
  std::map<std::string, ActiveCall> active_calls_;          // msg_id -> a call being handled
  bool connected_ = false;
  bool stopping_ = false;
  std::uint64_t connections_ = 0;
  std::string last_error_;
};

}  // namespace kiln::openstack::messaging
