#include "drivers/network/linux_host_network.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "common/log.h"
#include "common/unique_fd.h"
#include "drivers/network/devname.h"
#include "drivers/network/mac_address.h"
#include "drivers/network/nft_runner.h"
#include "drivers/network/rtnl.h"
#include "drivers/network/spoof_filter_rules.h"
#include "drivers/network/tap_mark.h"
#include "drivers/network/tun_device.h"

namespace kiln::drivers::network {

namespace {

std::string linkType(rtnl_link* link) {
  const char* type = rtnl_link_get_type(link);
  return type ? type : "";
}

std::optional<TapMark> markOf(rtnl_link* link) {
  const char* alias = rtnl_link_get_ifalias(link);
  if (!alias) return std::nullopt;
  return parseTapMark(alias);
}

Result<void> changeLink(nl_sock* sk, rtnl_link* current, rtnl_link* changes,
                        std::string_view what) {
  if (int err = rtnl_link_change(sk, current, changes, 0); err < 0) {
    return Error::unavailable(fmt::format("Could not {} of network device '{}': {}", what,
                                          rtnl_link_get_name(current), nlError(err)));
  }
  return success();
}

Result<void> bringUp(nl_sock* sk, rtnl_link* link) {
  if (rtnl_link_get_flags(link) & IFF_UP) return success();
  RtnlLink changes(rtnl_link_alloc());
  if (!changes) return Error::internal("libnl could not allocate a link");
  rtnl_link_set_flags(changes.get(), IFF_UP);
  return changeLink(sk, link, changes.get(), "bring up");
}

// os-vif does the same on the bridges it makes: the host must not get a link-local address on a
// tenant's L2 segment, nor answer router advertisements the guests send on it. /proc/sys/net
// belongs to the calling thread's network namespace, like the netlink socket.
Result<void> disableIpv6(const std::string& bridge) {
  std::string path = fmt::format("/proc/sys/net/ipv6/conf/{}/disable_ipv6", bridge);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid() && errno == ENOENT) return success();  // no IPv6 in this kernel
  if (!fd.valid() || ::write(fd.get(), "1", 1) != 1) {
    return Error::unavailable(fmt::format("Could not disable IPv6 on bridge '{}' ({}): {}", bridge,
                                          path, std::strerror(errno)));
  }
  return success();
}

struct BridgeLink {
  RtnlLink link;
  bool created = false;
};

Result<BridgeLink> ensureBridge(nl_sock* sk, const std::string& name, unsigned mtu) {
  Result<RtnlLink> found = findLink(sk, name);
  if (!found) return found.error();
  bool created = false;
  if (!*found) {
    Result<bool> made = createBridge(sk, name, mtu);
    if (!made) return made.error();
    created = *made;  // false: another plug made it between the look-up and now
    found = findLink(sk, name);
    if (!found) return found.error();
    if (!*found) {
      return Error::unavailable(fmt::format("Bridge '{}' vanished right after it was made", name));
    }
  }
  if (linkType(found->get()) != "bridge") {
    return Error::conflict(fmt::format("The network device '{}' exists and is not a bridge ('{}')",
                                       name, linkType(found->get())));
  }
  if (created) {
    if (Result<void> r = disableIpv6(name); !r) return r.error();
  }
  if (Result<void> r = bringUp(sk, found->get()); !r) return r.error();
  return BridgeLink{std::move(*found), created};
}

Result<unsigned> portCount(nl_sock* sk, int bridge_ifindex) {
  Result<NlCache> links = allLinks(sk);
  if (!links) return links.error();
  unsigned count = 0;
  for (nl_object* o = nl_cache_get_first(links->get()); o; o = nl_cache_get_next(o)) {
    if (rtnl_link_get_master(reinterpret_cast<rtnl_link*>(o)) == bridge_ifindex) ++count;
  }
  return count;
}

Result<void> installFilter(const nlohmann::json& ruleset) {
  Result<nlohmann::json> r = runNft(ruleset);
  if (!r) return r.error();
  return success();
}

// What plug has made so far, undone in reverse when a later step fails.
struct PlugRollback {
  nl_sock* sk;
  std::string devname;
  std::string bridge;
  int bridge_ifindex = 0;
  bool tap = false;
  bool filter = false;
  bool bridge_created = false;
  bool done = false;

