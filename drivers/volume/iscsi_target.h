#pragma once
// Cinder's connection_info for an iSCSI volume, parsed and checked. It comes from the scheduler
// and is untrusted: portals, IQNs and LUNs are validated before they reach libvirt or iscsiadm.
// The CHAP password is held only until it is handed to a libvirt secret or to iscsiadm; it is
// never logged and never part of what the API or the store shows.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace kiln::drivers::volume {

struct IscsiPath {
  std::string host;  // an IP address or host name, as given in the portal
  std::uint16_t port = 3260;
  std::string iqn;
  unsigned lun = 0;
};

struct IscsiTarget {
  std::vector<IscsiPath> paths;  // the first is target_portal/target_iqn/target_lun
  std::string auth_method;       // "" or "CHAP"
  std::string auth_username;
  std::string auth_password;  // secret: never logged, never stored in clear
  bool read_only = false;
};

// Parses connection_info {"driver_volume_type": "iscsi", "data": {...}}.
Result<IscsiTarget> parseIscsiConnectionInfo(const nlohmann::json& connection_info);

// "host:port" or "[v6]:port".
Result<IscsiPath> parsePortal(std::string_view portal);

bool isValidIqn(std::string_view iqn);

}  // namespace kiln::drivers::volume
