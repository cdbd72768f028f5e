#include "openstack/messaging/oslo_message.h"

#include <fmt/format.h>

#include "common/strings.h"
#include "common/uuid.h"

namespace kiln::openstack::messaging {
namespace {

using nlohmann::json;

constexpr std::string_view kVersionKey = "oslo.version";
constexpr std::string_view kMessageKey = "oslo.message";
constexpr std::string_view kContextPrefix = "_context_";

Result<json> parseBounded(std::string_view text, std::string_view what) {
  bool too_deep = false;
  json parsed = json::parse(
      text,
      [&](int depth, json::parse_event_t, json&) {
        if (depth > kMaxDepth) too_deep = true;
        return !too_deep;
      },
      false);
  if (too_deep)
    return Error::invalid(fmt::format("the {} nests deeper than {} levels", what, kMaxDepth));
  if (parsed.is_discarded()) return Error::invalid(fmt::format("the {} is not JSON", what));
  return parsed;
}

Result<std::string> optionalString(const json& message, const char* key) {
  const auto it = message.find(key);
  if (it == message.end() || it->is_null()) return std::string();
  if (!it->is_string())
    return Error::invalid(fmt::format("the message's '{}' is not a string", key));
  return it->get<std::string>();
}

}  // namespace

Result<json> parseBody(std::string_view body) {
  auto outer = parseBounded(body, "message body");
  if (!outer) return outer.error();
  if (!outer->is_object()) return Error::invalid("the message body is not a JSON object");
  const auto version = outer->find(kVersionKey);
  const auto inner = outer->find(kMessageKey);
  if (version == outer->end() || inner == outer->end()) return std::move(*outer);
  if (!version->is_string() || version->get<std::string>() != "2.0") {
    return Error::invalid(
        fmt::format("the message's envelope version {} is not 2.0", version->dump()));
  }
  if (!inner->is_string()) return Error::invalid("the envelope's oslo.message is not a string");
  auto message = parseBounded(inner->get_ref<const std::string&>(), "enveloped message");
  if (!message) return message.error();
  if (!message->is_object()) return Error::invalid("the enveloped message is not a JSON object");
  return std::move(*message);
}

std::string envelopeBody(const json& message) {
  json envelope = json::object();
  envelope[std::string(kVersionKey)] = "2.0";
  envelope[std::string(kMessageKey)] = message.dump();
  return envelope.dump();
}

Result<RpcRequest> parseRequest(std::string_view body) {
  auto message = parseBody(body);
  if (!message) return message.error();
  RpcRequest request;
  const auto method = message->find("method");
  if (method == message->end() || !method->is_string() ||
      method->get_ref<const std::string&>().empty()) {
    return Error::invalid("the message names no method");
  }
  request.method = method->get<std::string>();
  if (const auto args = message->find("args"); args != message->end() && !args->is_null()) {
    if (!args->is_object())
      return Error::invalid(fmt::format("the arguments of '{}' are not an object", request.method));
    request.args = *args;
  }
  auto version = optionalString(*message, "version");
  auto ns = optionalString(*message, "namespace");
  auto unique_id = optionalString(*message, "_unique_id");
  auto msg_id = optionalString(*message, "_msg_id");
  auto reply_q = optionalString(*message, "_reply_q");
  for (auto* field : {&version, &ns, &unique_id, &msg_id, &reply_q}) {
    if (!*field) return field->error();
  }
  request.version = std::move(*version);
  request.namespace_ = std::move(*ns);
  request.unique_id = std::move(*unique_id);
  request.msg_id = std::move(*msg_id);
  request.reply_q = std::move(*reply_q);
  if (request.isCall() && request.reply_q.empty()) {
    return Error::invalid(fmt::format("the call of '{}' names no reply queue", request.method));
  }
  if (const auto timeout = message->find("_timeout");
      timeout != message->end() && !timeout->is_null()) {
    if (!timeout->is_number()) return Error::invalid("the message's '_timeout' is not a number");
    request.client_timeout = timeout->get<double>();
  }
  for (const auto& [key, value] : message->items()) {
    if (key.starts_with(kContextPrefix)) request.context[key.substr(kContextPrefix.size())] = value;
  }
  return request;
}

std::string serializeRequest(RpcRequest& request) {
  json message = json::object();
  message["method"] = request.method;
  message["args"] = request.args;
  if (!request.version.empty()) message["version"] = request.version;
  if (!request.namespace_.empty()) message["namespace"] = request.namespace_;
  request.unique_id = newMessageId();
  message["_unique_id"] = request.unique_id;
  if (request.isCall()) {
    message["_msg_id"] = request.msg_id;
    message["_reply_q"] = request.reply_q;
    message["_timeout"] = request.client_timeout ? json(*request.client_timeout) : json(nullptr);
  }
  for (const auto& [key, value] : request.context.items()) {
    message[std::string(kContextPrefix) + key] = value;
  }
  return envelopeBody(message);
}

Result<RpcReply> parseReply(std::string_view body) {
  auto message = parseBody(body);
  if (!message) return message.error();
  RpcReply reply;
  auto msg_id = optionalString(*message, "_msg_id");
  if (!msg_id) return msg_id.error();
  if (msg_id->empty()) return Error::invalid("the reply names no _msg_id");
  reply.msg_id = std::move(*msg_id);
  auto unique_id = optionalString(*message, "_unique_id");
  if (!unique_id) return unique_id.error();
  reply.unique_id = std::move(*unique_id);
  if (const auto ending = message->find("ending"); ending != message->end()) {
    if (!ending->is_boolean()) return Error::invalid("the reply's 'ending' is not a boolean");
    reply.ending = ending->get<bool>();
  }
  if (const auto result = message->find("result"); result != message->end()) reply.result = *result;
  if (const auto failure = message->find("failure");
      failure != message->end() && !failure->is_null()) {
    // A JSON string holding the exception; anything unreadable is still a failure.
    RpcFailure parsed{"RemoteError", "", "", json::object()};
    if (failure->is_string()) {
      auto data = parseBounded(failure->get_ref<const std::string&>(), "reply's failure");
      if (data && data->is_object()) {
        parsed.class_name = data->value("class", std::string("RemoteError"));
        parsed.module = data->value("module", std::string());
        parsed.message = data->value("message", std::string());
        if (const auto kwargs = data->find("kwargs");
            kwargs != data->end() && kwargs->is_object()) {
          parsed.kwargs = *kwargs;
        }
      } else {
        parsed.message = strings::printableExcerpt(failure->get_ref<const std::string&>(), 400);
      }
    } else {
      parsed.message = strings::printableExcerpt(failure->dump(), 400);
    }
    reply.failure = std::move(parsed);
  }
  return reply;
}

std::string serializeReply(RpcReply& reply) {
  json message = json::object();
  message["result"] = reply.result;
  if (reply.failure) {
    json data = json::object();
    data["class"] = reply.failure->class_name;
    data["module"] = reply.failure->module;
    data["message"] = reply.failure->message;
    data["tb"] = json::array();
    data["args"] = json::array();
    data["kwargs"] = reply.failure->kwargs;
    message["failure"] = data.dump();
  } else {
    message["failure"] = nullptr;
  }
  message["ending"] = reply.ending;
  message["_msg_id"] = reply.msg_id;
  reply.unique_id = newMessageId();
  message["_unique_id"] = reply.unique_id;
  return envelopeBody(message);
}

std::string newMessageId() {
  std::string id = randomUuid();
  std::erase(id, '-');
  return id;
}

}  // namespace kiln::openstack::messaging