  ~PlugRollback() {
    if (done) return;
    if (filter) {
      if (Result<nlohmann::json> r = runNft(deleteFilterCommand(devname)); !r) {
        log::warn("Rollback of tap '{}': {}", devname, r.error().message);
      }
    }
    if (tap) {
      if (Result<void> r = deleteLink(sk, devname); !r) {
        log::warn("Rollback of tap '{}': {}", devname, r.error().message);
      }
    }
    // Only a bridge this call made, and only while nothing else uses it: another plug may have
    // enslaved its tap in the meantime.
    if (bridge_created) {
      Result<unsigned> ports = portCount(sk, bridge_ifindex);
      if (ports && *ports == 0) {
        if (Result<void> r = deleteLink(sk, bridge); !r) {
          log::warn("Rollback of bridge '{}': {}", bridge, r.error().message);
        }
      }
    }
  }
};

}  // namespace

Result<void> LinuxHostNetwork::plug(const std::string& instance_uuid, const NicSpec& nic) {
  const auto started = std::chrono::steady_clock::now();
  if (Result<void> r = checkDevname(nic.devname, "tap"); !r) return r;
  const bool bridged = nic.type == NicSpec::Type::kBridge;
  if (bridged) {
    if (Result<void> r = checkDevname(nic.bridge, "bridge"); !r) return r;
  }
  std::optional<MacBytes> mac = parseMac(nic.mac);
  if (!mac) {
    return Error::invalid(
        fmt::format("The MAC address '{}' of port '{}' is not of the form "
                    "aa:bb:cc:dd:ee:ff",
                    nic.mac, nic.port_id));
  }
  // Built before anything changes on the host, so a bad fixed IP costs nothing to undo.
  std::optional<nlohmann::json> ruleset;
  if (nic.filter) {
    Result<nlohmann::json> r = spoofFilterRuleset(nic);
    if (!r) return r.error();
    ruleset = std::move(*r);
  }
  const TapMark mark{instance_uuid, nic.port_id};

  Result<NlSocket> sk = connectRoute();
  if (!sk) return sk.error();
  PlugRollback rollback{sk->get(), nic.devname, nic.bridge};

  Result<RtnlLink> tap = findLink(sk->get(), nic.devname);
  if (!tap) return tap.error();
  if (*tap) {
    if (markOf(tap->get()) != mark) {
      const char* alias = rtnl_link_get_ifalias(tap->get());
      return Error::conflict(fmt::format(
          "The network device '{}' exists and is not kiln's tap for instance '{}' port '{}' "
          "(its alias is '{}')",
          nic.devname, instance_uuid, nic.port_id, alias ? alias : ""));
    }
  } else {
    if (Result<void> r = createPersistentTap(nic.devname, nic.queues > 1); !r) return r;
    rollback.tap = true;
    tap = findLink(sk->get(), nic.devname);
    if (!tap) return tap.error();
    if (!*tap) {
      return Error::unavailable(
          fmt::format("Tap '{}' vanished right after it was made", nic.devname));
    }
  }

  {
    RtnlLink changes(rtnl_link_alloc());
    MacBytes host_mac = hostSideMac(*mac);
    NlAddr addr(nl_addr_build(AF_LLC, host_mac.data(), host_mac.size()));
    if (!changes || !addr) return Error::internal("libnl could not allocate a link");
    rtnl_link_set_addr(changes.get(), addr.get());
    if (nic.mtu > 0) rtnl_link_set_mtu(changes.get(), nic.mtu);
    std::string alias = formatTapMark(mark);
    rtnl_link_set_ifalias(changes.get(), alias.c_str());
    if (Result<void> r =
            changeLink(sk->get(), tap->get(), changes.get(), "set the address, MTU and mark");
        !r) {
      return r;
    }
  }

  int master = 0;
  if (bridged) {
    Result<BridgeLink> bridge = ensureBridge(sk->get(), nic.bridge, nic.mtu);
    if (!bridge) return bridge.error();
    master = rtnl_link_get_ifindex(bridge->link.get());
    rollback.bridge_created = bridge->created;
    rollback.bridge_ifindex = master;
  }

  // The filter goes on before the tap joins the bridge and comes up, so no frame ever crosses
  // unfiltered; a re-plug replaces the rules in one transaction.
  if (ruleset) {
    if (Result<void> r = installFilter(*ruleset); !r) return r;
    rollback.filter = rollback.tap;
  } else if (Result<void> r = removeFilter(nic.devname); !r) {
    return r;
  }

  {
    RtnlLink changes(rtnl_link_alloc());
    if (!changes) return Error::internal("libnl could not allocate a link");
    if (master != 0) rtnl_link_set_master(changes.get(), master);
    rtnl_link_set_flags(changes.get(), IFF_UP);
    if (Result<void> r = changeLink(sk->get(), tap->get(), changes.get(),
                                    bridged ? "enslave and bring up" : "bring up");
        !r) {
      return r;
    }
  }
  rollback.done = true;
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started);
  log::info("Plugged tap '{}' for instance '{}' port '{}'{} in {:.1f} ms", nic.devname,
            instance_uuid, nic.port_id, bridged ? fmt::format(" into bridge '{}'", nic.bridge) : "",
            ms.count());
  return success();
}

