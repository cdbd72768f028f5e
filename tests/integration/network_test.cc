// Guest networking against the real kernel, libvirtd and QEMU: NICs from Nova's network_info on
// bridges and in namespaces the tests make (documentation addresses only, no uplink), the config
// drive read by the guest, DHCP from dnsmasq, hot plug, anti-spoofing, and what a delete leaves.
#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "tests/integration/kilnd_harness.h"
#include "tests/integration/test_network.h"

using kiln::testing::KilndHarness;
using kiln::testing::TestNetwork;
using nlohmann::json;

namespace {

// A bridged VIF as Neutron's linux-bridge mechanism hands it to nova-compute.
json bridgedVif(const std::string& port, const std::string& mac, const std::string& devname,
                const std::string& bridge, const std::string& cidr, const std::string& ip,
                const std::string& gateway, bool dhcp = false) {
  json subnet = {{"cidr", cidr},
                 {"gateway", {{"address", gateway}, {"type", "gateway"}, {"version", 4}}},
                 {"ips", json::array({{{"address", ip}, {"type", "fixed"}, {"version", 4}}})},
                 {"dns", json::array({{{"address", gateway}, {"type", "dns"}, {"version", 4}}})},
                 {"routes", json::array()}};
  // nova writes ipv4_dhcp into network_data.json for a subnet whose DHCP server it knows.
  if (dhcp) subnet["meta"] = {{"dhcp_server", gateway}};
  return {{"id", port},
          {"address", mac},
          {"type", "bridge"},
          {"devname", devname},
          {"vnic_type", "normal"},
          {"details", {{"port_filter", false}}},
          {"network",
           {{"id", "net-" + bridge},
            {"bridge", bridge},
            {"label", "test"},
            {"subnets", json::array({subnet})},
            {"meta", {{"mtu", 1400}}}}}};
}

std::string base64(const std::string& text) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < text.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(text[i]) << 16) |
                 (static_cast<unsigned char>(text[i + 1]) << 8) |
                 static_cast<unsigned char>(text[i + 2]);
    for (int s : {18, 12, 6, 0}) out += alphabet[(v >> s) & 63];
  }
  if (i < text.size()) {
    unsigned v = static_cast<unsigned char>(text[i]) << 16;
    if (i + 1 < text.size()) v |= static_cast<unsigned char>(text[i + 1]) << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += i + 1 < text.size() ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<json> hostLink(const std::string& name) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = {"ip", "-j", "-d", "link", "show", "dev", name};
  auto r = runner.run(spec);
  if (!r || !r->succeeded()) return std::nullopt;
  auto doc = json::parse(r->stdout_text, nullptr, false);
  if (!doc.is_array() || doc.empty()) return std::nullopt;
  return doc[0];
}

bool nftChainExists(const std::string& devname) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = {"nft", "list", "chain", "netdev", "kiln", "vif-" + devname};
  auto r = runner.run(spec);
  return r && r->succeeded();
}

const char* kPublicKey =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOiKKC7lLUcyvJMo1gjvMr56XvOq814Hhin0OuYQLLHH "
    "tester@kiln";

}  // namespace

