#pragma once
// Where base images come from: the local image directory (the embedded default) or, later,
// Glance v2. Both describe an image with Glance's field names.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace kiln::imagecache {

struct ImageRecord {
  std::string id;
  std::string name;
  std::string status = "active";
  std::string disk_format;
  std::string container_format;
  std::optional<std::uint64_t> size;
  std::optional<std::uint64_t> min_disk_gb;
  std::optional<std::uint64_t> min_ram_mb;
  std::optional<std::string> checksum;  // legacy md5
  std::optional<std::string> os_hash_algo;
  std::optional<std::string> os_hash_value;
  // Every other top-level key: the image's properties (hw_*, os_*, ...), as Glance returns them.
  nlohmann::json properties = nlohmann::json::object();
  // Where the store keeps the bytes, as URLs (file:///var/lib/glance/images/<id>, rbd://...):
  // `direct_url` first, then each `locations[].url` not already listed. Glance shows them only
  // with show_image_direct_url / show_multiple_locations. Hints, never trusted: a source that
  // reads one checks it against its own allow-list, and the cache verifies the bytes anyway.
  std::vector<std::string> locations;
};

// Parses a Glance v2 image record (also the format of the local directory's <id>.json).
Result<ImageRecord> parseImageRecord(const nlohmann::json& doc, const std::string& expected_id);

// Image ids become file names in the local directory: only [A-Za-z0-9._-], 1 to 128 characters,
// not starting with a dot.
bool isSafeImageId(std::string_view id);

// Receives the image bytes in order; returning an error aborts the transfer.
using ByteSink = std::function<Result<void>(const char* data, std::size_t len)>;

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual Result<ImageRecord> getRecord(const std::string& image_id) = 0;
  virtual Result<void> download(const ImageRecord& record, const ByteSink& sink) = 0;
};

// The embedded default: <dir>/<id>.json holds the record, <dir>/<id>.img the bytes.
class LocalDirSource final : public ImageSource {
 public:
  explicit LocalDirSource(std::string dir) : dir_(std::move(dir)) {}
  Result<ImageRecord> getRecord(const std::string& image_id) override;
  Result<void> download(const ImageRecord& record, const ByteSink& sink) override;

 private:
  std::string dir_;
};

}  // namespace kiln::imagecache
