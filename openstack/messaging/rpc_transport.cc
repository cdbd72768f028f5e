#include "openstack/messaging/rpc_transport.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "common/log.h"
#include "common/strings.h"
#include "openstack/messaging/amqp_connection.h"

namespace kiln::openstack::messaging {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// How many recent _unique_ids are remembered to drop redeliveries (oslo remembers 16; a compute
// host's traffic is small, so more costs nothing).
constexpr std::size_t kRecentIds = 1024;
// Messages waiting for a connection; beyond this the oldest are dropped (and logged).
constexpr std::size_t kMaxOutgoing = 10000;
// The I/O thread looks at its queues at least this often.
constexpr std::chrono::milliseconds kMaxPoll{1000};

}  // namespace

Error errorFromFailure(const RpcFailure& failure, std::string_view topic) {
  std::string message = fmt::format("{} raised {}: {}", topic, failure.class_name,
                                    strings::printableExcerpt(failure.message, 1000));
  if (failure.class_name.ends_with("NotFound")) return Error::notFound(std::move(message));
  if (failure.class_name.find("UnexpectedTaskState") != std::string::npos ||
      failure.class_name.find("UnexpectedDeletingTaskState") != std::string::npos ||
      failure.class_name.find("Conflict") != std::string::npos) {
    return Error::conflict(std::move(message));
  }
  return Error::internal(std::move(message));
}

RpcTransport::RpcTransport(RabbitOptions options, Executor& handlers)
    : options_(std::move(options)),
      handlers_(handlers),
      reply_queue_("reply_" + newMessageId()),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

RpcTransport::~RpcTransport() { stop(); }

void RpcTransport::listen(std::string topic, std::string server, RpcHandler handler) {
  Listener listener;
  listener.fanout_queue = fmt::format("{}_fanout_{}", topic, newMessageId());
  listener.topic = std::move(topic);
  listener.server = std::move(server);
  listener.handler = std::move(handler);
  listeners_.push_back(std::move(listener));
}

void RpcTransport::start() {
  if (io_.joinable()) return;
  io_ = std::thread([this] { run(); });
}

void RpcTransport::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  wake();
  if (io_.joinable()) io_.join();
}

bool RpcTransport::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

bool RpcTransport::waitConnected(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return connected_ || stopping_; }) && connected_;
}

std::uint64_t RpcTransport::connections() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

std::string RpcTransport::lastError() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

void RpcTransport::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto written = ::write(wake_fd_.get(), &one, sizeof one);
}

void RpcTransport::enqueue(Outgoing message) {
  {
    std::lock_guard lock(mutex_);
    if (outgoing_.size() >= kMaxOutgoing) {
      log::error("RPC: {} messages wait for RabbitMQ; dropping the oldest (to '{}')",
                 outgoing_.size(), outgoing_.front().routing_key);
      outgoing_.pop_front();
    }
    outgoing_.push_back(std::move(message));
  }
  wake();
}

Result<json> RpcTransport::call(const RpcTarget& target, const json& context,
                                const std::string& method, json args,
                                std::chrono::milliseconds timeout) {
  RpcRequest request;
  request.method = method;
  request.args = std::move(args);
  request.version = target.version;
  request.namespace_ = target.namespace_;
  request.context = context;
  request.msg_id = newMessageId();
  request.reply_q = reply_queue_;
  const auto deadline = Clock::now() + timeout;
  auto waiter = std::make_shared<Waiter>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return Error::unavailable(
          fmt::format("RPC: cannot call {}.{}: kilnd is stopping", target.topic, method));
    waiters_[request.msg_id] = waiter;
  }
  const std::string routing_key =
      target.server.empty() ? target.topic : target.topic + "." + target.server;
  Outgoing message;
  message.exchange = options_.control_exchange;
  message.routing_key = routing_key;
  message.body = serializeRequest(request);
  message.expiration = timeout;
  message.discard_after = deadline;
  enqueue(std::move(message));

  std::unique_lock lock(mutex_);
  changed_.wait_until(lock, deadline, [&] { return waiter->reply.has_value() || stopping_; });
  waiters_.erase(request.msg_id);
  if (!waiter->reply) {
    if (stopping_)
      return Error::unavailable(
          fmt::format("RPC: the call of {}.{} ended: kilnd is stopping", target.topic, method));
    return Error::unavailable(
        fmt::format("RPC: no reply from '{}' to '{}' within {} s (MessagingTimeout){}", routing_key,
                    method, std::chrono::duration_cast<std::chrono::seconds>(timeout).count(),
                    connected_ ? "" : fmt::format("; RabbitMQ is not connected: {}", last_error_)));
  }
  if (waiter->reply->failure) return errorFromFailure(*waiter->reply->failure, target.topic);
  return std::move(waiter->reply->result);
}

