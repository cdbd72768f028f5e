#pragma once
// The host side of an instance's NICs: the tap kiln makes for each VIF, the Linux bridge it
// joins, and the anti-spoofing filter on it. Only drivers/network includes libnl and
// libnftables. The domain refers to the tap by name (<interface type='ethernet'> with
// managed='no'), so the tap outlives guest reboots, stops and starts, and so does its filter.
//
// Every tap kiln makes carries a mark (its interface alias, "kiln:<instance uuid>:<port id>"),
// so the orphan sweep removes only taps it can prove are kiln's, never an L2 agent's.

#include <string>
#include <vector>

#include "common/result.h"
#include "drivers/compute_driver.h"

namespace kiln::drivers::network {

// A tap kiln made, as found on the host.
struct KilnTap {
  std::string devname;
  std::string instance_uuid;
  std::string port_id;
};

class HostNetwork {
 public:
  virtual ~HostNetwork() = default;
  // Makes the tap (persistent, multiqueue when nic.queues > 1, the MTU, up), the bridge when
  // nic is kBridge and it is absent (with the MTU, up), enslaves the tap, and installs the
  // filter when nic.filter. Idempotent: a tap kiln made for this instance and port is reused.
  // A tap of that name that is not kiln's for this instance and port is kConflict. On failure
  // nothing this call made is left.
  virtual Result<void> plug(const std::string& instance_uuid, const NicSpec& nic) = 0;
  // Removes the filter and the tap. A missing tap is fine (idempotent); a tap of that name that
  // is not kiln's for this instance is left alone, with its filter, and that is a success too.
  // Bridges are never removed: other ports and other tenants' instances may use them.
  virtual Result<void> unplug(const std::string& instance_uuid, const NicSpec& nic) = 0;
  // Every tap on the host that carries kiln's mark.
  virtual Result<std::vector<KilnTap>> listKilnTaps() = 0;
  // Every filter kiln installed, by the tap name it is for (a filter may outlive its tap).
  virtual Result<std::vector<std::string>> listFilters() = 0;
  // Removes a filter by tap name; a missing one is fine.
  virtual Result<void> removeFilter(const std::string& devname) = 0;
  // Removes a kiln tap by name after checking its mark names `instance_uuid`; missing is fine, a
  // tap whose mark names another instance (or that has none) is kConflict and left alone. The
  // tap's filter stays: removeFilter is its own step of the sweep.
  virtual Result<void> removeTap(const std::string& devname, const std::string& instance_uuid) = 0;
};

}  // namespace kiln::drivers::network
