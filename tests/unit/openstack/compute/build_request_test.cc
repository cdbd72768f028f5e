// build_and_run_instance's Instance and arguments as kiln's launch: what Nova sends is taken
// apart here, and what kiln cannot do yet is refused with a reason the fault will quote.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "openstack/compute/instance_operations.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack;

json primitive(const std::string& name, const std::string& version, json data) {
  return {{"nova_object.name", name},
          {"nova_object.namespace", "nova"},
          {"nova_object.version", version},
          {"nova_object.data", std::move(data)}};
}

json listOf(const std::string& name, const std::string& item, std::vector<json> objects) {
  json list = json::array();
  for (auto& o : objects) list.push_back(primitive(item, "1.0", std::move(o)));
  return primitive(name, "1.0", {{"objects", list}});
}

nova::NovaObject instance(json extra = json::object()) {
  json data = {{"uuid", "5d7e1a43-70b4-4c5b-9a0e-1f2a3b4c5d6e"},
               {"display_name", "web-1"},
               {"hostname", "web-1"},
               {"project_id", "0a0b6e4ad0da400cbd11a25ddf1a8795"},
               {"image_ref", "449d5086-e47a-4b55-bebf-70721db00fc4"},
               {"config_drive", ""},
               {"availability_zone", "nova"},
               {"user_data", nullptr},
               {"key_data", nullptr},
               {"flavor", primitive("Flavor", "1.2",
                                    {{"name", "kiln.tiny"},
                                     {"vcpus", 1},
                                     {"memory_mb", 128},
                                     {"root_gb", 1},
                                     {"ephemeral_gb", 0},
                                     {"swap", 0},
                                     {"extra_specs", {{"hw:cpu_policy", "shared"}}}})}};
  data.update(extra);
  auto object = nova::NovaObject::fromPrimitive(primitive("Instance", "2.7", data));
  REQUIRE(object.ok());
  return *object;
}

const json kContext = {{"auth_token", "gAAAA-token"}, {"project_id", "p"}};

TEST_CASE("build request: the instance's flavor, image, owner and token") {
  json args = {{"requested_networks",
                listOf("NetworkRequestList", "NetworkRequest", {{{"network_id", "none"}}})}};
  auto built = compute::buildRequestFrom(instance(), kContext, args);
  REQUIRE(built.ok());
  CHECK(built->uuid == "5d7e1a43-70b4-4c5b-9a0e-1f2a3b4c5d6e");
  CHECK(built->name == "web-1");
  CHECK(built->project_id == "0a0b6e4ad0da400cbd11a25ddf1a8795");
  CHECK(built->token == "gAAAA-token");
  CHECK(built->image_id == "449d5086-e47a-4b55-bebf-70721db00fc4");
  CHECK(built->flavor_name == "kiln.tiny");
  CHECK(built->memory_mb == 128);
  CHECK(built->extra_specs.at("hw:cpu_policy") == "shared");
  CHECK_FALSE(built->config_drive);
  CHECK_FALSE(built->user_data.has_value());
  CHECK(built->public_keys.empty());
}

TEST_CASE("build request: config drive, user data and the key pair") {
  auto built = compute::buildRequestFrom(instance({{"config_drive", "True"},
                                                   {"user_data", "IyEvYmluL3NoCg=="},
                                                   {"key_name", "mine"},
                                                   {"key_data", "ssh-ed25519 AAAAC3 me"}}),
                                         kContext, json::object());
  REQUIRE(built.ok());
  CHECK(built->config_drive);
  CHECK(built->user_data == "IyEvYmluL3NoCg==");
  CHECK(built->public_keys.at("mine") == "ssh-ed25519 AAAAC3 me");
}

TEST_CASE("build request: what kiln cannot do yet is refused with the reason") {
  json networks = {{"requested_networks",
                    listOf("NetworkRequestList", "NetworkRequest", {{{"network_id", "auto"}}})}};
  auto no_neutron = compute::buildRequestFrom(instance(), kContext, networks);
  REQUIRE_FALSE(no_neutron.ok());
  CHECK(no_neutron.error().message.find("no Neutron") != std::string::npos);

  json volumes = {
      {"block_device_mapping", listOf("BlockDeviceMappingList", "BlockDeviceMapping",
                                      {{{"destination_type", "volume"}, {"volume_id", "vol-1"}}})}};
  auto no_volumes = compute::buildRequestFrom(instance(), kContext, volumes);
  REQUIRE_FALSE(no_volumes.ok());
  CHECK(no_volumes.error().message.find("vol-1") != std::string::npos);

  auto swap = instance();
  json flavor = swap.get("flavor");
  flavor["nova_object.data"]["swap"] = 512;
  swap.set("flavor", flavor);
  CHECK_FALSE(compute::buildRequestFrom(swap, kContext, json::object()).ok());

  CHECK_FALSE(
      compute::buildRequestFrom(instance({{"image_ref", ""}}), kContext, json::object()).ok());
}

}  // namespace
