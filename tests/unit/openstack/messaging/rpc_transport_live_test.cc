// RpcTransport against a real RabbitMQ, and against Debian's own oslo.messaging as the peer
// (oslo_peer.py): kiln's server answers oslo's client, kiln's client calls oslo's server. Skipped
// unless KILN_TEST_TRANSPORT_URL names a broker; KILN_TEST_RABBITMQCTL (a rabbitmqctl that reaches
// that broker) enables the reconnect and mismatch cases. The openstack fixture sets both.
//
// KILN_TEST_OPENSTACK_DIR (the openstack fixture's directory) stands for both: its fixture.json
// names the broker, and its rabbitmqctl reaches it.
//
// Every test uses its own exchange and topic, so the control plane on the same broker is never
// touched.

#include <fmt/format.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/command_runner.h"
#include "common/work_queue.h"
#include "openstack/messaging/amqp_connection.h"
#include "openstack/messaging/oslo_message.h"
#include "openstack/messaging/rpc_transport.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack::messaging;
using namespace std::chrono_literals;

std::string fixtureValue(const char* what) {
  const char* dir = std::getenv("KILN_TEST_OPENSTACK_DIR");
  if (dir == nullptr) return {};
  if (std::string(what) == "rabbitmqctl") return std::string(dir) + "/rabbitmqctl";
  std::ifstream in(std::string(dir) + "/fixture.json");
  if (!in) FAIL("KILN_TEST_OPENSTACK_DIR is set, but " << dir << "/fixture.json cannot be read");
  return json::parse(in).value(what, std::string());
}

const char* transportUrl() {
  if (const char* url = std::getenv("KILN_TEST_TRANSPORT_URL")) return url;
  static const std::string from_fixture = fixtureValue("transport_url");
  return from_fixture.empty() ? nullptr : from_fixture.c_str();
}

const char* rabbitmqctlPath() {
  if (const char* ctl = std::getenv("KILN_TEST_RABBITMQCTL")) return ctl;
  static const std::string from_fixture = fixtureValue("rabbitmqctl");
  return from_fixture.empty() ? nullptr : from_fixture.c_str();
}

RabbitOptions options(const std::string& exchange) {
  auto url = parseTransportUrl(transportUrl());
  REQUIRE(url.ok());
  RabbitOptions rabbit;
  rabbit.url = *url;
  rabbit.control_exchange = exchange;
  rabbit.heartbeat_timeout_threshold = 10;
  rabbit.connection_name = "kiln-messaging-test";
  return rabbit;
}

std::string unique(const std::string& prefix) { return prefix + "-" + newMessageId().substr(0, 8); }

std::unique_ptr<AmqpConnection> rawConnection() {
  auto url = parseTransportUrl(transportUrl());
  REQUIRE(url.ok());
  AmqpOptions amqp;
  amqp.broker = url->brokers[0];
  amqp.virtual_host = url->virtual_host;
  auto connection = AmqpConnection::open(amqp);
  REQUIRE(connection.ok());
  return std::move(connection).value();
}

kiln::CommandOutput run(std::vector<std::string> argv, std::chrono::milliseconds timeout = 60s) {
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.timeout = timeout;
  kiln::PosixCommandRunner runner;
  auto out = runner.run(spec);
  REQUIRE(out.ok());
  return *out;
}

// A handler that records what it was given.
struct Recorder {
  std::mutex mutex;
  std::vector<RpcRequest> requests;
  RpcHandler handler(std::chrono::milliseconds delay = 0ms) {
    return [this, delay](const RpcRequest& request) {
      if (delay > 0ms) std::this_thread::sleep_for(delay);
      {
        std::lock_guard lock(mutex);
        requests.push_back(request);
      }
      if (request.method == "explode") {
        return RpcOutcome::fail("InstanceNotFound", "nova.exception",
                                "Instance x could not be found.", json{{"instance_id", "x"}});
      }
      return RpcOutcome::ok(json{{"method", request.method}, {"args", request.args}});
    };
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return requests.size();
  }
  bool waitFor(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (count() < n) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }
};

TEST_CASE(
    "RPC live: a call reaches the server queue and the topic queue, a cast arrives, context kept",
    "[rabbitmq]") {
  if (!transportUrl()) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  kiln::WorkQueue handlers(2);
  Recorder recorder;
  RpcTransport server(options(exchange), handlers);
  server.listen(topic, "host-a", recorder.handler());
  server.start();
  REQUIRE(server.waitConnected(10s));
  RpcTransport client(options(exchange), handlers);
  client.start();
  REQUIRE(client.waitConnected(10s));

  const json context{{"request_id", "req-7"}, {"user_id", "u1"}, {"roles", {"admin"}}};
  auto direct = client.call({topic, "host-a", "6.1", ""}, context, "get_console_output",
                            {{"tail_length", 5}}, 10s);
  REQUIRE(direct.ok());
  CHECK(direct->at("method") == "get_console_output");
  CHECK(direct->at("args") == json{{"tail_length", 5}});
  auto any = client.call({topic, "", "6.1", ""}, context, "ping", json::object(), 10s);
  REQUIRE(any.ok());
  client.cast({topic, "host-a", "6.1", ""}, context, "terminate_instance", {{"instance", "i"}});
  REQUIRE(recorder.waitFor(3));
  std::lock_guard lock(recorder.mutex);
  CHECK(recorder.requests[0].context == context);
  CHECK(recorder.requests[0].version == "6.1");
  CHECK(recorder.requests[2].method == "terminate_instance");
  CHECK_FALSE(recorder.requests[2].isCall());
}

