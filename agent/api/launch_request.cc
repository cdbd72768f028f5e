#include "agent/api/launch_request.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <regex>

#include "common/strings.h"
#include "common/uuid.h"
#include "imagecache/image_source.h"

namespace kiln::api {
namespace {

using nlohmann::json;

bool validName(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return false;  // no control characters (logs, XML titles)
  }
  return true;
}

Result<std::uint64_t> countField(const json& obj, const char* key, bool required,
                                 std::uint64_t fallback) {
  if (!obj.contains(key)) {
    if (required) return Error::invalid(fmt::format("flavor.{} is required", key));
    return fallback;
  }
  const json& v = obj[key];
  if (!v.is_number_unsigned()) {
    return Error::invalid(fmt::format("flavor.{} must be a non-negative integer", key));
  }
  return v.get<std::uint64_t>();
}

Result<config::Flavor> inlineFlavor(const json& obj) {
  for (const auto& [key, value] : obj.items()) {
    (void)value;
    if (key != "vcpus" && key != "memory_mb" && key != "root_gb" && key != "ephemeral_gb") {
      return Error::invalid(fmt::format("flavor has an unknown field '{}'", key));
    }
  }
  config::Flavor f;
  auto vcpus = countField(obj, "vcpus", true, 0);
  if (!vcpus) return vcpus.error();
  auto mem = countField(obj, "memory_mb", true, 0);
  if (!mem) return mem.error();
  auto root = countField(obj, "root_gb", true, 0);
  if (!root) return root.error();
  auto eph = countField(obj, "ephemeral_gb", false, 0);
  if (!eph) return eph.error();
  if (*vcpus > config::kMaxVcpus) {
    return Error::invalid(fmt::format("flavor.vcpus must be between 1 and {}", config::kMaxVcpus));
  }
  f.vcpus = static_cast<unsigned>(*vcpus);
  f.memory_mb = *mem;
  f.root_gb = *root;
  f.ephemeral_gb = *eph;
  if (auto v = config::validateFlavor(f, "flavor"); !v) return std::move(v).error();
  return f;
}

std::string sha256Hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return strings::hexEncode(digest);
}

bool validDevice(const std::string& name) {
  return name.size() == 3 && name.starts_with("vd") && name[2] >= 'a' && name[2] <= 'z';
}

// RFC 1123: labels of letters, digits and '-', not starting or ending with '-', at most 63 each.
bool validHostname(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '.') {
      if (label == 0 || name[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && !(c == '-' && label > 0)) return false;
    if (++label > 63) return false;
  }
  return name.back() != '-' && name.back() != '.';
}

