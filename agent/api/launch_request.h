#pragma once
// POST /v1/instances bodies, parsed and checked into a typed request. Everything in a request is
// untrusted: types, sizes and characters are checked here, before anything acts on it.

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/api/network_info.h"
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
  // The guest's NICs, in order (eth0, eth1, ...), from Nova's network_info.
  std::vector<VifRequest> interfaces;
  // The config drive and what it tells the guest (nova's server create fields).
  bool config_drive = false;
  std::string hostname;                  // RFC 1123; from the name when the request gives none
  std::string availability_zone;         // empty: null in meta_data.json
  std::optional<std::string> user_data;  // decoded; never stored, never logged
  std::map<std::string, std::string> public_keys;  // key name -> OpenSSH public key
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

// nova's limit on user_data: 65535 bytes of base64 text (nova/api/openstack/compute/servers.py).
inline constexpr std::size_t kMaxUserDataBase64 = 65535;

// A hostname from a display name, as nova's sanitize_hostname does: lower case, runs of other
// characters become '-', at most 63 characters; "instance-<uuid prefix>" when nothing is left.
std::string hostnameFromName(std::string_view name, std::string_view uuid);

// 1 to 64 characters of letters, digits, '_' or '-' (Keystone's ids are 32 hex digits).
bool isValidProjectId(std::string_view project_id);

// One block device mapping (also the body of an attach_volume action).
Result<BlockDeviceRequest> parseBlockDevice(const nlohmann::json& bdm);

// Names the volumes' devices: explicit names are kept, the others take vdc, vdd, ... in order,
// skipping names in `taken` (vda for the root disk, vdb for the ephemeral disk).
Result<void> assignDevices(std::vector<BlockDeviceRequest>& volumes,
                           std::vector<std::string> taken);

}  // namespace kiln::api
