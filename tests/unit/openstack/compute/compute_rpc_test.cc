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
  compute::ComputeRpc rpc({[&](bool enabled) { told = enabled; }});
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
