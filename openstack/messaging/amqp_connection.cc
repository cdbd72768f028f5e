#include "openstack/messaging/amqp_connection.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <fmt/format.h>
#include <sys/time.h>

#include <deque>
#include <vector>

#include "common/log.h"
#include "common/strings.h"

namespace kiln::openstack::messaging {
namespace {

constexpr amqp_channel_t kChannel = 1;
// How long a synchronous AMQP method (declare, bind, consume, close) may wait for the broker.
constexpr int kRpcTimeoutSeconds = 10;

std::string bytesToString(amqp_bytes_t bytes) {
  if (bytes.len == 0 || bytes.bytes == nullptr) return {};
  return {static_cast<const char*>(bytes.bytes), bytes.len};
}

amqp_bytes_t asBytes(const std::string& text) {
  return amqp_bytes_t{text.size(), const_cast<char*>(text.data())};
}

timeval asTimeval(std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  return tv;
}

std::string closeReason(std::uint16_t code, amqp_bytes_t text) {
  return fmt::format("{} {}", code, strings::printableExcerpt(bytesToString(text), 400));
}

std::string describeReply(const amqp_rpc_reply_t& reply) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "no error";
    case AMQP_RESPONSE_NONE:
      return "the broker sent no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* close = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
        return "the broker closed the connection: " +
               closeReason(close->reply_code, close->reply_text);
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* close = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
        return "the broker closed the channel: " +
               closeReason(close->reply_code, close->reply_text);
      }
      return fmt::format("the broker answered with unexpected method 0x{:08x}", reply.reply.id);
  }
  return "unknown reply type";
}

// x-arguments as an AMQP field table. The strings live in `storage` for as long as the table is
// used (one synchronous call).
class Table {
 public:
  explicit Table(const nlohmann::json& arguments) {
    for (const auto& [key, value] : arguments.items()) {
      amqp_table_entry_t entry{};
      entry.key = asBytes(keep(key));
      if (value.is_boolean()) {
        entry.value.kind = AMQP_FIELD_KIND_BOOLEAN;
        entry.value.value.boolean = value.get<bool>() ? 1 : 0;
      } else if (value.is_number_integer()) {
        // RabbitMQ compares integer arguments by value across integer types; py-amqp sends a
        // signed 32-bit one when it fits, and so does kiln.
        const auto number = value.get<std::int64_t>();
        if (number >= INT32_MIN && number <= INT32_MAX) {
          entry.value.kind = AMQP_FIELD_KIND_I32;
          entry.value.value.i32 = static_cast<std::int32_t>(number);
        } else {
          entry.value.kind = AMQP_FIELD_KIND_I64;
          entry.value.value.i64 = number;
        }
      } else {
        entry.value.kind = AMQP_FIELD_KIND_UTF8;
        entry.value.value.bytes =
            asBytes(keep(value.is_string() ? value.get<std::string>() : value.dump()));
      }
      entries_.push_back(entry);
    }
  }
  amqp_table_t table() {
    return amqp_table_t{static_cast<int>(entries_.size()),
                        entries_.empty() ? nullptr : entries_.data()};
  }

 private:
  const std::string& keep(std::string text) { return storage_.emplace_back(std::move(text)); }
  std::deque<std::string> storage_;  // a deque: growing it never moves the strings
  std::vector<amqp_table_entry_t> entries_;
};

}  // namespace

struct AmqpConnection::State {
  amqp_connection_state_t conn = nullptr;
  bool channel_open = false;
  // Set once a socket error, a heartbeat timeout or a close from the broker ends the connection:
  // the destructor then skips the polite close, which would only wait for a broker that is gone.
  bool broken = false;

  ~State() {
    if (conn == nullptr) return;
    if (!broken) {
      if (channel_open) amqp_channel_close(conn, kChannel, AMQP_REPLY_SUCCESS);
      amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn);
  }

  // The last synchronous method's outcome; a failure marks the connection broken, since a
  // server exception closes the channel (or the connection) under us.
  Result<void> check(std::string_view what, const std::string& peer) {
    const amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) return success();
    broken = true;
    return Error::unavailable(
        fmt::format("RabbitMQ at {} refused to {}: {}", peer, what, describeReply(reply)));
  }
};

