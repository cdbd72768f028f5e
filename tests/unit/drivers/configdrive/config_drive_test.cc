// meta_data.json and network_data.json against what nova writes for the same instance: the
// expected documents are nova's (nova/api/metadata/base.py, nova/virt/netutils.py) for the
// network_info given, written out by hand.
#include <catch2/catch.hpp>

#include <string>

#include "drivers/configdrive/config_drive.h"
#include "drivers/configdrive/config_drive_layout.h"

using kiln::drivers::configdrive::configDriveFiles;
using kiln::drivers::configdrive::ConfigDriveInput;
using kiln::drivers::configdrive::metaDataJson;
using kiln::drivers::configdrive::networkDataJson;
using nlohmann::json;

namespace {

ConfigDriveInput sampleInput() {
  ConfigDriveInput input;
  input.uuid = "0b6f4c1e-7d2a-4e52-9a8e-3f1c2d4b5a69";
  input.name = "web-1";
  input.hostname = "web-1";
  input.project_id = "6b3c1f0e9d8a4b7c8e2f1a0b9c8d7e6f";
  input.launch_index = 2;
  input.public_keys = {{"alice", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice@example"},
                       {"bob", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob@example"}};
  return input;
}

// A VIF as nova's network model serialises it.
json bridgedVif() {
  return json::parse(R"({
    "id": "5f0e8a4c-1b2d-4c3e-9f8a-7b6c5d4e3f21",
    "address": "fa:16:3e:11:22:33",
    "type": "bridge",
    "devname": "tap5f0e8a4c-1b",
    "vnic_type": "normal",
    "details": {},
    "network": {
      "id": "c3a1b2d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
      "bridge": "brq-c3a1b2d4",
      "label": "private",
      "meta": {"mtu": 1450},
      "subnets": [{
        "cidr": "198.51.100.0/24",
        "version": 4,
        "gateway": {"address": "198.51.100.1", "type": "gateway", "version": 4},
        "ips": [{"address": "198.51.100.10", "type": "fixed", "version": 4}],
        "dns": [{"address": "198.51.100.53", "type": "dns", "version": 4}],
        "routes": [{"cidr": "203.0.113.0/25",
                    "gateway": {"address": "198.51.100.254", "type": "gateway"}}],
        "meta": {}
      }]
    }
  })");
}

json dhcpVif() {
  return json::parse(R"({
    "id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
    "address": "fa:16:3e:44:55:66",
    "type": "tap",
    "network": {
      "id": "d4c3b2a1-0f9e-4d8c-7b6a-5f4e3d2c1b0a",
      "label": "dhcp-net",
      "meta": {},
      "subnets": [{
        "cidr": "203.0.113.0/24",
        "gateway": "203.0.113.1",
        "ips": [{"address": "203.0.113.20", "type": "fixed"}],
        "dns": [],
        "routes": [],
        "meta": {"dhcp_server": "203.0.113.2"}
      }]
    }
  })");
}

}  // namespace

TEST_CASE("meta_data.json carries nova's fields", "[configdrive]") {
  json md = metaDataJson(sampleInput());
  CHECK(md["uuid"] == "0b6f4c1e-7d2a-4e52-9a8e-3f1c2d4b5a69");
  CHECK(md["name"] == "web-1");
  CHECK(md["hostname"] == "web-1");
  CHECK(md["project_id"] == "6b3c1f0e9d8a4b7c8e2f1a0b9c8d7e6f");
  CHECK(md["launch_index"] == 2);
  CHECK(md["availability_zone"].is_null());
  CHECK(md["devices"] == json::array());
  CHECK(md["public_keys"] == json{{"alice", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice@example"},
                                  {"bob", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob@example"}});
  CHECK(md["keys"] == json::parse(R"([
          {"name": "alice", "type": "ssh", "data": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice@example"},
          {"name": "bob", "type": "ssh", "data": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ bob@example"}
        ])"));

  // 512 random bytes in base64: 171 groups of four characters, the last holding two bytes and
  // one "=".
  std::string seed = md["random_seed"].get<std::string>();
  CHECK(seed.size() == 684);
  CHECK(seed[682] != '=');
  CHECK(seed[683] == '=');
  CHECK(
      seed.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
      std::string::npos);
  CHECK(metaDataJson(sampleInput())["random_seed"] != seed);
}

TEST_CASE("meta_data.json has no keys without key pairs, and names a given zone", "[configdrive]") {
  ConfigDriveInput input = sampleInput();
  input.public_keys.clear();
  input.availability_zone = "zone-a";
  json md = metaDataJson(input);
  CHECK_FALSE(md.contains("public_keys"));
  CHECK_FALSE(md.contains("keys"));
  CHECK(md["availability_zone"] == "zone-a");
}

TEST_CASE("network_data.json for a bridged VIF with a static IPv4 address", "[configdrive]") {
  json expected = json::parse(R"({
    "links": [{"id": "tap5f0e8a4c-1b", "vif_id": "5f0e8a4c-1b2d-4c3e-9f8a-7b6c5d4e3f21",
               "type": "bridge", "mtu": 1450, "ethernet_mac_address": "fa:16:3e:11:22:33"}],
    "networks": [{
      "id": "network0", "type": "ipv4", "link": "tap5f0e8a4c-1b",
      "ip_address": "198.51.100.10", "netmask": "255.255.255.0",
      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "198.51.100.1"},
                 {"network": "203.0.113.0", "netmask": "255.255.255.128",
                  "gateway": "198.51.100.254"}],
      "network_id": "c3a1b2d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
      "services": [{"type": "dns", "address": "198.51.100.53"}]
    }],
    "services": [{"type": "dns", "address": "198.51.100.53"}]
  })");
  CHECK(networkDataJson(json::array({bridgedVif()})) == expected);
}

TEST_CASE("network_data.json for a subnet with a DHCP server", "[configdrive]") {
  // Neutron's enable_dhcp reaches nova as the subnet's meta.dhcp_server; the fixed IP is still
  // listed, but the guest is told to ask DHCP for it.
  json expected = json::parse(R"({
    "links": [{"id": "interface0", "vif_id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
               "type": "tap", "mtu": null, "ethernet_mac_address": "fa:16:3e:44:55:66"}],
    "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "interface0",
                  "network_id": "d4c3b2a1-0f9e-4d8c-7b6a-5f4e3d2c1b0a"}],
    "services": []
  })");
  CHECK(networkDataJson(json::array({dhcpVif()})) == expected);
}

TEST_CASE("network_data.json for two VIFs numbers links and networks in order", "[configdrive]") {
  json second = bridgedVif();
  second["id"] = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
  second["address"] = "fa:16:3e:77:88:99";
  second["type"] = "ethernet";  // shown to guests as "phy"
  second.erase("devname");
  second["network"]["meta"] = json::object();
  second["network"]["mtu"] = 9000;  // a hand-written VIF without "meta" means the same
  auto& subnet = second["network"]["subnets"][0];
  subnet["ips"][0]["address"] = "198.51.100.11";
  subnet["gateway"] = "198.51.100.1";  // the plain-string form
  subnet["routes"] = json::array();

  json data = networkDataJson(json::array({bridgedVif(), second}));
  REQUIRE(data["links"].size() == 2);
  CHECK(data["links"][1] == json{{"id", "interface1"},
                                 {"vif_id", "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"},
                                 {"type", "phy"},
                                 {"mtu", 9000},
                                 {"ethernet_mac_address", "fa:16:3e:77:88:99"}});
  REQUIRE(data["networks"].size() == 2);
  CHECK(data["networks"][0]["id"] == "network0");
  CHECK(data["networks"][0]["link"] == "tap5f0e8a4c-1b");
  CHECK(data["networks"][1]["id"] == "network1");
  CHECK(data["networks"][1]["link"] == "interface1");
  CHECK(data["networks"][1]["ip_address"] == "198.51.100.11");
  CHECK(
      data["networks"][1]["routes"] ==
      json::parse(R"([{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "198.51.100.1"}])"));
  // The same DNS server on both subnets is one service.
  CHECK(data["services"] == json::parse(R"([{"type": "dns", "address": "198.51.100.53"}])"));
}

TEST_CASE("network_data.json for IPv6 subnets", "[configdrive]") {
  json vif = bridgedVif();
  json v6 = json::parse(R"({
    "cidr": "2001:db8:0:1::/64",
    "version": 6,
    "gateway": {"address": "2001:db8:0:1::1", "type": "gateway", "version": 6},
    "ips": [{"address": "2001:db8:0:1::10", "type": "fixed", "version": 6}],
    "dns": [{"address": "2001:db8::53"}],
    "routes": [{"cidr": "2001:db8:ff::/48", "gateway": {"address": "2001:db8:0:1::fe"}}],
    "meta": {}
  })");
  vif["network"]["subnets"].push_back(v6);

