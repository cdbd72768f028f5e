#pragma once
// Nova's network_info (nova/network/model.py: a list of VIFs), as a launch request or an
// interface attach gives it: checked strictly, field by field, before anything acts on it. The
// JSON is kept as given (the config drive's network_data.json is derived from it) next to the
// typed NIC the host plumbing and the domain use.

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "drivers/compute_driver.h"

namespace kiln::api {

// A NIC per PCI slot is the practical bound, and no cloud gives an instance more than a few.
inline constexpr std::size_t kMaxInterfaces = 16;
// Linux's tap and bridge MTUs: 68 (the IPv4 minimum) to 65535.
inline constexpr unsigned kMinMtu = 68;
inline constexpr unsigned kMaxMtu = 65535;

struct VifRequest {
  drivers::NicSpec nic;  // model and queues are the image's: set by the launch
  nlohmann::json vif;    // the VIF as given, for the record and the config drive
};

// One VIF object. `where` names it in errors ("network_info[1]", "interface").
Result<VifRequest> parseVif(const nlohmann::json& vif, std::string_view where);
// The list; port ids, MACs and devnames must be unique within it.
Result<std::vector<VifRequest>> parseNetworkInfo(const nlohmann::json& network_info);

// A Linux interface name kiln will create or join: 1 to 15 characters of letters, digits, '_',
// '-' and '.', not starting with '-' or '.' (so never an option, '.' or '..').
bool isSafeInterfaceName(std::string_view name);
// aa:bb:cc:dd:ee:ff (either case), not multicast (nor broadcast) and not all zeros.
bool isUnicastMac(std::string_view mac);

}  // namespace kiln::api