AmqpConnection::AmqpConnection(std::unique_ptr<State> state, std::string peer)
    : state_(std::move(state)), peer_(std::move(peer)) {}

AmqpConnection::~AmqpConnection() = default;

Result<std::unique_ptr<AmqpConnection>> AmqpConnection::open(const AmqpOptions& options) {
  auto state = std::make_unique<State>();
  const std::string peer = describeBroker(options.broker);
  state->conn = amqp_new_connection();
  if (state->conn == nullptr) return Error::internal("librabbitmq could not allocate a connection");
  amqp_socket_t* socket = nullptr;
  if (options.ssl) {
    socket = amqp_ssl_socket_new(state->conn);
    if (socket == nullptr) return Error::internal("librabbitmq could not create a TLS socket");
    // The broker's certificate is always checked; ssl_verify_hostname adds the name check.
    amqp_ssl_socket_set_verify_peer(socket, 1);
    amqp_ssl_socket_set_verify_hostname(socket, options.ssl_verify_hostname ? 1 : 0);
    if (!options.ssl_ca_file.empty() &&
        amqp_ssl_socket_set_cacert(socket, options.ssl_ca_file.c_str()) != AMQP_STATUS_OK) {
      return Error::invalid(fmt::format(
          "[oslo_messaging_rabbit] ssl_ca_file '{}' could not be read as PEM certificates",
          options.ssl_ca_file));
    }
    if (!options.ssl_cert_file.empty() &&
        amqp_ssl_socket_set_key(socket, options.ssl_cert_file.c_str(),
                                options.ssl_key_file.c_str()) != AMQP_STATUS_OK) {
      return Error::invalid(
          fmt::format("[oslo_messaging_rabbit] ssl_cert_file '{}' and ssl_key_file '{}' could not "
                      "be loaded as a client "
                      "certificate and its key",
                      options.ssl_cert_file, options.ssl_key_file));
    }
  } else {
    socket = amqp_tcp_socket_new(state->conn);
    if (socket == nullptr) return Error::internal("librabbitmq could not create a TCP socket");
  }
  timeval connect_timeout = asTimeval(options.connect_timeout);
  if (const int status = amqp_socket_open_noblock(socket, options.broker.host.c_str(),
                                                  options.broker.port, &connect_timeout);
      status != AMQP_STATUS_OK) {
    state->broken = true;
    return Error::unavailable(fmt::format("RabbitMQ at {} could not be reached{}: {}", peer,
                                          options.ssl ? " over TLS" : "",
                                          amqp_error_string2(status)));
  }
  timeval rpc_timeout{kRpcTimeoutSeconds, 0};
  amqp_set_rpc_timeout(state->conn, &rpc_timeout);
  amqp_set_handshake_timeout(state->conn, &connect_timeout);

  // What `rabbitmqctl list_connections client_properties` shows, and the capability that makes
  // RabbitMQ tell a consumer its queue was deleted (basic.cancel) instead of going silent.
  amqp_table_entry_t capability{};
  capability.key = amqp_cstring_bytes("consumer_cancel_notify");
  capability.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  capability.value.value.boolean = 1;
  std::vector<amqp_table_entry_t> properties(3);
  properties[0].key = amqp_cstring_bytes("product");
  properties[0].value.kind = AMQP_FIELD_KIND_UTF8;
  properties[0].value.value.bytes = amqp_cstring_bytes("kiln");
  properties[1].key = amqp_cstring_bytes("connection_name");
  properties[1].value.kind = AMQP_FIELD_KIND_UTF8;
  properties[1].value.value.bytes = asBytes(options.connection_name);
  properties[2].key = amqp_cstring_bytes("capabilities");
  properties[2].value.kind = AMQP_FIELD_KIND_TABLE;
  properties[2].value.value.table = amqp_table_t{1, &capability};
  const amqp_table_t client_properties{static_cast<int>(properties.size()), properties.data()};
  const amqp_rpc_reply_t login = amqp_login_with_properties(
      state->conn, options.virtual_host.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE,
      options.heartbeat_seconds, &client_properties, AMQP_SASL_METHOD_PLAIN,
      options.broker.username.c_str(), options.broker.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    state->broken = true;
    return Error::unavailable(
        fmt::format("RabbitMQ at {} refused the login of user '{}' to virtual host '{}': {}", peer,
                    options.broker.username, options.virtual_host, describeReply(login)));
  }
  amqp_channel_open(state->conn, kChannel);
  if (auto opened = state->check("open a channel", peer); !opened) return opened.error();
  state->channel_open = true;
  return std::unique_ptr<AmqpConnection>(new AmqpConnection(std::move(state), peer));
}