TEST_CASE("a bridged NIC and a config drive: the guest gets its MAC, MTU, address and identity",
          "[integration][network]") {
  TestNetwork net("0", "198.51.100.1/24");
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "4e7d0a51-6c1b-4f0e-9a43-0b5e6f700001";
  const std::string mac = "fa:16:3e:00:00:0a";
  json body = {{"uuid", uuid},
               {"name", "Net Guest"},
               {"flavor", "test.small"},
               {"image", {{"id", "guest"}}},
               {"config_drive", true},
               {"hostname", "kiln-net-guest"},
               {"user_data", base64("#!/bin/sh\necho KILN-USERDATA-MARK:hello-cloud\n")},
               {"public_keys", {{"tester", kPublicKey}}},
               {"network_info",
                json::array({bridgedVif("port-a-0001", mac, "kntt0a", net.bridge(),
                                        "198.51.100.0/24", "198.51.100.10", "198.51.100.1")})}};
  auto created = kilnd.api("POST", "/v1/instances", body.dump());
  INFO(created.body);
  REQUIRE(created.status == 202);
  json rec = kilnd.waitForState(uuid, "active");
  REQUIRE(rec["interfaces"].size() == 1);
  CHECK(rec["interfaces"][0]["port_id"] == "port-a-0001");
  CHECK(rec["interfaces"][0]["mac_address"] == mac);
  CHECK(rec["interfaces"][0]["devname"] == "kntt0a");
  CHECK(rec["interfaces"][0]["bridge"] == net.bridge());
  CHECK(rec["interfaces"][0]["fixed_ips"] == json::array({"198.51.100.10"}));
  CHECK_FALSE(rec["interfaces"][0].contains("vif"));

  // The host side: kiln's tap, on the bridge, with the network's MTU and kiln's mark.
  auto tap = hostLink("kntt0a");
  REQUIRE(tap);
  CHECK((*tap)["mtu"] == 1400);
  CHECK((*tap).value("master", "") == net.bridge());
  CHECK((*tap).value("ifalias", "") == "kiln:" + uuid + ":port-a-0001");
  CHECK(nftChainExists("kntt0a"));

  std::string console = kilnd.waitForConsole(uuid, "KILN-NET eth0");
  INFO(console);
  CHECK(console.find("KILN-NIC eth0 " + mac + " 1400") != std::string::npos);
  CHECK(console.find("KILN-CONFIG-DRIVE") != std::string::npos);
  CHECK(console.find("KILN-UUID " + uuid) != std::string::npos);
  CHECK(console.find("KILN-HOSTNAME kiln-net-guest") != std::string::npos);
  CHECK(console.find("KILN-KEY tester") != std::string::npos);
  CHECK(console.find("KILN-USERDATA KILN-USERDATA-MARK:hello-cloud") != std::string::npos);
  CHECK(console.find("KILN-NET eth0 " + mac + " 198.51.100.10/255.255.255.0") != std::string::npos);
  // A namespace on the same bridge reaches the guest at its fixed IP.
  CHECK(net.pingFromNs("198.51.100.10"));

  const std::string dir = kilnd.statePath() + "/instances/" + uuid;
  CHECK(std::filesystem::exists(dir + "/disk.config"));
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
  // Nothing is left: no tap (so no bridge port), no filter, no ISO.
  CHECK_FALSE(hostLink("kntt0a"));
  CHECK_FALSE(nftChainExists("kntt0a"));
  CHECK_FALSE(std::filesystem::exists(dir));
  // The bridge was the test's: kiln never removes a bridge.
  CHECK(hostLink(net.bridge()));
}