// Strict base64 (RFC 4648, padded, no line breaks): a body that is not is refused, never guessed.
Result<std::string> decodeBase64(const std::string& text, const char* field) {
  auto refuse = [field] {
    return Error::invalid(fmt::format("'{}' must be base64 (RFC 4648, padded)", field));
  };
  if (text.size() % 4 != 0) return refuse();
  std::size_t padding = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    bool alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/';
    if (c == '=' && i + 2 >= text.size()) {
      ++padding;
    } else if (!alphabet || padding > 0) {
      return refuse();
    }
  }
  std::string out(text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return refuse();
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

// OpenSSH's one-line public key format: "<type> <base64> [comment]", e.g. "ssh-ed25519 AAAA...".
bool looksLikePublicKey(const std::string& key) {
  if (key.size() < 16 || key.size() > 16384) return false;
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  static const std::regex form(
      "^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) "
      "[A-Za-z0-9+/]+={0,3}( .*)?$");
  return std::regex_match(key, form);
}

Result<void> parseGuestIdentity(const json& doc, LaunchRequest& req) {
  if (doc.contains("network_info")) {
    auto vifs = parseNetworkInfo(doc["network_info"]);
    if (!vifs) return vifs.error();
    req.interfaces = std::move(vifs).value();
  }
  if (doc.contains("config_drive")) {
    if (!doc["config_drive"].is_boolean()) {
      return Error::invalid("'config_drive' must be true or false");
    }
    req.config_drive = doc["config_drive"].get<bool>();
  }
  if (doc.contains("hostname")) {
    if (!doc["hostname"].is_string() || !validHostname(doc["hostname"].get<std::string>())) {
      return Error::invalid(
          "'hostname' must be an RFC 1123 host name: labels of letters, digits and '-', at most "
          "63 characters each and 253 in all");
    }
    req.hostname = doc["hostname"].get<std::string>();
  } else {
    req.hostname = hostnameFromName(req.name, req.uuid);
  }
  if (doc.contains("availability_zone")) {
    const json& az = doc["availability_zone"];
    if (!az.is_string() || az.get<std::string>().empty() || az.get<std::string>().size() > 255 ||
        !validName(az.get<std::string>())) {
      return Error::invalid(
          "'availability_zone' must be 1 to 255 bytes without control characters");
    }
    req.availability_zone = az.get<std::string>();
  }
  if (doc.contains("user_data")) {
    const json& ud = doc["user_data"];
    if (!ud.is_string() || ud.get<std::string>().size() > kMaxUserDataBase64) {
      return Error::invalid(fmt::format(
          "'user_data' must be a base64 string of at most {} characters", kMaxUserDataBase64));
    }
    auto decoded = decodeBase64(ud.get<std::string>(), "user_data");
    if (!decoded) return decoded.error();
    req.user_data = std::move(decoded).value();
  }
  if (doc.contains("public_keys")) {
    const json& keys = doc["public_keys"];
    if (!keys.is_object() || keys.size() > 32) {
      return Error::invalid("'public_keys' must be an object of at most 32 named keys");
    }
    for (const auto& [name, key] : keys.items()) {
      if (!validName(name)) {
        return Error::invalid(
            "Each key name in 'public_keys' must be 1 to 255 bytes without control characters");
      }
      if (!key.is_string() || !looksLikePublicKey(key.get<std::string>())) {
        return Error::invalid(fmt::format(
            "'public_keys' entry '{}' must be an OpenSSH public key on one line, such as "
            "'ssh-ed25519 AAAA... comment'",
            name.substr(0, 64)));
      }
      req.public_keys[name] = key.get<std::string>();
    }
  }
  return success();
}

}  // namespace

std::string hostnameFromName(std::string_view name, std::string_view uuid) {
  std::string out;
  for (char c : name) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (c >= 'A' && c <= 'Z') {
      out += static_cast<char>(c - 'A' + 'a');
    } else if (alnum) {
      out += c;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  if (out.size() > 63) out.resize(63);
  while (!out.empty() && out.back() == '-') out.pop_back();
  if (out.empty()) out = fmt::format("instance-{}", uuid.substr(0, 8));
  return out;
}

Result<BlockDeviceRequest> parseBlockDevice(const json& bdm) {
  if (!bdm.is_object()) return Error::invalid("Each block device must be an object");
  for (const auto& [key, value] : bdm.items()) {
    (void)value;
    if (key != "connection_info" && key != "device_name" && key != "boot_index" &&
        key != "volume_id") {
      return Error::invalid(fmt::format("block device has an unknown field '{}'", key));
    }
  }
  BlockDeviceRequest req;
  if (!bdm.contains("volume_id") || !bdm["volume_id"].is_string() ||
      !imagecache::isSafeImageId(bdm["volume_id"].get<std::string>())) {
    return Error::invalid(
        "block device 'volume_id' is required: 1 to 128 letters, digits, '.', '_' or '-'");
  }
  req.volume_id = bdm["volume_id"].get<std::string>();
  if (bdm.contains("device_name") && !bdm["device_name"].is_null()) {
    if (!bdm["device_name"].is_string()) {
      return Error::invalid("block device 'device_name' must be a string such as 'vdc'");
    }
    std::string name = bdm["device_name"].get<std::string>();
    if (name.starts_with("/dev/")) name = name.substr(5);
    if (!validDevice(name)) {
      return Error::invalid(
          fmt::format("block device 'device_name' '{}' must be a virtio disk name such as 'vdc'",
                      name.substr(0, 32)));
    }
    req.device = name;
  }
  if (bdm.contains("boot_index") && !bdm["boot_index"].is_null()) {
    if (!bdm["boot_index"].is_number_integer()) {
      return Error::invalid("block device 'boot_index' must be an integer or null");
    }
    req.boot = bdm["boot_index"].get<std::int64_t>() == 0;
  }
  if (!bdm.contains("connection_info")) {
    return Error::invalid(
        fmt::format("block device of volume '{}' has no connection_info", req.volume_id));
  }
  auto target = drivers::volume::parseIscsiConnectionInfo(bdm["connection_info"]);
  if (!target) {
    return Error::invalid(fmt::format("Volume '{}': {}", req.volume_id, target.error().message));
  }
  req.target = std::move(target).value();
  return req;
}

Result<void> assignDevices(std::vector<BlockDeviceRequest>& volumes,
                           std::vector<std::string> taken) {
  for (const auto& v : volumes) {
    if (v.device.empty()) continue;
    if (std::find(taken.begin(), taken.end(), v.device) != taken.end()) {
      return Error::invalid(
          fmt::format("Device '{}' of volume '{}' is already in use", v.device, v.volume_id));
    }
    taken.push_back(v.device);
  }
  char next = 'c';
  for (auto& v : volumes) {
    if (!v.device.empty()) continue;
    while (next <= 'z' &&
           std::find(taken.begin(), taken.end(), std::string("vd") + next) != taken.end()) {
      ++next;
    }
    if (next > 'z') return Error::invalid("Too many disks: no virtio device name is left");
    v.device = std::string("vd") + next;
    taken.push_back(v.device);
  }
  return success();
}

bool isValidProjectId(std::string_view project_id) {
  return !project_id.empty() && project_id.size() <= 64 &&
         std::all_of(project_id.begin(), project_id.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
         });
}

