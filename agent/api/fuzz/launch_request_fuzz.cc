// libFuzzer entry point: arbitrary bytes as the body of POST /v1/instances (against a fixed flavor
// catalog) and as the body of an attach_volume action (one block device mapping). The API takes
// these from the network: a refusal is the expected answer, and what is accepted must keep the
// promises the lifecycle relies on (canonical uuid, valid and distinct device names, vda for a
// boot volume, vdb left to the ephemeral disk, a stable fingerprint).

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "agent/api/launch_request.h"

namespace {

using kiln::api::BlockDeviceRequest;

const kiln::config::FlavorCatalog& catalog() {
  static const kiln::config::FlavorCatalog flavors({
      {"m1.tiny", 1, 512, 1, 0, {}},
      {"m1.ephemeral", 2, 1024, 2, 1, {{"hw:cpu_policy", "shared"}}},
  });
  return flavors;
}

bool validDevice(const std::string& d) {
  return d.size() == 3 && d[0] == 'v' && d[1] == 'd' && d[2] >= 'a' && d[2] <= 'z';
}

void checkBlockDevice(const BlockDeviceRequest& b) {
  if (b.volume_id.empty() || b.volume_id.size() > 128) __builtin_trap();
  if (!b.device.empty() && !validDevice(b.device)) __builtin_trap();
  if (b.target.paths.empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);

  auto req = kiln::api::parseLaunchRequest(body, catalog());
  if (req) {
    if (req->uuid.size() != 36 || req->fingerprint.size() != 64) __builtin_trap();
    if (req->name.empty() || req->name.size() > 255) __builtin_trap();
    if (!kiln::config::validateFlavor(req->flavor, "fuzzed flavor")) __builtin_trap();
    bool boot_volume = false;
    std::set<std::string> devices;
    for (const auto& b : req->block_devices) {
      checkBlockDevice(b);
      if (!devices.insert(b.device).second) __builtin_trap();
      if (b.boot != (b.device == "vda")) __builtin_trap();
      if (b.device == "vdb" && req->flavor.ephemeral_gb > 0) __builtin_trap();
      boot_volume = boot_volume || b.boot;
    }
    // Exactly one root: the image or the boot volume.
    if (boot_volume == !req->image_id.empty()) __builtin_trap();
    // A retry with the same body must be recognised as the same request.
    auto again = kiln::api::parseLaunchRequest(body, catalog());
    if (!again || again->fingerprint != req->fingerprint) __builtin_trap();
  } else if (req.error().message.empty()) {
    __builtin_trap();
  }

  // The same bytes as an attach_volume argument.
  auto doc = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_discarded()) {
    auto bdm = kiln::api::parseBlockDevice(doc);
    if (bdm) checkBlockDevice(*bdm);
  }
  return 0;
}