  SECTION("static") {
    json data = networkDataJson(json::array({vif}));
    REQUIRE(data["networks"].size() == 2);
    CHECK(data["networks"][1] == json::parse(R"({
      "id": "network1", "type": "ipv6", "link": "tap5f0e8a4c-1b",
      "ip_address": "2001:db8:0:1::10", "netmask": "ffff:ffff:ffff:ffff::",
      "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8:0:1::1"},
                 {"network": "2001:db8:ff::", "netmask": "ffff:ffff:ffff::",
                  "gateway": "2001:db8:0:1::fe"}],
      "network_id": "c3a1b2d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
      "services": [{"type": "dns", "address": "2001:db8::53"}]
    })"));
    CHECK(data["services"] == json::parse(R"([{"type": "dns", "address": "198.51.100.53"},
                                              {"type": "dns", "address": "2001:db8::53"}])"));
  }
  SECTION("an address mode names the type, even with a DHCP server") {
    vif["network"]["subnets"][1]["meta"] = {{"ipv6_address_mode", "slaac"},
                                            {"dhcp_server", "2001:db8:0:1::2"}};
    json data = networkDataJson(json::array({vif}));
    CHECK(data["networks"][1]["type"] == "ipv6_slaac");
    CHECK(data["networks"][1]["ip_address"] == "2001:db8:0:1::10");
  }
  SECTION("without an address mode a DHCP server makes ipv6_dhcp") {
    vif["network"]["subnets"][1]["meta"] = {{"dhcp_server", "2001:db8:0:1::2"}};
    json data = networkDataJson(json::array({vif}));
    CHECK(data["networks"][1] == json{{"id", "network1"},
                                      {"type", "ipv6_dhcp"},
                                      {"link", "tap5f0e8a4c-1b"},
                                      {"network_id", "c3a1b2d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"}});
  }
}

