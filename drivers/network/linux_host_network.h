#pragma once
// HostNetwork on Linux: taps through the tun driver, links and bridges through rtnetlink
// (libnl-route), the anti-spoofing filter through nftables (libnftables, in-process). Holds no
// state: every call opens its own netlink socket and nft context, so calls from several threads
// need no lock here (nft batches are serialised inside nft_runner). Calls for the same tap must
// not overlap; the agent's per-instance jobs see to that.

#include "drivers/network/host_network.h"

namespace kiln::drivers::network {

class LinuxHostNetwork final : public HostNetwork {
 public:
  Result<void> plug(const std::string& instance_uuid, const NicSpec& nic) override;
  // A tap of that name marked for another instance is left alone, and that is a success: the
  // caller's NIC is gone either way, and the other instance's must not be.
  Result<void> unplug(const std::string& instance_uuid, const NicSpec& nic) override;
  Result<std::vector<KilnTap>> listKilnTaps() override;
  Result<std::vector<std::string>> listFilters() override;
  Result<void> removeFilter(const std::string& devname) override;
  // kConflict when the tap's mark names another instance or it has none: the sweep asked for a
  // tap it cannot prove is this instance's.
  Result<void> removeTap(const std::string& devname, const std::string& instance_uuid) override;
};

}  // namespace kiln::drivers::network
