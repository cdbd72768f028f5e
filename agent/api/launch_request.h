#pragma once
// POST /v1/instances bodies, parsed and checked into a typed request. Everything in a request is
// untrusted: types, sizes and characters are checked here, before anything acts on it.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/result.h"
#include "config/flavors.h"
#include "drivers/volume/iscsi_target.h"

namespace kiln::api {

// One Cinder volume to attach, as nova receives it (a block device mapping).
struct BlockDeviceRequest {
  std::string volume_id;
  std::string device;  // vdc, vdd, ... (assigned when the request names none)
  bool boot = false;   // boot_index 0: the root disk (boot from volume)
  drivers::volume::IscsiTarget target;
};

struct LaunchRequest {
  std::string uuid;  // canonical lower-case form
  std::string name;
  config::Flavor flavor;  // resolved from the catalog, or given inline (name empty)
  std::string image_id;   // empty when the instance boots from a volume
  std::vector<BlockDeviceRequest> block_devices;
  // The owning project: the request's project_id, or the caller's project when it gives none.
  // Empty only when neither exists (a token without a project and no project_id).
  std::string project_id;
  // The caller's Keystone token when the caller belongs to project_id: the launch asks Glance
  // about the image with it. Never stored, never part of the fingerprint (set by the router).
  std::string image_token;
  // SHA-256 of the canonical body: a retry with the same body is the same request. A digest, not
  // the body, because the body may carry CHAP passwords.
  std::string fingerprint;
};

// `caller_project_id` is the project the request belongs to when the body names none.
// No kiln request needs more than a few levels of nesting. nlohmann's parser is iterative, but
// serialising (the request fingerprint, the store) recurses once per level: a 1 MiB body of '['
// inside a volume's connection_info overflowed the stack of the thread serving it.
inline constexpr int kMaxRequestJsonDepth = 32;

// A request body as JSON: refused when it is not JSON or is nested deeper than the bound above.
Result<nlohmann::json> parseRequestJson(std::string_view body);

Result<LaunchRequest> parseLaunchRequest(std::string_view body,
                                         const config::FlavorCatalog& catalog,
                                         std::string_view caller_project_id = "");

// 1 to 64 characters of letters, digits, '_' or '-' (Keystone's ids are 32 hex digits).
bool isValidProjectId(std::string_view project_id);

// One block device mapping (also the body of an attach_volume action).
Result<BlockDeviceRequest> parseBlockDevice(const nlohmann::json& bdm);

// Names the volumes' devices: explicit names are kept, the others take vdc, vdd, ... in order,
// skipping names in `taken` (vda for the root disk, vdb for the ephemeral disk).
Result<void> assignDevices(std::vector<BlockDeviceRequest>& volumes,
                           std::vector<std::string> taken);

}  // namespace kiln::api
