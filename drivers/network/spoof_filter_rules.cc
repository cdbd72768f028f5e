#include "drivers/network/spoof_filter_rules.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

#include <vector>

#include "drivers/network/mac_address.h"

namespace kiln::drivers::network {

using nlohmann::json;

namespace {

json payload(std::string_view protocol, std::string_view field) {
  return {{"payload", {{"protocol", protocol}, {"field", field}}}};
}

json match(std::string_view protocol, std::string_view field, json right,
           std::string_view op = "==") {
  return {{"match", {{"op", op}, {"left", payload(protocol, field)}, {"right", std::move(right)}}}};
}

// nft refuses a one-element anonymous set in some places and an empty one everywhere; callers
// never pass an empty list.
json oneOrSet(const std::vector<std::string>& values) {
  if (values.size() == 1) return values.front();
  return {{"set", values}};
}

json verdict(std::string_view v) { return {{v, nullptr}}; }

json chainRef(std::string_view devname) {
  return {{"family", kFilterFamily}, {"table", kFilterTable}, {"name", filterChainName(devname)}};
}

json rule(std::string_view devname, json expr) {
  return {{"add",
           {{"rule",
             {{"family", kFilterFamily},
              {"table", kFilterTable},
              {"chain", filterChainName(devname)},
              {"expr", std::move(expr)}}}}}};
}

// The canonical text form, so the ruleset does not depend on how the caller spelled it.
std::optional<std::string> canonical(int family, const std::string& text) {
  unsigned char buf[sizeof(in6_addr)] = {};
  if (::inet_pton(family, text.c_str(), buf) != 1) return std::nullopt;
  char out[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, buf, out, sizeof out);
  return std::string(out);
}

}  // namespace

std::string filterChainName(std::string_view devname) {
  return fmt::format("{}{}", kFilterChainPrefix, devname);
}

std::optional<std::string> devnameOfFilterChain(std::string_view chain) {
  if (!chain.starts_with(kFilterChainPrefix) || chain.size() == kFilterChainPrefix.size()) {
    return std::nullopt;
  }
  return std::string(chain.substr(kFilterChainPrefix.size()));
}

Result<json> spoofFilterRuleset(const NicSpec& nic) {
  std::optional<MacBytes> mac_bytes = parseMac(nic.mac);
  if (!mac_bytes) {
    return Error::invalid(
        fmt::format("The MAC address '{}' of port '{}' is not of the form "
                    "aa:bb:cc:dd:ee:ff",
                    nic.mac, nic.port_id));
  }
  const std::string mac = formatMac(*mac_bytes);
  std::vector<std::string> v4;
  std::vector<std::string> v6;
  for (const std::string& ip : nic.fixed_ips) {
    if (auto a = canonical(AF_INET, ip)) {
      v4.push_back(*a);
    } else if (auto b = canonical(AF_INET6, ip)) {
      v6.push_back(*b);
    } else {
      return Error::invalid(
          fmt::format("The fixed IP '{}' of port '{}' is neither an IPv4 nor an "
                      "IPv6 address",
                      ip, nic.port_id));
    }
  }
  std::vector<std::string> v4_or_unspecified{"0.0.0.0"};
  v4_or_unspecified.insert(v4_or_unspecified.end(), v4.begin(), v4.end());
  std::vector<std::string> v6_sources{eui64LinkLocal(*mac_bytes)};
  v6_sources.insert(v6_sources.end(), v6.begin(), v6.end());

  const std::string& dev = nic.devname;
  json commands = json::array();
  commands.push_back({{"add", {{"table", {{"family", kFilterFamily}, {"name", kFilterTable}}}}}});
  json chain = chainRef(dev);
  chain["type"] = "filter";
  chain["hook"] = "ingress";
  chain["dev"] = dev;
  chain["prio"] = 0;
  chain["policy"] = "drop";
  commands.push_back({{"add", {{"chain", chain}}}});
  commands.push_back({{"flush", {{"chain", chainRef(dev)}}}});

  commands.push_back(rule(dev, {match("ether", "saddr", mac, "!="), verdict("drop")}));
  // The sender fields are read at the Ethernet/IPv4 offsets: require that layout.
  commands.push_back(
      rule(dev, {match("arp", "htype", 1), match("arp", "ptype", 0x0800), match("arp", "hlen", 6),
                 match("arp", "plen", 4), match("arp", "saddr ether", mac),
                 match("arp", "saddr ip", oneOrSet(v4_or_unspecified)), verdict("accept")}));
  commands.push_back(
      rule(dev, {match("ip", "saddr", oneOrSet(v4_or_unspecified)), match("udp", "sport", 68),
                 match("udp", "dport", 67), verdict("accept")}));
  commands.push_back(rule(dev, {match("udp", "sport", json{{"set", {67, 547}}}), verdict("drop")}));
  if (!v4.empty()) {
    commands.push_back(rule(dev, {match("ip", "saddr", oneOrSet(v4)), verdict("accept")}));
  }
  commands.push_back(rule(dev, {match("icmpv6", "type", "nd-router-advert"), verdict("drop")}));
  commands.push_back(rule(
      dev, {match("ip6", "saddr", "::"),
            match("icmpv6", "type", json{{"set", {"nd-neighbor-solicit", "mld2-listener-report"}}}),
            verdict("accept")}));
  commands.push_back(rule(dev, {match("ip6", "saddr", oneOrSet(v6_sources)), verdict("accept")}));
  return json{{"nftables", std::move(commands)}};
}

json deleteFilterCommand(std::string_view devname) {
  return {{"nftables", json::array({{{"delete", {{"chain", chainRef(devname)}}}}})}};
}

json listNetdevChainsCommand() {
  return {{"nftables", json::array({{{"list", {{"chains", {{"family", kFilterFamily}}}}}}})}};
}

}  // namespace kiln::drivers::network
