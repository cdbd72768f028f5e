// oslo.messaging's envelope, requests and replies: what kiln writes is what oslo reads, and what
// kiln reads from the broker is checked like any other input.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "openstack/messaging/oslo_message.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack::messaging;

TEST_CASE("oslo message: a call's request in a 2.0 envelope, context packed as _context_ keys") {
  RpcRequest request;
  request.method = "object_class_action_versions";
  request.args = {{"objname", "Service"}};
  request.version = "3.0";
  request.context = {{"user_id", nullptr}, {"request_id", "req-1"}, {"is_admin", true}};
  request.msg_id = newMessageId();
  request.reply_q = "reply_" + newMessageId();
  const std::string body = serializeRequest(request);

  const json outer = json::parse(body);
  CHECK(outer.at("oslo.version") == "2.0");
  const json inner = json::parse(outer.at("oslo.message").get<std::string>());
  CHECK(inner.at("method") == "object_class_action_versions");
  CHECK(inner.at("version") == "3.0");
  CHECK_FALSE(inner.contains("namespace"));
  CHECK(inner.at("_context_request_id") == "req-1");
  CHECK(inner.at("_context_is_admin") == true);
  CHECK(inner.at("_msg_id") == request.msg_id);
  CHECK(inner.at("_reply_q") == request.reply_q);
  CHECK(inner.at("_timeout").is_null());
  CHECK(inner.at("_unique_id").get<std::string>().size() == 32);

  auto parsed = parseRequest(body);
  REQUIRE(parsed.ok());
  CHECK(parsed->method == request.method);
  CHECK(parsed->args == request.args);
  CHECK(parsed->context == request.context);
  CHECK(parsed->isCall());
  CHECK(parsed->unique_id == request.unique_id);
  CHECK_FALSE(parsed->client_timeout.has_value());
}

TEST_CASE("oslo message: a cast carries no reply fields; a namespace is kept") {
  RpcRequest request;
  request.method = "ping";
  request.namespace_ = "baseapi";
  request.version = "1.1";
  const json inner =
      json::parse(json::parse(serializeRequest(request)).at("oslo.message").get<std::string>());
  CHECK_FALSE(inner.contains("_msg_id"));
  CHECK_FALSE(inner.contains("_reply_q"));
  CHECK(inner.at("namespace") == "baseapi");
}

TEST_CASE("oslo message: a request without an envelope (oslo 1.0 senders) is read as the message") {
  auto parsed = parseRequest(
      R"({"method": "ping", "args": {"arg": 1}, "_context_user_id": "u", "_timeout": 30,
                                 "_msg_id": "abc", "_reply_q": "reply_x"})");
  REQUIRE(parsed.ok());
  CHECK(parsed->context == json{{"user_id", "u"}});
  REQUIRE(parsed->client_timeout.has_value());
  CHECK(*parsed->client_timeout == 30);
}

TEST_CASE("oslo message: replies, failures and call-monitor heartbeats") {
  RpcReply reply;
  reply.msg_id = "m1";
  reply.result = json{{"nova_object.name", "Service"}};
  auto parsed = parseReply(serializeReply(reply));
  REQUIRE(parsed.ok());
  CHECK(parsed->result == reply.result);
  CHECK(parsed->ending);
  CHECK_FALSE(parsed->failure.has_value());

  RpcReply failed;
  failed.msg_id = "m2";
  failed.failure = RpcFailure{"InstanceNotFound", "nova.exception",
                              "Instance x could not be found.", json{{"instance_id", "x"}}};
  const json inner =
      json::parse(json::parse(serializeReply(failed)).at("oslo.message").get<std::string>());
  // oslo's serialize_remote_exception: the failure is itself a JSON string.
  REQUIRE(inner.at("failure").is_string());
  const json failure = json::parse(inner.at("failure").get<std::string>());
  CHECK(failure.at("class") == "InstanceNotFound");
  CHECK(failure.at("module") == "nova.exception");
  CHECK(failure.at("kwargs") == json{{"instance_id", "x"}});
  CHECK(failure.at("tb").is_array());
  CHECK(failure.at("args").is_array());
  auto back = parseReply(serializeReply(failed));
  REQUIRE(back.ok());
  REQUIRE(back->failure.has_value());
  CHECK(back->failure->class_name == "InstanceNotFound");
  CHECK(back->failure->message == "Instance x could not be found.");

  RpcReply beat;
  beat.msg_id = "m3";
  beat.ending = false;
  auto heartbeat = parseReply(serializeReply(beat));
  REQUIRE(heartbeat.ok());
  CHECK_FALSE(heartbeat->ending);
}

TEST_CASE("oslo message: what the broker may deliver that is refused") {
  const char* bad[] = {
      "not json",
      "[1, 2]",
      R"({"oslo.version": "3.0", "oslo.message": "{}"})",
      R"({"oslo.version": "2.0", "oslo.message": 5})",
      R"({"oslo.version": "2.0", "oslo.message": "[]"})",
      R"({"args": {}})",
      R"({"method": 5})",
      R"({"method": "x", "args": []})",
      R"({"method": "x", "_msg_id": "m"})",
      R"({"method": "x", "version": 6.1})",
      R"({"method": "x", "_timeout": "soon"})",
  };
  for (const char* body : bad) {
    INFO(body);
    CHECK_FALSE(parseRequest(body).ok());
  }
  std::string deep(200, '[');
  deep += std::string(200, ']');
  CHECK_FALSE(parseRequest(R"({"method": "x", "args": {"a": )" + deep + "}}").ok());
  CHECK_FALSE(parseReply(R"({"result": 1})").ok());
  CHECK_FALSE(parseReply(R"({"_msg_id": "m", "ending": "yes"})").ok());
}

TEST_CASE("oslo message: an unreadable failure is still a failure") {
  auto reply =
      parseReply(R"({"_msg_id": "m", "failure": "not json", "result": null, "ending": true})");
  REQUIRE(reply.ok());
  REQUIRE(reply->failure.has_value());
  CHECK(reply->failure->class_name == "RemoteError");
}

}  // namespace
