#include "imagecache/image_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "common/fs.h"
#include "common/log.h"
#include "common/unique_fd.h"

namespace kiln::imagecache {
namespace {

// Glance's own record fields; every other top-level key is a property.
const std::set<std::string>& glanceCoreFields() {
  static const std::set<std::string> fields = {
      "id",           "name",          "status", "visibility",   "protected",   "checksum",
      "os_hash_algo", "os_hash_value", "size",   "virtual_size", "disk_format", "container_format",
      "min_disk",     "min_ram",       "owner",  "created_at",   "updated_at",  "tags",
      "self",         "file",          "schema", "direct_url",   "locations",   "os_hidden",
      "stores"};
  return fields;
}

Result<std::optional<std::uint64_t>> optionalCount(const nlohmann::json& doc, const char* key,
                                                   const std::string& id) {
  if (!doc.contains(key) || doc[key].is_null()) return std::optional<std::uint64_t>{};
  if (!doc[key].is_number_unsigned()) {
    return Error::invalid(
        fmt::format("Image '{}' record: '{}' must be a non-negative integer", id, key));
  }
  return std::optional<std::uint64_t>(doc[key].get<std::uint64_t>());
}

Result<std::optional<std::string>> optionalString(const nlohmann::json& doc, const char* key,
                                                  const std::string& id) {
  if (!doc.contains(key) || doc[key].is_null()) return std::optional<std::string>{};
  if (!doc[key].is_string()) {
    return Error::invalid(fmt::format("Image '{}' record: '{}' must be a string", id, key));
  }
  return std::optional<std::string>(doc[key].get<std::string>());
}

}  // namespace

bool isSafeImageId(std::string_view id) {
  if (id.empty() || id.size() > 128 || id.front() == '.') return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<ImageRecord> parseImageRecord(const nlohmann::json& doc, const std::string& expected_id) {
  if (!doc.is_object()) {
    return Error::invalid(fmt::format("Image '{}' record is not a JSON object", expected_id));
  }
  ImageRecord r;
  r.id = expected_id;
  if (doc.contains("id") && (!doc["id"].is_string() || doc["id"] != expected_id)) {
    return Error::invalid(fmt::format("Image '{}' record carries a different id", expected_id));
  }
  auto text = [&](const char* key, std::string& out) -> Result<void> {
    auto v = optionalString(doc, key, expected_id);
    if (!v) return v.error();
    if (*v) out = **v;
    return success();
  };
  for (auto [key, out] : {std::pair{"name", &r.name}, std::pair{"status", &r.status},
                          std::pair{"disk_format", &r.disk_format},
                          std::pair{"container_format", &r.container_format}}) {
    if (auto t = text(key, *out); !t) return std::move(t).error();
  }
  auto size = optionalCount(doc, "size", expected_id);
  auto min_disk = optionalCount(doc, "min_disk", expected_id);
  auto min_ram = optionalCount(doc, "min_ram", expected_id);
  auto checksum = optionalString(doc, "checksum", expected_id);
  auto algo = optionalString(doc, "os_hash_algo", expected_id);
  auto value = optionalString(doc, "os_hash_value", expected_id);
  if (!size) return size.error();
  if (!min_disk) return min_disk.error();
  if (!min_ram) return min_ram.error();
  if (!checksum) return checksum.error();
  if (!algo) return algo.error();
  if (!value) return value.error();
  r.size = *size;
  r.min_disk_gb = *min_disk;
  r.min_ram_mb = *min_ram;
  r.checksum = *checksum;
  r.os_hash_algo = *algo;
  r.os_hash_value = *value;
  auto owner = optionalString(doc, "owner", expected_id);
  auto visibility = optionalString(doc, "visibility", expected_id);
  if (!owner) return owner.error();
  if (!visibility) return visibility.error();
  r.owner = owner->value_or("");
  r.visibility = visibility->value_or("");
  for (const auto& [key, v] : doc.items()) {
    if (glanceCoreFields().count(key) == 0) r.properties[key] = v;
  }
  // Locations are optional hints: a malformed one is skipped rather than failing the record, as
  // the image can still be downloaded through the API.
  auto addLocation = [&](const nlohmann::json& url) {
    if (!url.is_string()) return;
    const auto& location = url.get_ref<const std::string&>();
    if (!location.empty() &&
        std::find(r.locations.begin(), r.locations.end(), location) == r.locations.end()) {
      r.locations.push_back(location);
    }
  };
  if (doc.contains("direct_url")) addLocation(doc["direct_url"]);
  if (doc.contains("locations") && doc["locations"].is_array()) {
    for (const auto& location : doc["locations"]) {
      if (location.is_object() && location.contains("url")) addLocation(location["url"]);
    }
  }
  return r;
}

RecordAccess accessByRecord(const ImageRecord& record, std::string_view project_id) {
  if (record.owner.empty()) return RecordAccess::kAllowed;
  if (record.visibility == "public" || record.visibility == "community") {
    return RecordAccess::kAllowed;
  }
  // An instance without a project owns nothing and is nobody's member.
  if (project_id.empty()) return RecordAccess::kDenied;
  if (record.owner == project_id) return RecordAccess::kAllowed;
  if (record.visibility == "shared") return RecordAccess::kNeedsMembership;
  return RecordAccess::kDenied;
}

Error LocalDirSource::notInDirectory(const std::string& image_id) const {
  return Error::notFound(
      fmt::format("Image '{}' is not in the image directory '{}'", image_id, dir_));
}

Result<ImageRecord> LocalDirSource::getRecord(const std::string& image_id) {
  if (!isSafeImageId(image_id)) {
    return Error::invalid(fmt::format("Image id '{}' is not a valid image id", image_id));
  }
  auto text = fs::readFile(dir_ + "/" + image_id + ".json", 1024 * 1024);
  if (!text) {
    if (text.error().code == ErrorCode::kNotFound) return notInDirectory(image_id);
    return text.error();
  }
  auto doc = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Error::invalid(fmt::format("Image '{}' record is not valid JSON", image_id));
  }
  return parseImageRecord(doc, image_id);
}

Result<void> LocalDirSource::checkAccess(const std::string& image_id, const ImageUser& user) {
  auto record = getRecord(image_id);
  if (!record) return record.error();
  // Records written before kiln checked access name no visibility: they stay usable by all.
  if (record->visibility.empty()) record->visibility = "public";
  if (accessByRecord(*record, user.project_id) == RecordAccess::kAllowed) return success();
  log::info(
      "Project '{}' may not use image '{}' (owner '{}', visibility '{}'); answered as missing",
      user.project_id, image_id, record->owner, record->visibility);
  return notInDirectory(image_id);
}

Result<void> LocalDirSource::download(const ImageRecord& record, const ByteSink& sink) {
  std::string path = dir_ + "/" + record.id + ".img";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    return Error::notFound(
        fmt::format("Image '{}' has no data file '{}': {}", record.id, path, fs::errnoText(errno)));
  }
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::internal(fmt::format("Cannot read '{}': {}", path, fs::errnoText(errno)));
    }
    if (n == 0) break;
    if (auto r = sink(buf.data(), static_cast<std::size_t>(n)); !r) return r;
  }
  return success();
}

}  // namespace kiln::imagecache
