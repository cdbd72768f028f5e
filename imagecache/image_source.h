#pragma once
// Where base images come from: the local image directory (the embedded default) or Glance v2.
// Both describe an image with Glance's field names, and both decide by Glance's rules which
// projects may boot an image (checkAccess).

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
  // The project that owns the image; empty when the record names none (null or absent).
  std::string owner;
  // public, community, shared or private; empty when the record does not say.
  std::string visibility;
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

// Who wants to boot an image: the instance's project and, when the caller spoke for that very
// project with a Keystone token, that token, so that Glance answers with the project's own view
// (as nova asks Glance with the user's token). Without a token the source asks with its own
// credentials and judges the record by the rules below.
struct ImageUser {
  std::string project_id;  // empty: an instance without a project
  std::string token;       // never logged, never stored
};

// Glance's own rules for who may use an image (glance.db.is_image_visible), applied to the
// instance's project rather than to the caller, so an admin's token grants nothing extra:
//   no owner                      every project (Glance's rule for images nobody owns)
//   visibility public, community  every project
//   owner == project              that project
//   visibility shared             projects whose membership is accepted (kNeedsMembership)
//   anything else                 nobody
enum class RecordAccess { kAllowed, kDenied, kNeedsMembership };
RecordAccess accessByRecord(const ImageRecord& record, std::string_view project_id);

// Receives the image bytes in order; returning an error aborts the transfer.
using ByteSink = std::function<Result<void>(const char* data, std::size_t len)>;

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual Result<ImageRecord> getRecord(const std::string& image_id) = 0;
  virtual Result<void> download(const ImageRecord& record, const ByteSink& sink) = 0;
  // Whether `user`'s project may boot image `image_id`, asked afresh on every launch (cached or
  // not: a visibility or a membership may have changed since). A denied image fails exactly as a
  // missing one (kNotFound, in the same words), so that no project learns which images other
  // projects have.
  virtual Result<void> checkAccess(const std::string& image_id, const ImageUser& user) = 0;
};

// The embedded default: <dir>/<id>.json holds the record, <dir>/<id>.img the bytes. Access
// follows the record's `owner` and `visibility` (accessByRecord); a record without `visibility`
// is public, as every record was before kiln checked access. The directory has no member lists,
// so a `shared` image is its owner's only.
class LocalDirSource final : public ImageSource {
 public:
  explicit LocalDirSource(std::string dir) : dir_(std::move(dir)) {}
  Result<ImageRecord> getRecord(const std::string& image_id) override;
  Result<void> download(const ImageRecord& record, const ByteSink& sink) override;
  Result<void> checkAccess(const std::string& image_id, const ImageUser& user) override;

 private:
  Error notInDirectory(const std::string& image_id) const;

  std::string dir_;
};

}  // namespace kiln::imagecache
