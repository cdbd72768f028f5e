// ServiceRecord against the real Nova control plane (scripts/start-openstack.sh): kiln's row in
// Nova's services table, made through nova-conductor, is what `openstack compute service list`
// shows, up while the heartbeats come; a second start finds the same row. ComputeNodeRecord: the
// host's compute node, mapped by `nova-manage cell_v2 discover_hosts`, is what
// `openstack hypervisor list` shows, and later reports save only what changed.

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/command_runner.h"
#include "common/uuid.h"
#include "common/work_queue.h"
#include "openstack/compute/compute_node_record.h"
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

// Runs `spec`; with `as_json`, its output parsed.
json run(kiln::CommandSpec spec, const std::string& what, bool as_json) {
  spec.timeout = 60s;
  kiln::PosixCommandRunner runner;
  auto out = runner.run(spec);
  INFO(what);
  if (!out) FAIL(out.error().message);
  INFO(out->stderr_text);
  REQUIRE(out->succeeded());
  return as_json ? json::parse(out->stdout_text) : json();
}

// `openstack ARGS` as the cloud's admin; with `as_json`, its `-f json` output parsed.
json openstack(const json& fx, const std::string& args, bool as_json = true) {
  kiln::CommandSpec spec;
  spec.argv = {"sh", "-c",
               fmt::format(". '{}' && openstack {}{}", fx["openrc"]["admin"].get<std::string>(),
                           args, as_json ? " -f json" : "")};
  return run(spec, args, as_json);
}

// nova-conductor of the fixture's control plane, through kiln's own transport.
struct LiveConductor {
  LiveConductor(const json& fx, const std::string& connection_name)
      : rabbit(rabbitOptions(fx, connection_name)), rpc(rabbit, handlers), conductor(rpc, 30s) {
    rpc.start();
    REQUIRE(rpc.waitConnected(10s));
  }
  static messaging::RabbitOptions rabbitOptions(const json& fx, const std::string& name) {
    auto url = messaging::parseTransportUrl(fx["transport_url"].get<std::string>());
    REQUIRE(url.ok());
    messaging::RabbitOptions options;
    options.url = *url;
    options.connection_name = name;
    return options;
  }
  messaging::RabbitOptions rabbit;
  kiln::WorkQueue handlers{1};
  messaging::RpcTransport rpc;
  nova::Conductor conductor;
};

TEST_CASE("service record: kiln registers with Nova through the conductor and shows up",
          "[openstack-live]") {
  if (!fixtureDir()) return;
  const json fx = fixture();
  LiveConductor live(fx, "kiln-service-record-test");
  nova::Conductor& conductor = live.conductor;
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

namespace {

compute::ComputeNodeFigures nodeFigures(const std::string& host) {
  compute::ComputeNodeFigures f;
  f.hypervisor_hostname = host;
  f.host_ip = "198.51.100.7";
  f.hypervisor_type = "QEMU";
  f.hypervisor_version = 7002000;
  f.vcpus = 2;
  f.memory_mb = 4096;
  f.local_gb = 40;
  f.memory_mb_used = 512;
  f.free_ram_mb = 3584;
  f.free_disk_gb = 40;
  f.disk_available_least = 40;
  f.cpu_info = {{"arch", "x86_64"},
                {"model", "qemu64"},
                {"vendor", "AMD"},
                {"topology", {{"sockets", 1}, {"cores", 2}, {"threads", 1}}},
                {"features", json::array()}};
  f.supported_hv_specs = {{"x86_64", "qemu", "hvm"}};
  f.stats = {{"num_instances", "0"}};
  return f;
}

TEST_CASE("compute node record: kiln's compute node is the hypervisor Nova lists",
          "[openstack-live]") {
  if (!fixtureDir()) return;
  const json fx = fixture();
  LiveConductor live(fx, "kiln-compute-node-test");
  nova::Conductor& conductor = live.conductor;
  const std::string host = "kiln-node-" + messaging::newMessageId().substr(0, 8);
  compute::ServiceRecord service(conductor, host);
  REQUIRE(service.ensure().ok());
  const std::string uuid = kiln::randomUuid();

  compute::ComputeNodeRecord record(conductor, host, uuid);
  auto figures = nodeFigures(host);
  auto first = record.report(figures);
  INFO((first ? "" : first.error().message));
  REQUIRE(first.ok());
  CHECK(record.id() > 0);
  CHECK(record.lastSaved().count("supported_hv_specs") == 1);

  // discover_hosts maps the host into the cell, as an operator does for a new compute host.
  kiln::CommandSpec discover;
  discover.argv = {"nova-manage", "--config-file", fx["nova"]["conf"].get<std::string>(), "cell_v2",
                   "discover_hosts"};
  run(discover, "nova-manage cell_v2 discover_hosts", false);

  // (`hypervisor show` also asks the host for its uptime over RPC: tested with kilnd.)
  const json hypervisors = openstack(fx, "hypervisor list --long");
  const json* row = nullptr;
  for (const auto& h : hypervisors)
    if (h["ID"] == uuid) row = &h;
  INFO(hypervisors.dump());
  REQUIRE(row != nullptr);
  CHECK((*row)["Hypervisor Hostname"] == host);
  CHECK((*row)["Hypervisor Type"] == "QEMU");
  CHECK((*row)["Host IP"] == "198.51.100.7");
  CHECK((*row)["State"] == "up");

  // An unchanged report saves nothing; a changed one saves exactly what changed.
  REQUIRE(record.report(figures).ok());
  CHECK(record.lastSaved().empty());
  figures.memory_mb_used = 640;
  figures.free_ram_mb = 3456;
  REQUIRE(record.report(figures).ok());
  CHECK(record.lastSaved() == std::set<std::string>{"free_ram_mb", "memory_mb_used"});

  // kilnd restarted finds its row again.
  compute::ComputeNodeRecord restarted(conductor, host, uuid);
  REQUIRE(restarted.report(figures).ok());
  CHECK(restarted.id() == record.id());
  CHECK(restarted.lastSaved().empty());

  // A row of this host under another uuid is not taken over.
  compute::ComputeNodeRecord stranger(conductor, host, kiln::randomUuid());
  auto refused = stranger.report(figures);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == kiln::ErrorCode::kConflict);
  CHECK(refused.error().message.find(uuid) != std::string::npos);

  // The node first: nova-api's service delete asks Placement for each node's provider, and this
  // test made none.
  REQUIRE(record.destroy().ok());
  const json services = openstack(fx, "compute service list --service nova-compute --host " + host);
  REQUIRE(services.size() == 1);
  openstack(fx, "compute service delete " + services[0]["ID"].get<std::string>(), false);
}

}  // namespace