TEST_CASE("DHCP from dnsmasq, then a NIC hot-plugged on a second network and unplugged",
          "[integration][network]") {
  TestNetwork first("1", "198.51.100.1/24");
  TestNetwork second("2", "203.0.113.1/24");
  const std::string mac1 = "fa:16:3e:00:01:01";
  const std::string mac2 = "fa:16:3e:00:02:02";
  first.startDhcp(mac1, "198.51.100.20");
  second.startDhcp(mac2, "203.0.113.20");
  KilndHarness kilnd("[DEFAULT]\ninterface_detach_timeout = 60\n");
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "4e7d0a51-6c1b-4f0e-9a43-0b5e6f700002";
  json body = {{"uuid", uuid},
               {"name", "dhcp"},
               {"flavor", "test.small"},
               {"image", {{"id", "guest"}}},
               {"config_drive", true},
               {"network_info", json::array({bridgedVif("port-b-0001", mac1, "kntt1a",
                                                        first.bridge(), "198.51.100.0/24",
                                                        "198.51.100.20", "198.51.100.1", true)})}};
  auto created = kilnd.api("POST", "/v1/instances", body.dump());
  INFO(created.body);
  REQUIRE(created.status == 202);
  kilnd.waitForState(uuid, "active");
  std::string console = kilnd.waitForConsole(uuid, "KILN-DHCP eth0", std::chrono::seconds(120));
  INFO(console);
  REQUIRE(console.find("KILN-DHCP eth0 198.51.100.20") != std::string::npos);
  CHECK(first.pingFromNs("198.51.100.20"));
  kilnd.waitForConsole(uuid, "KILN-READY");

  // Hot plug: the seed's "public IP address" on a running instance.
  json vif2 = bridgedVif("port-b-0002", mac2, "kntt2a", second.bridge(), "203.0.113.0/24",
                         "203.0.113.20", "203.0.113.1");
  auto attach = kilnd.api("POST", "/v1/instances/" + uuid + "/interfaces", vif2.dump());
  INFO(attach.body);
  REQUIRE(attach.status == 202);
  CHECK(attach.json["task_state"] == "interface_attaching");
  json rec = kilnd.waitIdle(uuid);
  INFO(rec.dump(2));
  REQUIRE(rec["interfaces"].size() == 2);
  CHECK(rec["interfaces"][1]["port_id"] == "port-b-0002");
  console = kilnd.waitForConsole(uuid, "KILN-DHCP eth1", std::chrono::seconds(120));
  CHECK(console.find("KILN-NIC-ADDED eth1 " + mac2 + " 1400") != std::string::npos);
  CHECK(console.find("KILN-DHCP eth1 203.0.113.20") != std::string::npos);
  CHECK(second.pingFromNs("203.0.113.20"));
  auto again = kilnd.api("POST", "/v1/instances/" + uuid + "/interfaces", vif2.dump());
  CHECK(again.status == 409);

  auto detach = kilnd.api("DELETE", "/v1/instances/" + uuid + "/interfaces/port-b-0002");
  INFO(detach.body);
  REQUIRE(detach.status == 202);
  rec = kilnd.waitIdle(uuid);
  INFO(rec.dump(2));
  CHECK(rec.value("action_error", json()).is_null());
  REQUIRE(rec["interfaces"].size() == 1);
  kilnd.waitForConsole(uuid, "KILN-NIC-REMOVED eth1");
  CHECK_FALSE(hostLink("kntt2a"));
  CHECK_FALSE(nftChainExists("kntt2a"));
  CHECK_FALSE(second.pingFromNs("203.0.113.20", 2));
  CHECK(kilnd.api("DELETE", "/v1/instances/" + uuid + "/interfaces/port-b-0002").status == 404);

  // A stop and start keeps the remaining NIC (the tap outlives the guest's power cycle).
  REQUIRE(kilnd.api("POST", "/v1/instances/" + uuid + "/action", R"({"stop": {}})").status == 202);
  CHECK(kilnd.waitIdle(uuid)["state"] == "stopped");
  CHECK(hostLink("kntt1a"));
  REQUIRE(kilnd.api("POST", "/v1/instances/" + uuid + "/action", R"({"start": {}})").status == 202);
  CHECK(kilnd.waitIdle(uuid)["state"] == "active");

  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
  CHECK_FALSE(hostLink("kntt1a"));
}

