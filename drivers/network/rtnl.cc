#include "drivers/network/rtnl.h"

#include <fmt/format.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <netlink/errno.h>

namespace kiln::drivers::network {

std::string nlError(int err) { return nl_geterror(err < 0 ? -err : err); }

Result<NlSocket> connectRoute() {
  NlSocket sk(nl_socket_alloc());
  if (!sk) return Error::internal("libnl could not allocate a netlink socket");
  if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0) {
    return Error::unavailable(fmt::format("Could not open an rtnetlink socket: {}", nlError(err)));
  }
  return sk;
}

Result<RtnlLink> findLink(nl_sock* sk, const std::string& name) {
  rtnl_link* link = nullptr;
  int err = rtnl_link_get_kernel(sk, 0, name.c_str(), &link);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return RtnlLink();
  if (err < 0) {
    return Error::unavailable(
        fmt::format("Could not look up network device '{}': {}", name, nlError(err)));
  }
  return RtnlLink(link);
}

Result<NlCache> allLinks(nl_sock* sk) {
  nl_cache* cache = nullptr;
  if (int err = rtnl_link_alloc_cache(sk, AF_UNSPEC, &cache); err < 0) {
    return Error::unavailable(
        fmt::format("Could not list the host's network devices: {}", nlError(err)));
  }
  return NlCache(cache);
}

Result<bool> createBridge(nl_sock* sk, const std::string& name, unsigned mtu) {
  NlMsg msg(nlmsg_alloc_simple(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL));
  if (!msg) return Error::internal("libnl could not allocate a netlink message");
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  bool built = nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) == 0 &&
               nla_put_string(msg.get(), IFLA_IFNAME, name.c_str()) == 0 &&
               (mtu == 0 || nla_put_u32(msg.get(), IFLA_MTU, mtu) == 0);
  nlattr* info = built ? nla_nest_start(msg.get(), IFLA_LINKINFO) : nullptr;
  built = info && nla_put_string(msg.get(), IFLA_INFO_KIND, "bridge") == 0;
  nlattr* data = built ? nla_nest_start(msg.get(), IFLA_INFO_DATA) : nullptr;
  built = data && nla_put_u32(msg.get(), IFLA_BR_FORWARD_DELAY, 0) == 0 &&
          nla_put_u32(msg.get(), IFLA_BR_STP_STATE, 0) == 0;
  if (!built) return Error::internal(fmt::format("The request for bridge '{}' does not fit", name));
  nla_nest_end(msg.get(), data);
  nla_nest_end(msg.get(), info);
  if (int err = nl_send_auto(sk, msg.get()); err < 0) {
    return Error::unavailable(
        fmt::format("Could not send the request for bridge '{}': {}", name, nlError(err)));
  }
  int err = nl_wait_for_ack(sk);
  if (err == -NLE_EXIST) return false;
  if (err < 0) {
    return Error::unavailable(
        fmt::format("The kernel refused to make bridge '{}': {}", name, nlError(err)));
  }
  return true;
}

Result<void> deleteLink(nl_sock* sk, const std::string& name) {
  RtnlLink link(rtnl_link_alloc());
  if (!link) return Error::internal("libnl could not allocate a link");
  rtnl_link_set_name(link.get(), name.c_str());
  int err = rtnl_link_delete(sk, link.get());
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return success();
  if (err < 0) {
    return Error::unavailable(
        fmt::format("Could not delete network device '{}': {}", name, nlError(err)));
  }
  return success();
}

}  // namespace kiln::drivers::network
