#pragma once
// A HostNetwork that keeps taps and filters in maps, records calls and fails on request.

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "drivers/network/host_network.h"

namespace kiln::testing {

class FakeHostNetwork final : public drivers::network::HostNetwork {
 public:
  Result<void> plug(const std::string& instance_uuid, const drivers::NicSpec& nic) override {
    std::lock_guard lock(mutex);
    calls.push_back("plug " + nic.devname);
    if (fail_plug) return *fail_plug;
    auto it = taps.find(nic.devname);
    if (it != taps.end() && it->second != instance_uuid) return Error::conflict("not ours");
    taps[nic.devname] = instance_uuid;
    if (nic.filter) filters.insert(nic.devname);
    return success();
  }
  Result<void> unplug(const std::string& instance_uuid, const drivers::NicSpec& nic) override {
    std::lock_guard lock(mutex);
    calls.push_back("unplug " + nic.devname);
    filters.erase(nic.devname);
    auto it = taps.find(nic.devname);
    if (it != taps.end() && it->second == instance_uuid) taps.erase(it);
    return success();
  }
  Result<std::vector<drivers::network::KilnTap>> listKilnTaps() override {
    std::lock_guard lock(mutex);
    std::vector<drivers::network::KilnTap> out;
    for (const auto& [dev, uuid] : taps) out.push_back({dev, uuid, ""});
    return out;
  }
  Result<std::vector<std::string>> listFilters() override {
    std::lock_guard lock(mutex);
    return std::vector<std::string>(filters.begin(), filters.end());
  }
  Result<void> removeFilter(const std::string& devname) override {
    std::lock_guard lock(mutex);
    filters.erase(devname);
    return success();
  }
  Result<void> removeTap(const std::string& devname, const std::string& uuid) override {
    std::lock_guard lock(mutex);
    auto it = taps.find(devname);
    if (it != taps.end() && it->second == uuid) taps.erase(it);
    return success();
  }

  std::mutex mutex;
  std::map<std::string, std::string> taps;  // devname -> instance uuid
  std::set<std::string> filters;
  std::vector<std::string> calls;
  std::optional<Error> fail_plug;
};

}  // namespace kiln::testing
