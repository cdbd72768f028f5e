#pragma once
// The API validates names of taps and bridges before they reach the driver; this second check is
// here because the names end up in ioctls, netlink messages, sysctl paths and nft chain names,
// and a name that slipped through would reach all of them.

#include <string_view>

#include "common/result.h"

namespace kiln::drivers::network {

// 1..15 characters (IFNAMSIZ - 1) of [A-Za-z0-9_.-], not starting with '-', not "." or "..".
// `what` names the role in the message ("tap", "bridge").
Result<void> checkDevname(std::string_view name, std::string_view what);

}  // namespace kiln::drivers::network