void RpcTransport::cast(const RpcTarget& target, const json& context, const std::string& method,
                        json args) {
  RpcRequest request;
  request.method = method;
  request.args = std::move(args);
  request.version = target.version;
  request.namespace_ = target.namespace_;
  request.context = context;
  Outgoing message;
  message.exchange = options_.control_exchange;
  message.routing_key = target.server.empty() ? target.topic : target.topic + "." + target.server;
  message.body = serializeRequest(request);
  enqueue(std::move(message));
}

std::chrono::milliseconds RpcTransport::pollTimeout() const {
  auto timeout = kMaxPoll;
  if (options_.heartbeat_timeout_threshold > 0) {
    timeout = std::min(timeout,
                       std::chrono::milliseconds(options_.heartbeat_timeout_threshold * 1000 / 4));
  }
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  for (const auto& [id, active] : active_calls_) {
    const auto until =
        std::chrono::duration_cast<std::chrono::milliseconds>(active.next_heartbeat - now);
    timeout = std::min(timeout, std::max(until, std::chrono::milliseconds(0)));
  }
  return timeout;
}

void RpcTransport::run() {
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    if (!connection_) {
      const BrokerAddress& broker =
          options_.url.brokers[next_broker_ % options_.url.brokers.size()];
      ++next_broker_;
      if (auto connected = connect(broker); !connected) {
        ++failed_attempts_;
        const auto delay = std::min<std::chrono::seconds>(
            options_.rabbit_retry_interval + options_.rabbit_retry_backoff * (failed_attempts_ - 1),
            options_.rabbit_interval_max);
        log::warn("RPC: {}; trying again in {} s", connected.error().message, delay.count());
        {
          std::lock_guard lock(mutex_);
          last_error_ = connected.error().message;
        }
        connection_.reset();
        consumers_.clear();
        pollfd wake{wake_fd_.get(), POLLIN, 0};
        const auto until = Clock::now() + delay;
        while (Clock::now() < until) {
          {
            std::lock_guard lock(mutex_);
            if (stopping_) break;
          }
          const auto left =
              std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
          if (::poll(&wake, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 1))) > 0) {
            std::uint64_t drained = 0;
            [[maybe_unused]] const auto got = ::read(wake_fd_.get(), &drained, sizeof drained);
          }
        }
        continue;
      }
      failed_attempts_ = 0;
    }
    publishQueued();
    if (!connection_) continue;
    sendCallHeartbeats();
    if (!connection_) continue;

    pollfd fds[2] = {{connection_->socketFd(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const int timeout =
        connection_->hasBufferedInput() ? 0 : static_cast<int>(pollTimeout().count());
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
      dropConnection(Error::internal(fmt::format("poll failed: {}", std::strerror(errno))));
      continue;
    }
    if ((fds[1].revents & POLLIN) != 0) {
      std::uint64_t drained = 0;
      [[maybe_unused]] const auto got = ::read(wake_fd_.get(), &drained, sizeof drained);
    }
    // Always ask librabbitmq, even when the socket had nothing: it sends the AMQP heartbeat from
    // here when one is due, and notices a broker that went silent.
    for (;;) {
      auto delivery = connection_->next(std::chrono::milliseconds(0));
      if (!delivery) {
        dropConnection(delivery.error());
        break;
      }
      if (!*delivery) break;
      handle(**delivery);
      if (!connection_) break;
    }
  }
  connection_.reset();
  std::lock_guard lock(mutex_);
  connected_ = false;
}

