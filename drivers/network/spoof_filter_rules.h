#pragma once
// The anti-spoofing filter for one tap, as an nftables JSON transaction (libnftables' JSON
// schema, nft 1.0.6), built from the NicSpec alone so it can be tested without a kernel.
//
// Design: one table `netdev kiln`, one base chain per tap, `vif-<devname>`, hooked at netdev
// ingress on that tap with policy drop. Netdev ingress on a tap sees every frame the guest
// writes, before the bridge's rx handler, so the same chain works for bridged and unbridged
// taps, and a frame it drops never reaches the bridge or the host stack. What passes:
//   - only frames from the guest's MAC (first rule; every later rule relies on it);
//   - ARP from that MAC, Ethernet/IPv4 only, with a sender IP among the fixed IPv4 addresses, or
//     0.0.0.0 (RFC 5227 probes);
//   - DHCP client requests (UDP 68 -> 67) from 0.0.0.0 or a fixed IPv4 address, to any
//     destination (renewals are unicast to the server);
//   - never a DHCP or DHCPv6 server reply (UDP source port 67 or 547): the guest must not serve
//     its neighbours addresses;
//   - IPv4 from a fixed IPv4 address;
//   - never an ICMPv6 router advertisement;
//   - IPv6 from :: only as neighbour solicitation or MLDv2 report (duplicate address detection);
//   - IPv6 from a fixed IPv6 address or the EUI-64 link-local address of the MAC;
//   - nothing else: other ethertypes (VLAN tags, LLDP, ...) hit the policy.
// A NIC without fixed IPs gets what a Neutron port with port security and no fixed IPs gets:
// its MAC, DHCP discovery from 0.0.0.0, ARP probes, its link-local address and DAD; no IPv4
// address is accepted, so an address DHCP hands out that Neutron does not know is useless.
// (Neutron itself always allows the port's EUI-64 link-local address, fixed IPs or not.)
//
// The transaction adds the table (idempotent in nft), adds the chain, flushes it and adds the
// rules, so a re-plug replaces the rules atomically and never leaves the tap unfiltered.

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "drivers/compute_driver.h"

namespace kiln::drivers::network {

inline constexpr std::string_view kFilterFamily = "netdev";
inline constexpr std::string_view kFilterTable = "kiln";
inline constexpr std::string_view kFilterChainPrefix = "vif-";

std::string filterChainName(std::string_view devname);
// The tap name a chain in table netdev kiln is for; nothing for a chain kiln did not name.
std::optional<std::string> devnameOfFilterChain(std::string_view chain);

// The whole transaction for nic (nic.devname, nic.mac, nic.fixed_ips). kInvalidArgument when the
// MAC or a fixed IP does not parse.
Result<nlohmann::json> spoofFilterRuleset(const NicSpec& nic);

// Deletes the chain (and with it its rules); nft fails when it is absent.
nlohmann::json deleteFilterCommand(std::string_view devname);
// Lists every netdev chain (the answer names their tables); works when table kiln is absent.
nlohmann::json listNetdevChainsCommand();

}  // namespace kiln::drivers::network
