// kilnd as the nova-compute of a real Nova control plane (the openstack fixture,
// scripts/start-openstack.sh): with [DEFAULT] transport_url it registers its host, keeps it up
// with heartbeats, answers the compute RPC Nova's API sends it, and goes down when it stops.

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/command_runner.h"
#include "common/uuid.h"
#include "tests/integration/kilnd_harness.h"

namespace {

using kiln::testing::KilndHarness;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

json fixture() {
  // The fixture's directory (tests/integration/CMakeLists.txt), or another control plane's.
  const char* env = std::getenv("KILN_TEST_OPENSTACK_DIR");
  const std::string dir = env != nullptr ? env : KILN_OPENSTACK_DIR;
  std::ifstream in(dir + "/fixture.json");
  REQUIRE(in.good());
  return json::parse(in);
}

struct Cli {
  kiln::CommandOutput out;
  double seconds = 0;
};

// `openstack ARGS` as the cloud's admin.
Cli openstack(const json& fx, const std::string& args) {
  kiln::CommandSpec spec;
  spec.argv = {
      "sh", "-c",
      fmt::format(". '{}' && openstack {}", fx["openrc"]["admin"].get<std::string>(), args)};
  spec.timeout = 120s;
  kiln::PosixCommandRunner runner;
  const auto start = Clock::now();
  auto out = runner.run(spec);
  if (!out) FAIL(out.error().message);
  return {*out, std::chrono::duration<double>(Clock::now() - start).count()};
}

json serviceOf(const json& fx, const std::string& host) {
  Cli cli =
      openstack(fx, "compute service list --service nova-compute --host " + host + " -f json");
  INFO(cli.out.stderr_text);
  REQUIRE(cli.out.succeeded());
  json services = json::parse(cli.out.stdout_text);
  return services.empty() ? json() : services[0];
}

// kiln.conf's OpenStack front, from the fixture's control plane.
std::string openstackConfig(const json& fx, const std::string& host) {
  const json& kiln = fx["users"]["kiln"];
  return fmt::format(
      "[DEFAULT]\nhost = {}\ntransport_url = {}\nreport_interval = 2\n"
      "[placement]\nauth_type = password\nauth_url = {}\nusername = {}\npassword = {}\n"
      "user_domain_name = Default\nproject_name = {}\nproject_domain_name = Default\nregion_name = "
      "{}\n",
      host, fx["transport_url"].get<std::string>(), fx["keystone"]["auth_url"].get<std::string>(),
      kiln["name"].get<std::string>(), kiln["password"].get<std::string>(),
      kiln["project"].get<std::string>(), fx["region"].get<std::string>());
}

TEST_CASE(
    "openstack: kilnd registers as nova-compute, answers Nova's RPC, and goes down when stopped",
    "[openstack]") {
  const json fx = fixture();
  const std::string host = "kiln-" + kiln::randomUuid().substr(0, 8);
  KilndHarness kilnd(openstackConfig(fx, host));
  kilnd.start();

  // Up within a few heartbeats.
  json service;
  const auto until = Clock::now() + 30s;
  while (Clock::now() < until) {
    service = serviceOf(fx, host);
    if (!service.is_null() && service["State"] == "up") break;
    std::this_thread::sleep_for(1s);
  }
  INFO(kilnd.logText());
  REQUIRE(!service.is_null());
  CHECK(service["State"] == "up");
  CHECK(service["Status"] == "enabled");
  // The log names the broker, never its password.
  const std::string password = fx["rabbitmq"]["password"].get<std::string>();
  CHECK(kilnd.logText().find(password) == std::string::npos);
  CHECK(kilnd.logText().find("kilnd is nova-compute of host " + host) != std::string::npos);

  // Disabling calls the host's set_host_enabled: answered at once, not after a 60 s timeout.
  Cli disabled = openstack(
      fx, "compute service set --disable --disable-reason kiln-test " + host + " nova-compute");
  INFO(disabled.out.stderr_text);
  REQUIRE(disabled.out.succeeded());
  CHECK(disabled.seconds < 20);
  CHECK(serviceOf(fx, host)["Status"] == "disabled");
  CHECK(kilnd.logText().find("is disabled") != std::string::npos);

  // Stopped: no more heartbeats, and Nova calls it down after its service_down_time (20 s).
  kilnd.stop();
  const auto down_until = Clock::now() + 60s;
  while (Clock::now() < down_until && serviceOf(fx, host)["State"] != "down")
    std::this_thread::sleep_for(2s);
  service = serviceOf(fx, host);
  CHECK(service["State"] == "down");
  openstack(fx, "compute service delete " + service["ID"].get<std::string>());
}

}  // namespace
