// The compute RPC dispatcher answers everything: the methods it has, NoSuchMethod for the ones it
// lacks, UnsupportedVersion for versions it does not speak, and the baseapi namespace.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "openstack/compute/compute_rpc.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack;

messaging::RpcRequest request(std::string method, std::string version, json args = json::object(),
                              std::string ns = "") {
  messaging::RpcRequest r;
  r.method = std::move(method);
  r.version = std::move(version);
  r.args = std::move(args);
  r.namespace_ = std::move(ns);
  return r;
}

TEST_CASE("compute rpc: set_host_enabled answers as nova's manager and tells kilnd") {
  std::optional<bool> told;
  compute::ComputeRpc::Hooks hooks;
  hooks.host_enabled = [&](bool enabled) { told = enabled; };
  compute::ComputeRpc rpc(hooks);
  auto off = rpc.handle(request("set_host_enabled", "6.0", {{"enabled", false}}));
  CHECK_FALSE(off.failure.has_value());
  CHECK(off.result == "disabled");
  REQUIRE(told.has_value());
  CHECK_FALSE(*told);
  CHECK(rpc.handle(request("set_host_enabled", "6.1", {{"enabled", true}})).result == "enabled");
  CHECK(rpc.handle(request("set_host_enabled", "6.0", {{"enabled", "yes"}})).failure->class_name ==
        "InvalidInput");
}

TEST_CASE("compute rpc: unknown methods, versions and namespaces fail at once") {
  compute::ComputeRpc rpc({});
  auto unknown = rpc.handle(request("pause_instance", "6.0"));
  REQUIRE(unknown.failure.has_value());
  CHECK(unknown.failure->class_name == "NoSuchMethod");
  CHECK(rpc.handle(request("set_host_enabled", "6.2", {{"enabled", true}})).failure->class_name ==
        "UnsupportedVersion");
  CHECK(rpc.handle(request("set_host_enabled", "5.13", {{"enabled", true}})).failure->class_name ==
        "UnsupportedVersion");
  CHECK(
      rpc.handle(request("anything", "1.0", json::object(), "compute_task")).failure->class_name ==
      "UnsupportedVersion");
}

TEST_CASE("compute rpc: get_host_uptime answers what the host says") {
  compute::ComputeRpc::Hooks hooks;
  hooks.host_uptime = [] {
    return kiln::Result<std::string>(
        std::string(" 18:55:57 up 3 days,  2:03,  1 user,  load average: 0.00, 0.01, 0.05"));
  };
  compute::ComputeRpc rpc(hooks);
  auto uptime = rpc.handle(request("get_host_uptime", "6.0"));
  CHECK_FALSE(uptime.failure.has_value());
  CHECK(uptime.result == " 18:55:57 up 3 days,  2:03,  1 user,  load average: 0.00, 0.01, 0.05");

  hooks.host_uptime = [] {
    return kiln::Result<std::string>(kiln::Error::internal("uptime could not run"));
  };
  compute::ComputeRpc failing(hooks);
  auto failed = failing.handle(request("get_host_uptime", "6.0"));
  REQUIRE(failed.failure.has_value());
  CHECK(failed.failure->message == "uptime could not run");

  // Without a way to measure it, the driver's NotImplementedError, as nova's base driver.
  CHECK(compute::ComputeRpc({}).handle(request("get_host_uptime", "6.0")).failure->class_name ==
        "NotImplementedError");
}

TEST_CASE("compute rpc: baseapi ping") {
  compute::ComputeRpc rpc({});
  auto pong = rpc.handle(request("ping", "1.0", {{"arg", "hello"}}, "baseapi"));
  CHECK_FALSE(pong.failure.has_value());
  CHECK(pong.result == json{{"service", "compute"}, {"arg", "hello"}});
  CHECK(rpc.handle(request("ping", "2.0", {}, "baseapi")).failure->class_name ==
        "UnsupportedVersion");
}

TEST_CASE("compute rpc: version compatibility is oslo's") {
  CHECK(compute::versionCompatible("", "6.1"));
  CHECK(compute::versionCompatible("6.0", "6.1"));
  CHECK(compute::versionCompatible("6.1", "6.1"));
  CHECK_FALSE(compute::versionCompatible("6.2", "6.1"));
  CHECK_FALSE(compute::versionCompatible("7.0", "6.1"));
  CHECK_FALSE(compute::versionCompatible("six", "6.1"));
}

}  // namespace