TEST_CASE("RPC live: a failure comes back as the caller's error; an unanswered call times out",
          "[rabbitmq]") {
  if (!transportUrl()) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  kiln::WorkQueue handlers(2);
  Recorder recorder;
  RpcTransport server(options(exchange), handlers);
  server.listen(topic, "host-a", recorder.handler());
  server.start();
  RpcTransport client(options(exchange), handlers);
  client.start();
  REQUIRE(server.waitConnected(10s));
  REQUIRE(client.waitConnected(10s));
  auto failed =
      client.call({topic, "host-a", "", ""}, json::object(), "explode", json::object(), 10s);
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error().code == kiln::ErrorCode::kNotFound);
  CHECK(failed.error().message.find("InstanceNotFound") != std::string::npos);

  const auto start = std::chrono::steady_clock::now();
  auto nobody =
      client.call({topic, "nobody-home", "", ""}, json::object(), "ping", json::object(), 1500ms);
  REQUIRE_FALSE(nobody.ok());
  CHECK(nobody.error().code == kiln::ErrorCode::kUnavailable);
  CHECK(nobody.error().message.find("MessagingTimeout") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("RPC live: fanout casts arrive, redelivered _unique_ids are dropped, junk is survived",
          "[rabbitmq]") {
  if (!transportUrl()) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  kiln::WorkQueue handlers(2);
  Recorder recorder;
  RpcTransport server(options(exchange), handlers);
  server.listen(topic, "host-a", recorder.handler());
  server.start();
  REQUIRE(server.waitConnected(10s));

  auto raw = rawConnection();
  RpcRequest request;
  request.method = "sync_instance_info";
  const std::string body = serializeRequest(request);
  REQUIRE(raw->publish({topic + "_fanout", topic, body, std::nullopt}).ok());
  REQUIRE(recorder.waitFor(1));
  // The same message again (as a broker redelivers it): dropped.
  REQUIRE(raw->publish({exchange, topic + ".host-a", body, std::nullopt}).ok());
  REQUIRE(raw->publish({exchange, topic + ".host-a", "{not json", std::nullopt}).ok());
  REQUIRE(raw->publish({exchange, topic + ".host-a",
                        R"({"oslo.version": "2.0", "oslo.message": "{}"})", std::nullopt})
              .ok());
  RpcRequest after;
  after.method = "after_the_junk";
  REQUIRE(raw->publish({exchange, topic + ".host-a", serializeRequest(after), std::nullopt}).ok());
  REQUIRE(recorder.waitFor(2));
  std::this_thread::sleep_for(300ms);
  std::lock_guard lock(recorder.mutex);
  REQUIRE(recorder.requests.size() == 2);
  CHECK(recorder.requests[1].method == "after_the_junk");
}

TEST_CASE("RPC live: a long call gets call-monitor heartbeats every _timeout/2, then its reply",
          "[rabbitmq]") {
  if (!transportUrl()) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  kiln::WorkQueue handlers(2);
  Recorder recorder;
  RpcTransport server(options(exchange), handlers);
  server.listen(topic, "host-a", recorder.handler(2500ms));
  server.start();
  REQUIRE(server.waitConnected(10s));

  auto raw = rawConnection();
  const std::string reply_q = "reply_" + newMessageId();
  REQUIRE(raw->declareQueue({reply_q, false, true, false, json::object()}).ok());
  REQUIRE(raw->consume(reply_q).ok());
  RpcRequest request;
  request.method = "slow";
  request.msg_id = newMessageId();
  request.reply_q = reply_q;
  request.client_timeout = 2;  // heartbeats every second
  REQUIRE(
      raw->publish({exchange, topic + ".host-a", serializeRequest(request), std::nullopt}).ok());
  int heartbeats = 0;
  bool ended = false;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!ended && std::chrono::steady_clock::now() < until) {
    auto delivery = raw->next(500ms);
    REQUIRE(delivery.ok());
    if (!*delivery) continue;
    REQUIRE(raw->ack((*delivery)->delivery_tag).ok());
    auto reply = parseReply((*delivery)->body);
    REQUIRE(reply.ok());
    CHECK(reply->msg_id == request.msg_id);
    if (reply->ending) {
      ended = true;
      CHECK(reply->result.at("method") == "slow");
    } else {
      ++heartbeats;
    }
  }
  CHECK(ended);
  CHECK(heartbeats >= 2);
}

