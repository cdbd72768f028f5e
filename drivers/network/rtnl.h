#pragma once
// Owners for libnl's route handles and the few rtnetlink operations kiln needs. A socket per
// call: libnl sockets are not thread-safe, and one per plug costs a few microseconds.

#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>

#include <memory>
#include <string>

#include "common/result.h"

namespace kiln::drivers::network {

struct NlSocketDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct RtnlLinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct NlCacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct NlMsgDeleter {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using NlSocket = std::unique_ptr<nl_sock, NlSocketDeleter>;
using RtnlLink = std::unique_ptr<rtnl_link, RtnlLinkDeleter>;
using NlCache = std::unique_ptr<nl_cache, NlCacheDeleter>;
using NlAddr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using NlMsg = std::unique_ptr<nl_msg, NlMsgDeleter>;

std::string nlError(int err);  // libnl's text for a negative libnl error code

Result<NlSocket> connectRoute();
// The link named `name` as the kernel has it now; a null link when there is none.
Result<RtnlLink> findLink(nl_sock* sk, const std::string& name);
// Every link (for the sweep and for counting a bridge's ports).
Result<NlCache> allLinks(nl_sock* sk);

// Makes a Linux bridge in one RTM_NEWLINK (NLM_F_CREATE | NLM_F_EXCL) with STP off, forward
// delay 0 (a new port forwards at once, as os-vif sets it: a guest's DHCP discovery must not
// fall into the 15 s listening/learning delay) and the MTU when mtu > 0. libnl 3.7 has no
// setter for IFLA_BR_* so the message is built here. Returns false when a bridge of that name
// existed already (another plug made it first), true when this call made it.
Result<bool> createBridge(nl_sock* sk, const std::string& name, unsigned mtu);

// Deletes a link by name; a missing one is fine.
Result<void> deleteLink(nl_sock* sk, const std::string& name);

}  // namespace kiln::drivers::network
