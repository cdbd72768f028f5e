// ServiceRecord against the real Nova control plane (scripts/start-openstack.sh): kiln's row in
// Nova's services table, made through nova-conductor, is what `openstack compute service list`
// shows, up while the heartbeats come; a second start finds the same row.

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/command_runner.h"
#include "common/work_queue.h"
#include "openstack/compute/service_record.h"
#include "openstack/messaging/oslo_message.h"
#include "openstack/messaging/rpc_transport.h"
#include "openstack/nova/conductor.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack;
using namespace std::chrono_literals;

const char* fixtureDir() { return std::getenv("KILN_TEST_OPENSTACK_DIR"); }

json fixture() {
  std::ifstream in(std::string(fixtureDir()) + "/fixture.json");
  REQUIRE(in.good());
  return json::parse(in);
}

// `openstack ARGS` as the cloud's admin; with `as_json`, its `-f json` output parsed.
json openstack(const json& fx, const std::string& args, bool as_json = true) {
  kiln::CommandSpec spec;
  spec.argv = {"sh", "-c",
               fmt::format(". '{}' && openstack {}{}", fx["openrc"]["admin"].get<std::string>(),
                           args, as_json ? " -f json" : "")};
  spec.timeout = 60s;
  kiln::PosixCommandRunner runner;
  auto out = runner.run(spec);
  INFO(args);
  if (!out) FAIL(out.error().message);
  INFO(out->stderr_text);
  REQUIRE(out->succeeded());
  return as_json ? json::parse(out->stdout_text) : json();
}

TEST_CASE("service record: kiln registers with Nova through the conductor and shows up",
          "[openstack-live]") {
  if (!fixtureDir()) return;
  const json fx = fixture();
  auto url = messaging::parseTransportUrl(fx["transport_url"].get<std::string>());
  REQUIRE(url.ok());
  messaging::RabbitOptions rabbit;
  rabbit.url = *url;
  rabbit.connection_name = "kiln-service-record-test";
  kiln::WorkQueue handlers(1);
  messaging::RpcTransport rpc(rabbit, handlers);
  rpc.start();
  REQUIRE(rpc.waitConnected(10s));
  nova::Conductor conductor(rpc, 30s);
  const std::string host = "kiln-live-" + messaging::newMessageId().substr(0, 8);
  compute::ServiceRecord record(conductor, host);
  REQUIRE(record.ensure().ok());
  CHECK(record.id() > 0);
  REQUIRE(record.heartbeat().ok());

  const json services = openstack(fx, "compute service list --service nova-compute --host " + host);
  REQUIRE(services.size() == 1);
  CHECK(services[0]["Host"] == host);
  CHECK(services[0]["State"] == "up");
  CHECK(services[0]["Status"] == "enabled");

  // A second start finds the same row.
  compute::ServiceRecord again(conductor, host);
  REQUIRE(again.ensure().ok());
  CHECK(again.id() == record.id());

  // (Disabling through the API also calls the host's set_host_enabled RPC, which waits for the
  // compute RPC server: tested with it.)

  // Since microversion 2.53 the API names services by uuid.
  openstack(fx, "compute service delete " + services[0]["ID"].get<std::string>(), false);
  CHECK(openstack(fx, "compute service list --service nova-compute --host " + host).empty());
}

}  // namespace
