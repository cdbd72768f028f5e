#include "drivers/network/spoof_filter_rules.h"

#include <catch2/catch.hpp>

using namespace kiln::drivers::network;
using nlohmann::json;

namespace {

kiln::drivers::NicSpec nic(std::vector<std::string> fixed_ips) {
  kiln::drivers::NicSpec n;
  n.port_id = "p1";
  n.mac = "FA:16:3E:0A:BC:01";
  n.devname = "tapp1";
  n.fixed_ips = std::move(fixed_ips);
  return n;
}

json rule(json expr) {
  return {{"add",
           {{"rule",
             {{"family", "netdev"}, {"table", "kiln"}, {"chain", "vif-tapp1"}, {"expr", expr}}}}}};
}

json match(const char* proto, const char* field, json right, const char* op = "==") {
  return {{"match",
           {{"op", op},
            {"left", {{"payload", {{"protocol", proto}, {"field", field}}}}},
            {"right", right}}}};
}

const json kAccept = {{"accept", nullptr}};
const json kDrop = {{"drop", nullptr}};

}  // namespace

TEST_CASE("The spoofing filter of a dual-stack NIC rule by rule", "[network]") {
  auto r = spoofFilterRuleset(nic({"198.51.100.10", "2001:DB8:0:0::10", "203.0.113.7"}));
  REQUIRE(r.ok());
  const json& cmds = (*r)["nftables"];
  json chain_ref = {{"family", "netdev"}, {"table", "kiln"}, {"name", "vif-tapp1"}};
  json chain = chain_ref;
  chain.update(
      {{"type", "filter"}, {"hook", "ingress"}, {"dev", "tapp1"}, {"prio", 0}, {"policy", "drop"}});
  json v4_or_any = {{"set", {"0.0.0.0", "198.51.100.10", "203.0.113.7"}}};
  json expected = json::array({
      {{"add", {{"table", {{"family", "netdev"}, {"name", "kiln"}}}}}},
      {{"add", {{"chain", chain}}}},
      {{"flush", {{"chain", chain_ref}}}},
      rule({match("ether", "saddr", "fa:16:3e:0a:bc:01", "!="), kDrop}),
      rule({match("arp", "htype", 1), match("arp", "ptype", 0x0800), match("arp", "hlen", 6),
            match("arp", "plen", 4), match("arp", "saddr ether", "fa:16:3e:0a:bc:01"),
            match("arp", "saddr ip", v4_or_any), kAccept}),
      rule({match("ip", "saddr", v4_or_any), match("udp", "sport", 68), match("udp", "dport", 67),
            kAccept}),
      rule({match("udp", "sport", {{"set", {67, 547}}}), kDrop}),
      rule({match("ip", "saddr", {{"set", {"198.51.100.10", "203.0.113.7"}}}), kAccept}),
      rule({match("icmpv6", "type", "nd-router-advert"), kDrop}),
      rule({match("ip6", "saddr", "::"),
            match("icmpv6", "type", {{"set", {"nd-neighbor-solicit", "mld2-listener-report"}}}),
            kAccept}),
      rule({match("ip6", "saddr", {{"set", {"fe80::f816:3eff:fe0a:bc01", "2001:db8::10"}}}),
            kAccept}),
  });
  REQUIRE(cmds.size() == expected.size());
  for (std::size_t i = 0; i < cmds.size(); ++i) {
    CAPTURE(i, cmds[i].dump());
    CHECK(cmds[i] == expected[i]);
  }
}

TEST_CASE("Without fixed IPs the filter accepts no IPv4 source but 0.0.0.0", "[network]") {
  auto r = spoofFilterRuleset(nic({}));
  REQUIRE(r.ok());
  std::string text = r->dump();
  const json& cmds = (*r)["nftables"];
  // table, chain, flush, MAC, ARP, DHCP, server ports, RA, DAD, IPv6 sources: no IPv4 accept.
  CHECK(cmds.size() == 10);
  CHECK(cmds[4]["add"]["rule"]["expr"][5] == match("arp", "saddr ip", "0.0.0.0"));
  CHECK(cmds[5]["add"]["rule"]["expr"][0] == match("ip", "saddr", "0.0.0.0"));
  CHECK(cmds[9]["add"]["rule"]["expr"][0] == match("ip6", "saddr", "fe80::f816:3eff:fe0a:bc01"));
}

TEST_CASE("A fixed IP or MAC that does not parse is refused before anything runs", "[network]") {
  auto bad_ip = spoofFilterRuleset(nic({"198.51.100.10", "198.51.100.300"}));
  REQUIRE_FALSE(bad_ip.ok());
  CHECK(bad_ip.error().code == kiln::ErrorCode::kInvalidArgument);
  CHECK(bad_ip.error().message ==
        "The fixed IP '198.51.100.300' of port 'p1' is neither an IPv4 nor an IPv6 address");
  auto n = nic({});
  n.mac = "fa:16:3e:0a:bc";
  CHECK(spoofFilterRuleset(n).error().message ==
        "The MAC address 'fa:16:3e:0a:bc' of port 'p1' is not of the form aa:bb:cc:dd:ee:ff");
}

TEST_CASE("Filter chains are named for their tap", "[network]") {
  CHECK(filterChainName("tap0") == "vif-tap0");
  CHECK(devnameOfFilterChain("vif-tap0") == "tap0");
  CHECK_FALSE(devnameOfFilterChain("vif-"));
  CHECK_FALSE(devnameOfFilterChain("input"));
  CHECK(deleteFilterCommand("tap0") ==
        json::parse(R"({"nftables":[{"delete":{"chain":{"family":"netdev","table":"kiln",
                      "name":"vif-tap0"}}}]})"));
}