TEST_CASE("RPC live: Debian's oslo.messaging calls kiln's server and serves kiln's call",
          "[rabbitmq]") {
  if (!transportUrl()) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  kiln::WorkQueue handlers(2);
  Recorder recorder;
  RpcTransport server(options(exchange), handlers);
  server.listen(topic, "host-a", recorder.handler());
  server.start();
  REQUIRE(server.waitConnected(10s));

  auto called = run({"/usr/bin/python3", KILN_OSLO_PEER, "call", transportUrl(), exchange, topic,
                     "host-a", "build_and_run_instance", R"({"node": "host-a", "limits": {}})"});
  INFO(called.stderr_text);
  REQUIRE(called.succeeded());
  const json result = json::parse(called.stdout_text);
  CHECK(result.at("result").at("method") == "build_and_run_instance");
  CHECK(result.at("result").at("args") == json{{"node", "host-a"}, {"limits", json::object()}});
  {
    std::lock_guard lock(recorder.mutex);
    REQUIRE(recorder.requests.size() == 1);
    CHECK(recorder.requests[0].context.at("user_id") == "oslo-peer");
    CHECK(recorder.requests[0].version == "1.0");
  }
  auto failed = run({"/usr/bin/python3", KILN_OSLO_PEER, "call", transportUrl(), exchange, topic,
                     "host-a", "explode", "{}"});
  REQUIRE(failed.succeeded());
  CHECK(json::parse(failed.stdout_text).at("error") == "InstanceNotFound");

  // And the other way round: oslo's server, kiln's client.
  const std::string peer_topic = unique("oslopeer");
  const auto ready = std::filesystem::temp_directory_path() / ("kiln-oslo-peer-" + newMessageId());
  kiln::CommandOutput served;
  std::thread peer([&] {
    served = run({"/usr/bin/python3", KILN_OSLO_PEER, "serve", transportUrl(), exchange, peer_topic,
                  "peer-host", ready.string()});
  });
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!std::filesystem::exists(ready) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  RpcTransport client(options(exchange), handlers);
  client.start();
  REQUIRE(client.waitConnected(10s));
  auto echoed =
      client.call({peer_topic, "peer-host", "1.0", ""},
                  json{{"user_id", "kiln"}, {"request_id", "req-k"}}, "echo", json{{"x", 1}}, 20s);
  peer.join();
  std::filesystem::remove(ready);
  INFO(served.stderr_text);
  REQUIRE(echoed.ok());
  CHECK(echoed->at("args") == json{{"x", 1}});
  CHECK(echoed->at("user_id") == "kiln");
  CHECK(echoed->at("request_id") == "req-k");
}

TEST_CASE("RPC live: after the broker drops the connection, kiln reconnects and serves again",
          "[rabbitmq]") {
  const char* rabbitmqctl = rabbitmqctlPath();
  if (!transportUrl() || !rabbitmqctl) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  kiln::WorkQueue handlers(2);
  Recorder recorder;
  RabbitOptions server_options = options(exchange);
  server_options.connection_name = unique("kiln-reconnect");
  server_options.rabbit_retry_interval = 1s;
  RpcTransport server(server_options, handlers);
  server.listen(topic, "host-a", recorder.handler());
  server.start();
  REQUIRE(server.waitConnected(10s));
  RpcTransport client(options(exchange), handlers);
  client.start();
  REQUIRE(client.waitConnected(10s));

  // Close the server's connection from the broker's side, as a broker restart or failover does.
  auto listed = run(
      {rabbitmqctl, "list_connections", "-q", "--no-table-headers", "pid", "client_properties"});
  REQUIRE(listed.succeeded());
  std::string pid;
  std::istringstream lines(listed.stdout_text);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(server_options.connection_name) != std::string::npos)
      pid = line.substr(0, line.find('\t'));
  }
  REQUIRE_FALSE(pid.empty());
  REQUIRE(run({rabbitmqctl, "close_connection", pid, "kiln test: forced close"}).succeeded());
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (server.connections() < 2 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  REQUIRE(server.connections() == 2);
  CHECK(server.waitConnected(10s));
  auto after = client.call({topic, "host-a", "", ""}, json::object(), "ping", json::object(), 10s);
  REQUIRE(after.ok());
}

TEST_CASE("RPC live: a queue declared with other flags is a clear 406 naming the options",
          "[rabbitmq]") {
  const char* rabbitmqctl = rabbitmqctlPath();
  if (!transportUrl() || !rabbitmqctl) return;
  const std::string exchange = unique("kiln-test");
  const std::string topic = unique("kilntest");
  {
    // The control plane's queue, durable (amqp_durable_queues = true there).
    auto raw = rawConnection();
    REQUIRE(raw->declareQueue({topic, true, false, false, json::object()}).ok());
  }
  kiln::WorkQueue handlers(1);
  Recorder recorder;
  RpcTransport server(options(exchange), handlers);
  server.listen(topic, "host-a", recorder.handler());
  server.start();
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (server.lastError().empty() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(20ms);
  const std::string error = server.lastError();
  server.stop();
  run({rabbitmqctl, "delete_queue", topic});
  INFO(error);
  CHECK_FALSE(server.connected());
  CHECK(error.find("406") != std::string::npos);
  CHECK(error.find("durable") != std::string::npos);
  CHECK(error.find("amqp_durable_queues") != std::string::npos);
}

}  // namespace
