#include "agent/api/launch_request.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

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

}  // namespace

Result<LaunchRequest> parseLaunchRequest(std::string_view body,
                                         const config::FlavorCatalog& catalog) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Error::invalid("The request body is not valid JSON");
  if (!doc.is_object()) return Error::invalid("The request body must be a JSON object");
  for (const auto& [key, value] : doc.items()) {
    (void)value;
    if (key != "uuid" && key != "name" && key != "flavor" && key != "image") {
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
  doc["uuid"] = req.uuid;  // a retry may spell the uuid in upper case
  req.fingerprint = doc.dump();
  return req;
}

}  // namespace kiln::api