Result<void> LinuxHostNetwork::unplug(const std::string& instance_uuid, const NicSpec& nic) {
  if (Result<void> r = checkDevname(nic.devname, "tap"); !r) return r;
  Result<NlSocket> sk = connectRoute();
  if (!sk) return sk.error();
  Result<RtnlLink> tap = findLink(sk->get(), nic.devname);
  if (!tap) return tap.error();
  if (*tap) {
    std::optional<TapMark> mark = markOf(tap->get());
    if (!mark || mark->instance_uuid != instance_uuid) {
      log::warn("Left network device '{}' alone on unplug: it is not kiln's tap for instance '{}'",
                nic.devname, instance_uuid);
      return success();
    }
  }
  // A chain in table netdev kiln is kiln's whatever became of its tap.
  if (Result<void> r = removeFilter(nic.devname); !r) return r;
  if (*tap) return deleteLink(sk->get(), nic.devname);
  return success();
}

Result<std::vector<KilnTap>> LinuxHostNetwork::listKilnTaps() {
  Result<NlSocket> sk = connectRoute();
  if (!sk) return sk.error();
  Result<NlCache> links = allLinks(sk->get());
  if (!links) return links.error();
  std::vector<KilnTap> taps;
  for (nl_object* o = nl_cache_get_first(links->get()); o; o = nl_cache_get_next(o)) {
    auto* link = reinterpret_cast<rtnl_link*>(o);
    if (std::optional<TapMark> mark = markOf(link)) {
      taps.push_back({rtnl_link_get_name(link), mark->instance_uuid, mark->port_id});
    }
  }
  return taps;
}

Result<std::vector<std::string>> LinuxHostNetwork::listFilters() {
  Result<nlohmann::json> listed = runNft(listNetdevChainsCommand());
  if (!listed) return listed.error();
  std::vector<std::string> devnames;
  if (!listed->is_object() || !listed->contains("nftables")) return devnames;
  for (const nlohmann::json& item : (*listed)["nftables"]) {
    if (!item.contains("chain")) continue;
    const nlohmann::json& chain = item["chain"];
    if (chain.value("table", "") != kFilterTable) continue;
    if (auto dev = devnameOfFilterChain(chain.value("name", ""))) devnames.push_back(*dev);
  }
  return devnames;
}

Result<void> LinuxHostNetwork::removeFilter(const std::string& devname) {
  if (Result<void> r = checkDevname(devname, "tap"); !r) return r;
  // nft 1.0.6 has no `destroy`; deleting an absent chain fails, so look first.
  Result<std::vector<std::string>> filters = listFilters();
  if (!filters) return filters.error();
  if (std::find(filters->begin(), filters->end(), devname) == filters->end()) return success();
  Result<nlohmann::json> r = runNft(deleteFilterCommand(devname));
  if (!r) return r.error();
  return success();
}

Result<void> LinuxHostNetwork::removeTap(const std::string& devname,
                                         const std::string& instance_uuid) {
  if (Result<void> r = checkDevname(devname, "tap"); !r) return r;
  Result<NlSocket> sk = connectRoute();
  if (!sk) return sk.error();
  Result<RtnlLink> tap = findLink(sk->get(), devname);
  if (!tap) return tap.error();
  if (!*tap) return success();
  std::optional<TapMark> mark = markOf(tap->get());
  if (!mark || mark->instance_uuid != instance_uuid) {
    return Error::conflict(fmt::format(
        "The network device '{}' is not kiln's tap for instance '{}'; it was left alone", devname,
        instance_uuid));
  }
  return deleteLink(sk->get(), devname);
}

}  // namespace kiln::drivers::network