TEST_CASE("network_data.json skips what nova skips and survives missing fields", "[configdrive]") {
  CHECK(networkDataJson(json::array()) == json::object());

  json no_subnets = bridgedVif();
  no_subnets["network"]["subnets"] = json::array();
  json no_ips = dhcpVif();
  no_ips["network"]["subnets"][0]["ips"] = json::array();
  json bare = json::parse(R"({"id": "p", "network": {"subnets": [{"cidr": "198.51.100.0/24",
                              "ips": [{"address": "198.51.100.9"}]}]}})");
  json data = networkDataJson(json::array({no_subnets, no_ips, bare, json::object()}));
  // The VIF without subnets is no interface; the one without a fixed IP is a link only.
  REQUIRE(data["links"].size() == 2);
  CHECK(data["links"][0]["id"] == "interface0");
  CHECK(data["links"][1] == json{{"id", "interface1"},
                                 {"vif_id", "p"},
                                 {"type", "phy"},
                                 {"mtu", nullptr},
                                 {"ethernet_mac_address", nullptr}});
  REQUIRE(data["networks"].size() == 1);
  CHECK(data["networks"][0] == json{{"id", "network0"},
                                    {"type", "ipv4"},
                                    {"link", "interface1"},
                                    {"ip_address", "198.51.100.9"},
                                    {"netmask", "255.255.255.0"},
                                    {"routes", json::array()},
                                    {"network_id", nullptr},
                                    {"services", json::array()}});
}

TEST_CASE("the drive's tree follows nova's versions", "[configdrive]") {
  ConfigDriveInput input = sampleInput();
  input.user_data = "#cloud-config\n";
  auto files = configDriveFiles(input);
  REQUIRE(files);
  auto find = [&](const std::string& path) -> const std::string* {
    for (const auto& f : *files) {
      if (f.path == path) return &f.contents;
    }
    return nullptr;
  };
  REQUIRE(find("openstack/2012-08-10/meta_data.json") != nullptr);
  json folsom = json::parse(*find("openstack/2012-08-10/meta_data.json"));
  CHECK_FALSE(folsom.contains("random_seed"));
  CHECK_FALSE(folsom.contains("project_id"));
  CHECK(find("openstack/2012-08-10/network_data.json") == nullptr);
  CHECK(find("openstack/2012-08-10/vendor_data.json") == nullptr);
  CHECK(*find("openstack/2012-08-10/user_data") == "#cloud-config\n");
  CHECK(find("openstack/2013-10-17/vendor_data.json") != nullptr);
  CHECK(find("openstack/2015-10-15/network_data.json") != nullptr);
  CHECK(find("openstack/2016-06-30/vendor_data2.json") == nullptr);
  CHECK(*find("openstack/2016-10-06/vendor_data2.json") == "{}");
  json latest = json::parse(*find("openstack/latest/meta_data.json"));
  CHECK(latest.contains("random_seed"));
  CHECK(latest["devices"] == json::array());
  CHECK(*find("openstack/latest/network_data.json") == "{}");
}