Result<void> AmqpConnection::declareExchange(const ExchangeSpec& exchange) {
  amqp_exchange_declare(state_->conn, kChannel, asBytes(exchange.name), asBytes(exchange.type), 0,
                        exchange.durable ? 1 : 0, exchange.auto_delete ? 1 : 0, 0,
                        amqp_empty_table);
  return state_->check(
      fmt::format("declare {} exchange '{}' (durable={}, auto_delete={})", exchange.type,
                  exchange.name, exchange.durable, exchange.auto_delete),
      peer_);
}

Result<void> AmqpConnection::declareQueue(const QueueSpec& queue) {
  Table arguments(queue.arguments);
  amqp_queue_declare(state_->conn, kChannel, asBytes(queue.name), 0, queue.durable ? 1 : 0,
                     queue.exclusive ? 1 : 0, queue.auto_delete ? 1 : 0, arguments.table());
  return state_->check(
      fmt::format("declare queue '{}' (durable={}, auto_delete={}, arguments {})", queue.name,
                  queue.durable, queue.auto_delete, queue.arguments.dump()),
      peer_);
}

Result<void> AmqpConnection::bindQueue(const std::string& queue, const std::string& exchange,
                                       const std::string& routing_key) {
  amqp_queue_bind(state_->conn, kChannel, asBytes(queue), asBytes(exchange), asBytes(routing_key),
                  amqp_empty_table);
  return state_->check(
      fmt::format("bind queue '{}' to exchange '{}' with key '{}'", queue, exchange, routing_key),
      peer_);
}

