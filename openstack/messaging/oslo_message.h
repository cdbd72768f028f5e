#pragma once
// oslo.messaging's RPC messages as they travel over RabbitMQ (oslo_messaging/_drivers/amqp.py,
// amqpdriver.py, common.py in oslo.messaging 14):
//
//   body      {"oslo.version": "2.0", "oslo.message": "<the message as a JSON string>"}
//   request   {"method", "args": {keyword arguments}, "version", ["namespace"], "_unique_id",
//              "_context_<key>" for every request-context field,
//              calls also: "_msg_id", "_reply_q" (reply_<uuid hex>), "_timeout" (seconds or null:
//              the call monitor's interval; the server then sends a heartbeat every half of it)}
//   reply     {"result", "failure" (null or a JSON string: class, module, message, tb, args,
//              kwargs), "ending" (false: a call-monitor heartbeat), "_msg_id", "_unique_id"}
//
// Bodies come from the broker and are checked like any other input: JSON, nested at most
// kMaxDepth levels, the fields of the right types.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kiln::openstack::messaging {

// Nova's deepest messages (a RequestSpec holding an Instance's flavor, image and NUMA topology)
// nest about 15 levels.
inline constexpr int kMaxDepth = 64;

struct RpcRequest {
  std::string method;
  nlohmann::json args = nlohmann::json::object();
  std::string version;     // "6.1"; empty when the caller gave none
  std::string namespace_;  // empty: the default namespace
  // The request context: every _context_<key> of the message, keyed without the prefix
  // (user_id, project_id, roles, is_admin, auth_token, request_id, ...).
  nlohmann::json context = nlohmann::json::object();
  std::string unique_id;
  // Calls only: where the reply goes, and the call monitor's interval.
  std::string msg_id;
  std::string reply_q;
  std::optional<double> client_timeout;

  bool isCall() const { return !msg_id.empty(); }
};

// A remote exception, as oslo's serialize_remote_exception writes it. A client that lists
// `module` in its allowed_remote_exmods (nova lists nova.exception) raises `class_name` with
// `kwargs`; any other becomes a RemoteError quoting the message.
struct RpcFailure {
  std::string class_name;
  std::string module;
  std::string message;
  nlohmann::json kwargs = nlohmann::json::object();
};

struct RpcReply {
  std::string msg_id;
  nlohmann::json result;
  std::optional<RpcFailure> failure;
  bool ending = true;
  std::string unique_id;
};

// A parsed body's JSON, the envelope removed (a body without one is taken as the message itself,
// as oslo does for 1.0 senders).
Result<nlohmann::json> parseBody(std::string_view body);
// `message` inside a 2.0 envelope.
std::string envelopeBody(const nlohmann::json& message);

Result<RpcRequest> parseRequest(std::string_view body);
// The message for `request`: its context packed as _context_ keys, a fresh _unique_id (stored
// back into request.unique_id), and for calls the _msg_id, _reply_q and _timeout.
std::string serializeRequest(RpcRequest& request);

Result<RpcReply> parseReply(std::string_view body);
std::string serializeReply(RpcReply& reply);

// A fresh id in oslo's form (uuid4().hex: 32 lower-case hex digits).
std::string newMessageId();

}  // namespace kiln::openstack::messaging