TEST_CASE("anti-spoofing: a guest sends only from its MAC and fixed IP unless Neutron filters",
          "[integration][network]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  // port_filter false: kiln filters. port_filter true (Neutron's L2 agent filters): kiln adds
  // nothing, so the same spoofing gets through (the control case).
  for (bool neutron_filters : {false, true}) {
    DYNAMIC_SECTION("port_filter = " << std::boolalpha << neutron_filters) {
      TestNetwork net("3", "198.51.100.1/24");
      net.watchSources("0a:00:00:00:00:99", "198.51.100.99");
      const std::string uuid = neutron_filters ? "4e7d0a51-6c1b-4f0e-9a43-0b5e6f700004"
                                               : "4e7d0a51-6c1b-4f0e-9a43-0b5e6f700003";
      json vif = bridgedVif("port-c-0001", "fa:16:3e:00:03:03", "kntt3a", net.bridge(),
                            "198.51.100.0/24", "198.51.100.30", "198.51.100.1");
      vif["details"]["port_filter"] = neutron_filters;
      json body = {{"uuid", uuid},
                   {"name", "spoof"},
                   {"flavor", "test.small"},
                   {"image", {{"id", "guest"}}},
                   {"config_drive", true},
                   {"user_data", base64("KILN-SPOOF-TEST 198.51.100.1\n")},
                   {"network_info", json::array({vif})}};
      REQUIRE(kilnd.api("POST", "/v1/instances", body.dump()).status == 202);
      kilnd.waitForState(uuid, "active");
      std::string console =
          kilnd.waitForConsole(uuid, "KILN-SPOOF-DONE", std::chrono::seconds(150));
      INFO(console);
      CHECK(console.find("KILN-PING-OWN ok") != std::string::npos);
      CHECK(nftChainExists("kntt3a") == !neutron_filters);
      const std::string expected = neutron_filters ? "ok" : "fail";
      CHECK(console.find("KILN-PING-SPOOF-IP " + expected) != std::string::npos);
      CHECK(console.find("KILN-PING-SPOOF-MAC " + expected) != std::string::npos);
      // What the namespace saw from the spoofed sources: nothing at all when kiln filters.
      const auto from_ip = net.counted("from_ip") + net.counted("from_arp_ip");
      const auto from_mac = net.counted("from_mac");
      if (neutron_filters) {
        CHECK(from_ip > 0);
        CHECK(from_mac > 0);
      } else {
        CHECK(from_ip == 0);
        CHECK(from_mac == 0);
      }
      REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
      REQUIRE(kilnd.waitGone(uuid));
      CHECK_FALSE(hostLink("kntt3a"));
    }
  }
}

TEST_CASE("bad VIFs are refused with a 400 naming the field, and nothing is created",
          "[integration][network]") {
  TestNetwork net("4", "198.51.100.1/24");
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const json good = bridgedVif("port-d-0001", "fa:16:3e:00:04:04", "kntt4a", net.bridge(),
                               "198.51.100.0/24", "198.51.100.40", "198.51.100.1");
  struct Case {
    const char* what;
    json vif;
    const char* field;
  };
  std::vector<Case> cases;
  json v = good;
  v["address"] = "01:00:5e:00:00:01";
  cases.push_back({"a multicast MAC", v, "address"});
  v = good;
  v["devname"] = "tap/../../x";
  cases.push_back({"a devname with '/'", v, "devname"});
  v = good;
  v["devname"] = "tap0123456789abc";
  cases.push_back({"a 16-character devname", v, "devname"});
  v = good;
  v["network"]["bridge"] = "br with spaces";
  cases.push_back({"a bridge name with spaces", v, "bridge"});
  v = good;
  v["network"]["meta"]["mtu"] = 70000;
  cases.push_back({"an MTU of 70000", v, "mtu"});
  v = good;
  v["type"] = "vhostuser";
  cases.push_back({"an unknown VIF type", v, "vhostuser"});
  int n = 0;
  for (const auto& c : cases) {
    INFO(c.what);
    const std::string uuid = fmt::format("4e7d0a51-6c1b-4f0e-9a43-0b5e6f7001{:02d}", ++n);
    json body = {{"uuid", uuid},
                 {"name", "bad"},
                 {"flavor", "test.small"},
                 {"image", {{"id", "guest"}}},
                 {"network_info", json::array({c.vif})}};
    auto r = kilnd.api("POST", "/v1/instances", body.dump());
    INFO(r.body);
    CHECK(r.status == 400);
    CHECK(r.json.dump().find(c.field) != std::string::npos);
    CHECK(kilnd.api("GET", "/v1/instances/" + uuid).status == 404);
  }
  CHECK_FALSE(hostLink("kntt4a"));
  CHECK_FALSE(std::filesystem::exists(kilnd.statePath() + "/instances/" +
                                      "4e7d0a51-6c1b-4f0e-9a43-0b5e6f700101"));
}