Result<void> RpcTransport::connect(const BrokerAddress& broker) {
  AmqpOptions amqp;
  amqp.broker = broker;
  amqp.virtual_host = options_.url.virtual_host;
  amqp.heartbeat_seconds = options_.heartbeat_timeout_threshold;
  amqp.ssl = options_.ssl || options_.url.ssl;
  amqp.ssl_ca_file = options_.ssl_ca_file;
  amqp.ssl_cert_file = options_.ssl_cert_file;
  amqp.ssl_key_file = options_.ssl_key_file;
  amqp.ssl_verify_hostname = options_.ssl_enforce_hostname_verification;
  amqp.connection_name = options_.connection_name;
  auto opened = AmqpConnection::open(amqp);
  if (!opened) return opened.error();
  connection_ = std::move(opened).value();
  consumers_.clear();

  const bool durable = durableQueues(options_);
  // The control exchange, as every oslo service declares it before publishing to it.
  if (auto declared = connection_->declareExchange(
          {options_.control_exchange, "topic", durable, options_.amqp_auto_delete});
      !declared) {
    return Error::unavailable(
        declared.error().message +
        "; kiln's [oslo_messaging_rabbit] amqp_durable_queues, rabbit_quorum_queue and "
        "amqp_auto_delete must be the control plane's");
  }
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    if (auto declared = declareListener(listeners_[i], i); !declared) return declared.error();
  }
  // This transport's reply queue: transient, never durable, never a quorum queue.
  QueueSpec replies{reply_queue_, false, false, false, queueArguments(options_, true)};
  if (auto declared = connection_->declareQueue(replies); !declared) return declared.error();
  auto tag = connection_->consume(reply_queue_);
  if (!tag) return tag.error();
  consumers_[*tag] = std::nullopt;

  {
    std::lock_guard lock(mutex_);
    connected_ = true;
    ++connections_;
    last_error_.clear();
  }
  changed_.notify_all();
  log::info("RPC: connected to RabbitMQ at {} (virtual host '{}'{}), consuming {}",
            connection_->peer(), options_.url.virtual_host, amqp.ssl ? ", TLS" : "", [&] {
              std::string queues;
              for (const auto& listener : listeners_) {
                queues += fmt::format("'{0}', '{0}.{1}', '{2}', ", listener.topic, listener.server,
                                      listener.fanout_queue);
              }
              return queues + "'" + reply_queue_ + "'";
            }());
  return success();
}

Result<void> RpcTransport::declareListener(Listener& listener, std::size_t index) {
  const bool durable = durableQueues(options_);
  const auto explain = [&](const Error& error) {
    return Error::unavailable(error.message +
                              (error.message.find("406") != std::string::npos
                                   ? "; the queue exists with other settings: kiln's "
                                     "[oslo_messaging_rabbit] amqp_durable_queues, "
                                     "amqp_auto_delete, rabbit_quorum_queue and rabbit_ha_queues "
                                     "must be the control plane's"
                                   : ""));
  };
  for (const std::string& name : {listener.topic, listener.topic + "." + listener.server}) {
    QueueSpec queue{name, durable, options_.amqp_auto_delete, false,
                    queueArguments(options_, false)};
    if (auto declared = connection_->declareQueue(queue); !declared)
      return explain(declared.error());
    if (auto bound = connection_->bindQueue(name, options_.control_exchange, name); !bound)
      return bound.error();
    auto tag = connection_->consume(name);
    if (!tag) return tag.error();
    consumers_[*tag] = index;
  }
  const std::string fanout_exchange = listener.topic + "_fanout";
  if (auto declared = connection_->declareExchange({fanout_exchange, "fanout", false, true});
      !declared) {
    return explain(declared.error());
  }
  QueueSpec fanout{listener.fanout_queue, false, false, false, queueArguments(options_, true)};
  if (auto declared = connection_->declareQueue(fanout); !declared)
    return explain(declared.error());
  if (auto bound = connection_->bindQueue(listener.fanout_queue, fanout_exchange, listener.topic);
      !bound) {
    return bound.error();
  }
  auto tag = connection_->consume(listener.fanout_queue);
  if (!tag) return tag.error();
  consumers_[*tag] = index;
  return success();
}

void RpcTransport::dropConnection(const Error& error) {
  log::warn("RPC: lost the connection to RabbitMQ: {}; reconnecting", error.message);
  connection_.reset();
  consumers_.clear();
  {
    std::lock_guard lock(mutex_);
    connected_ = false;
    last_error_ = error.message;
  }
  changed_.notify_all();
}

void RpcTransport::publishQueued() {
  for (;;) {
    Outgoing message;
    {
      std::lock_guard lock(mutex_);
      if (outgoing_.empty()) return;
      message = outgoing_.front();
    }
    const bool expired = message.discard_after && Clock::now() >= *message.discard_after;
    if (!expired) {
      auto published = connection_->publish(
          Publication{message.exchange, message.routing_key, message.body, message.expiration});
      if (!published) {
        // Kept at the head: it goes out again after the reconnect (a duplicate is dropped by
        // its receiver's _unique_id check).
        dropConnection(published.error());
        return;
      }
    }
    std::lock_guard lock(mutex_);
    if (!outgoing_.empty()) outgoing_.pop_front();
  }
}