Result<std::string> AmqpConnection::consume(const std::string& queue) {
  const amqp_basic_consume_ok_t* ok = amqp_basic_consume(
      state_->conn, kChannel, asBytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  if (auto checked = state_->check(fmt::format("consume queue '{}'", queue), peer_); !checked) {
    return checked.error();
  }
  return bytesToString(ok->consumer_tag);
}

Result<void> AmqpConnection::publish(const Publication& message) {
  amqp_basic_properties_t properties{};
  properties._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG;
  properties.content_type = amqp_cstring_bytes("application/json");
  properties.content_encoding = amqp_cstring_bytes("utf-8");
  std::string expiration;
  if (message.expiration) {
    expiration = std::to_string(std::max<std::int64_t>(1, message.expiration->count()));
    properties._flags |= AMQP_BASIC_EXPIRATION_FLAG;
    properties.expiration = asBytes(expiration);
  }
  const int status =
      amqp_basic_publish(state_->conn, kChannel, asBytes(message.exchange),
                         asBytes(message.routing_key), 0, 0, &properties, asBytes(message.body));
  if (status != AMQP_STATUS_OK) {
    state_->broken = true;
    return Error::unavailable(
        fmt::format("publishing to RabbitMQ at {} (exchange '{}', key '{}') failed: {}", peer_,
                    message.exchange, message.routing_key, amqp_error_string2(status)));
  }
  return success();
}

Result<void> AmqpConnection::ack(std::uint64_t delivery_tag) {
  if (const int status = amqp_basic_ack(state_->conn, kChannel, delivery_tag, 0);
      status != AMQP_STATUS_OK) {
    state_->broken = true;
    return Error::unavailable(fmt::format("acknowledging a message to RabbitMQ at {} failed: {}",
                                          peer_, amqp_error_string2(status)));
  }
  return success();
}

Result<std::optional<Delivery>> AmqpConnection::next(std::chrono::milliseconds timeout) {
  amqp_maybe_release_buffers(state_->conn);
  amqp_envelope_t envelope{};
  timeval wait = asTimeval(timeout);
  const amqp_rpc_reply_t reply = amqp_consume_message(state_->conn, &envelope, &wait, 0);
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
    Delivery delivery;
    delivery.consumer_tag = bytesToString(envelope.consumer_tag);
    delivery.delivery_tag = envelope.delivery_tag;
    delivery.exchange = bytesToString(envelope.exchange);
    delivery.routing_key = bytesToString(envelope.routing_key);
    delivery.body = bytesToString(envelope.message.body);
    delivery.redelivered = envelope.redelivered != 0;
    amqp_destroy_envelope(&envelope);
    return std::optional<Delivery>(std::move(delivery));
  }
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
      reply.library_error == AMQP_STATUS_TIMEOUT) {
    return std::optional<Delivery>();
  }
  if (reply.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION ||
      reply.library_error != AMQP_STATUS_UNEXPECTED_STATE) {
    state_->broken = true;
    return Error::unavailable(
        fmt::format("the connection to RabbitMQ at {} failed: {}", peer_, describeReply(reply)));
  }
  // Something other than a delivery: a returned message, or the broker closing the channel or
  // the connection (with its reason), or cancelling a consumer.
  amqp_frame_t frame{};
  timeval zero{0, 0};
  const int status = amqp_simple_wait_frame_noblock(state_->conn, &frame, &zero);
  if (status == AMQP_STATUS_TIMEOUT) return std::optional<Delivery>();
  if (status != AMQP_STATUS_OK) {
    state_->broken = true;
    return Error::unavailable(fmt::format("the connection to RabbitMQ at {} failed: {}", peer_,
                                          amqp_error_string2(status)));
  }
  if (frame.frame_type != AMQP_FRAME_METHOD) return std::optional<Delivery>();
  switch (frame.payload.method.id) {
    case AMQP_BASIC_RETURN_METHOD: {
      const auto* returned = static_cast<const amqp_basic_return_t*>(frame.payload.method.decoded);
      log::warn("RabbitMQ at {} returned a message for exchange '{}', key '{}' as unroutable: {}",
                peer_, bytesToString(returned->exchange), bytesToString(returned->routing_key),
                closeReason(returned->reply_code, returned->reply_text));
      amqp_message_t message{};
      const amqp_rpc_reply_t read = amqp_read_message(state_->conn, frame.channel, &message, 0);
      if (read.reply_type != AMQP_RESPONSE_NORMAL) {
        state_->broken = true;
        return Error::unavailable(
            fmt::format("the connection to RabbitMQ at {} failed: {}", peer_, describeReply(read)));
      }
      amqp_destroy_message(&message);
      return std::optional<Delivery>();
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      const auto* close = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
      std::string reason = closeReason(close->reply_code, close->reply_text);
      amqp_channel_close_ok_t ok{};
      amqp_send_method(state_->conn, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      state_->channel_open = false;
      state_->broken = true;
      return Error::unavailable(
          fmt::format("RabbitMQ at {} closed kiln's channel: {}", peer_, reason));
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
      const auto* close = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
      std::string reason = closeReason(close->reply_code, close->reply_text);
      amqp_connection_close_ok_t ok{};
      amqp_send_method(state_->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
      state_->broken = true;
      return Error::unavailable(
          fmt::format("RabbitMQ at {} closed the connection: {}", peer_, reason));
    }
    case AMQP_BASIC_CANCEL_METHOD: {
      const auto* cancel = static_cast<const amqp_basic_cancel_t*>(frame.payload.method.decoded);
      state_->broken = true;
      return Error::unavailable(
          fmt::format("RabbitMQ at {} cancelled consumer '{}' (its queue was deleted)", peer_,
                      bytesToString(cancel->consumer_tag)));
    }
    default:
      return std::optional<Delivery>();
  }
}

bool AmqpConnection::hasBufferedInput() const {
  return amqp_frames_enqueued(state_->conn) != 0 || amqp_data_in_buffer(state_->conn) != 0;
}

int AmqpConnection::socketFd() const { return amqp_get_sockfd(state_->conn); }

}  // namespace kiln::openstack::messaging