Result<json> parseRequestJson(std::string_view body) {
  bool too_deep = false;
  // Returning false drops the container being opened, so nothing deeper is ever built.
  json::parser_callback_t bound = [&too_deep](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxRequestJsonDepth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  json doc = json::parse(body, bound, /*allow_exceptions=*/false);
  if (too_deep) {
    return Error::invalid(
        fmt::format("The request body is nested deeper than {} levels", kMaxRequestJsonDepth));
  }
  if (doc.is_discarded()) return Error::invalid("The request body is not valid JSON");
  return doc;
}

Result<LaunchRequest> parseLaunchRequest(std::string_view body,
                                         const config::FlavorCatalog& catalog,
                                         std::string_view caller_project_id) {
  auto body_json = parseRequestJson(body);
  if (!body_json) return body_json.error();
  json doc = std::move(body_json).value();
  if (!doc.is_object()) return Error::invalid("The request body must be a JSON object");
  for (const auto& [key, value] : doc.items()) {
    (void)value;
    if (key != "uuid" && key != "name" && key != "flavor" && key != "image" &&
        key != "block_devices" && key != "project_id" && key != "network_info" &&
        key != "config_drive" && key != "hostname" && key != "availability_zone" &&
        key != "user_data" && key != "public_keys") {
      return Error::invalid(fmt::format("Unknown field '{}' in the launch request", key));
    }
  }
  LaunchRequest req;
  if (!doc.contains("uuid") || !doc["uuid"].is_string()) {
    return Error::invalid("'uuid' is required and must be a string");
  }
  auto uuid = canonicalUuid(doc["uuid"].get<std::string>());
  if (!uuid)
    return Error::invalid("'uuid' must be a UUID such as 0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10");
  req.uuid = *uuid;

  if (!doc.contains("name") || !doc["name"].is_string()) {
    return Error::invalid("'name' is required and must be a string");
  }
  req.name = doc["name"].get<std::string>();
  if (!validName(req.name)) {
    return Error::invalid("'name' must be 1 to 255 bytes without control characters");
  }

  if (!doc.contains("flavor")) return Error::invalid("'flavor' is required");
  const json& flavor = doc["flavor"];
  if (flavor.is_string()) {
    auto found = catalog.find(flavor.get<std::string>());
    if (!found) {
      return Error::invalid(fmt::format("Unknown flavor '{}'", flavor.get<std::string>()));
    }
    req.flavor = *found;
  } else if (flavor.is_object()) {
    auto f = inlineFlavor(flavor);
    if (!f) return f.error();
    req.flavor = std::move(f).value();
  } else {
    return Error::invalid(
        "'flavor' must be a flavor name or an object with vcpus, memory_mb, "
        "root_gb and ephemeral_gb");
  }

  if (doc.contains("block_devices")) {
    const json& bdms = doc["block_devices"];
    if (!bdms.is_array() || bdms.size() > 16) {
      return Error::invalid("'block_devices' must be a list of at most 16 volumes");
    }
    for (const auto& bdm : bdms) {
      auto parsed = parseBlockDevice(bdm);
      if (!parsed) return parsed.error();
      for (const auto& other : req.block_devices) {
        if (other.volume_id == parsed->volume_id) {
          return Error::invalid(
              fmt::format("Volume '{}' is listed more than once", parsed->volume_id));
        }
      }
      req.block_devices.push_back(std::move(parsed).value());
    }
  }
  auto boot_volumes = std::count_if(req.block_devices.begin(), req.block_devices.end(),
                                    [](const BlockDeviceRequest& b) { return b.boot; });
  if (boot_volumes > 1) return Error::invalid("Only one block device may have boot_index 0");

  if (boot_volumes == 0 || doc.contains("image")) {
    if (boot_volumes == 1) {
      return Error::invalid("Give either 'image' or a boot volume (boot_index 0), not both");
    }
    if (!doc.contains("image") || !doc["image"].is_object()) {
      return Error::invalid("'image' is required and must be an object with an 'id'");
    }
    const json& image = doc["image"];
    for (const auto& [key, value] : image.items()) {
      (void)value;
      if (key != "id") return Error::invalid(fmt::format("image has an unknown field '{}'", key));
    }
    if (!image.contains("id") || !image["id"].is_string()) {
      return Error::invalid("'image.id' is required and must be a string");
    }
    req.image_id = image["id"].get<std::string>();
    if (!imagecache::isSafeImageId(req.image_id)) {
      return Error::invalid(
          "'image.id' must be 1 to 128 characters of letters, digits, '.', '_' or '-'");
    }
  }

  // vda is the root disk (the image's overlay or the boot volume), vdb the ephemeral disk.
  std::vector<std::string> taken = {"vda"};
  if (req.flavor.ephemeral_gb > 0) taken.push_back("vdb");
  std::vector<BlockDeviceRequest> data_volumes;
  for (auto& b : req.block_devices) {
    if (b.boot) {
      if (!b.device.empty() && b.device != "vda") {
        return Error::invalid("The boot volume (boot_index 0) is the root disk, vda");
      }
      b.device = "vda";
    }
  }
  for (auto& b : req.block_devices) {
    if (!b.boot) data_volumes.push_back(b);
  }
  if (auto r = assignDevices(data_volumes, taken); !r) return r.error();
  std::size_t next = 0;
  for (auto& b : req.block_devices) {
    if (!b.boot) b.device = data_volumes[next++].device;
  }
  if (doc.contains("project_id")) {
    if (!doc["project_id"].is_string() || !isValidProjectId(doc["project_id"].get<std::string>())) {
      return Error::invalid(
          "'project_id' must be 1 to 64 characters of letters, digits, '_' or '-'");
    }
    req.project_id = doc["project_id"].get<std::string>();
  } else if (!caller_project_id.empty()) {
    if (!isValidProjectId(caller_project_id)) {
      return Error::invalid(
          "The caller's project is not a valid project_id (1 to 64 characters of letters, "
          "digits, '_' or '-'); name the project in 'project_id'");
    }
    req.project_id = std::string(caller_project_id);
  }
  if (auto r = parseGuestIdentity(doc, req); !r) return r.error();
  doc["uuid"] = req.uuid;  // a retry may spell the uuid in upper case
  // The owner is part of the request: the same body from another project is another request.
  // Left out when empty, so that requests from before projects keep their fingerprint.
  if (!req.project_id.empty()) doc["project_id"] = req.project_id;
  req.fingerprint = sha256Hex(doc.dump());
  return req;
}

}  // namespace kiln::api