void RpcTransport::sendCallHeartbeats() {
  std::vector<Outgoing> beats;
  {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    for (auto& [msg_id, active] : active_calls_) {
      if (active.next_heartbeat > now) continue;
      RpcReply beat;
      beat.msg_id = msg_id;
      beat.ending = false;
      beats.push_back(
          Outgoing{"", active.reply_q, serializeReply(beat), std::nullopt, std::nullopt});
      active.next_heartbeat = now + active.interval;
    }
  }
  for (const auto& beat : beats) {
    if (auto published = connection_->publish(
            Publication{beat.exchange, beat.routing_key, beat.body, std::nullopt});
        !published) {
      dropConnection(published.error());
      return;
    }
  }
}

bool RpcTransport::seenRecently(const std::string& unique_id) {
  if (unique_id.empty()) return false;
  if (std::find(recent_ids_.begin(), recent_ids_.end(), unique_id) != recent_ids_.end())
    return true;
  recent_ids_.push_back(unique_id);
  if (recent_ids_.size() > kRecentIds) recent_ids_.pop_front();
  return false;
}

void RpcTransport::handle(const Delivery& delivery) {
  // Acknowledged first, as oslo's RPC listener does: a request is handled at most once, and a
  // handler that crashes kilnd does not make RabbitMQ hand the same build to the next start.
  if (auto acked = connection_->ack(delivery.delivery_tag); !acked) {
    dropConnection(acked.error());
    return;
  }
  const auto consumer = consumers_.find(delivery.consumer_tag);
  if (consumer == consumers_.end()) {
    log::warn("RPC: a message for unknown consumer '{}' was dropped", delivery.consumer_tag);
    return;
  }
  if (!consumer->second) {
    handleReply(delivery.body);
  } else {
    handleRequest(*consumer->second, delivery.body);
  }
}

void RpcTransport::handleReply(const std::string& body) {
  auto reply = parseReply(body);
  if (!reply) {
    log::warn("RPC: dropped a reply that is not oslo.messaging's: {}", reply.error().message);
    return;
  }
  if (seenRecently(reply->unique_id)) return;
  if (!reply->ending) return;  // a call-monitor heartbeat: kiln's calls set no _timeout
  {
    std::lock_guard lock(mutex_);
    const auto waiter = waiters_.find(reply->msg_id);
    if (waiter == waiters_.end()) {
      log::debug("RPC: a reply to {} came after its caller gave up", reply->msg_id);
      return;
    }
    waiter->second->reply = std::move(reply).value();
  }
  changed_.notify_all();
}

void RpcTransport::handleRequest(std::size_t index, const std::string& body) {
  auto request = parseRequest(body);
  if (!request) {
    log::warn("RPC: dropped a message on '{}' that is not an oslo.messaging request: {}",
              listeners_[index].topic, request.error().message);
    return;
  }
  if (seenRecently(request->unique_id)) {
    log::info("RPC: dropped a duplicate of '{}' (_unique_id {})", request->method,
              request->unique_id);
    return;
  }
  const bool is_call = request->isCall();
  if (is_call && request->client_timeout && *request->client_timeout >= 2) {
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(*request->client_timeout / 2));
    std::lock_guard lock(mutex_);
    active_calls_[request->msg_id] =
        ActiveCall{request->reply_q, interval, Clock::now() + interval};
  }
  auto shared = std::make_shared<RpcRequest>(std::move(request).value());
  const RpcHandler& handler = listeners_[index].handler;
  const bool taken = handlers_.post([this, shared, &handler, is_call] {
    RpcOutcome outcome;
    try {
      outcome = handler(*shared);
    } catch (const std::exception& e) {
      log::error("RPC: the handler of '{}' failed: {}", shared->method, e.what());
      outcome =
          RpcOutcome::fail("KilnInternalError", "kiln",
                           fmt::format("kiln failed handling '{}': {}", shared->method, e.what()));
    }
    if (!is_call) return;
    RpcReply reply;
    reply.msg_id = shared->msg_id;
    reply.result = std::move(outcome.result);
    reply.failure = std::move(outcome.failure);
    {
      std::lock_guard lock(mutex_);
      active_calls_.erase(shared->msg_id);
    }
    enqueue(Outgoing{"", shared->reply_q, serializeReply(reply), std::nullopt, std::nullopt});
  });
  if (!taken) {
    log::error("RPC: '{}' was refused: kilnd is stopping or has too much work queued",
               shared->method);
    if (is_call) {
      RpcReply reply;
      reply.msg_id = shared->msg_id;
      reply.failure = RpcFailure{"KilnUnavailable", "kiln",
                                 "kilnd is stopping or has too much work queued", json::object()};
      {
        std::lock_guard lock(mutex_);
        active_calls_.erase(shared->msg_id);
      }
      enqueue(Outgoing{"", shared->reply_q, serializeReply(reply), std::nullopt, std::nullopt});
    }
  }
}

}  // namespace kiln::openstack::messaging
