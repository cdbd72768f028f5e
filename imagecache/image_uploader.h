#pragma once
// Where snapshots go: new images in the local image directory or in Glance v2. Uploading is two
// steps so the API can answer with the new image's id at once, before the (long) capture and
// upload finish:
//
//   create(NewImage) -> id        the image exists, without bytes (Glance: status "queued")
//   upload(id, file)              the bytes go in and the image becomes "active"; on any failure
//                                 the image is deleted, so no half image is ever left behind
//   discard(id)                   the capture failed: the created image goes away
//
// or, when another service made the record (Nova's API creates a snapshot's image before it
// asks the compute host for the bytes):
//
//   adopt(id, formats)            the queued image is checked and given its formats, then
//   upload(id, file) as above
//
// Both implementations describe the image with Glance's field names, so LocalDirSource and
// GlanceSource read back exactly what was written.

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>

#include "common/result.h"
#include "imagecache/glance_source.h"
#include "imagecache/http_client.h"

namespace kiln::imagecache {

class GlanceEndpoint;

struct NewImage {
  std::string name;
  std::string disk_format;  // "qcow2" or "raw"
  std::string container_format = "bare";
  // The project the image belongs to (Glance's `owner`): a snapshot is its instance's project's,
  // private to it. Empty: no owner is named and the image service decides (Glance: the project of
  // kiln's token; the local directory: an image without an owner, which every project may use).
  // Naming another project than its own token's needs kiln's Glance user to be an admin there.
  std::string owner;
  // Glance custom properties (hw_*, os_*, image_type, instance_uuid, ...): string values only;
  // keys [a-z0-9_:.-]{1,255}, neither a core Glance field nor in Glance's reserved os_glance_*
  // namespace. Null counts as no properties.
  nlohmann::json properties = nlohmann::json::object();
};

// What create() checks before anything is written or sent; the API can call it to answer 400
// before starting a capture.
Result<void> validateNewImage(const NewImage& image);

class ImageUploader {
 public:
  virtual ~ImageUploader() = default;
  // Reserves the new image's id (Glance: POST /v2/images; local: a random uuid), so the API can
  // answer with it before the upload finishes.
  virtual Result<std::string> create(const NewImage& image) = 0;
  // Uploads the file's bytes (streamed, never read whole into memory) and makes the image
  // active. On any failure the image is deleted: no half image is left behind. Repeating it for
  // an image already active with exactly this file's bytes succeeds (a retry after a crash);
  // with another file, or none, that too is a failure and the image goes.
  virtual Result<void> upload(const std::string& image_id, const std::string& file_path) = 0;
  // Removes a created image that will not be uploaded (e.g. the capture failed). An image that
  // is already gone is not an error: discard may be repeated (after a crash, say).
  virtual Result<void> discard(const std::string& image_id) = 0;
  // Takes over a queued image that someone else created, so that upload() can fill it: it must
  // exist and be queued (kConflict otherwise, kNotFound when it is gone), and gets the formats
  // of the file that will be uploaded. Nothing is deleted when it fails.
  virtual Result<void> adopt(const std::string& image_id, const std::string& disk_format,
                             const std::string& container_format) = 0;
};

// The local image directory that LocalDirSource reads. create() writes the request to
// <dir>/.<id>.queued (ids never start with a dot, so this name is never an image's); upload()
// copies the file to <dir>/.<id>.img.tmp-*, hashing it on the way (md5 and sha512), fsyncs it,
// renames it to <dir>/<id>.img and then writes <dir>/<id>.json the same way (temp file, fsync,
// rename, directory fsync). The record appears last, so a reader that finds <id>.json always
// finds all of <id>.img; removal goes the other way round. Safe for concurrent calls on
// different ids.
class LocalDirUploader final : public ImageUploader {
 public:
  explicit LocalDirUploader(std::string dir) : dir_(std::move(dir)) {}

  Result<std::string> create(const NewImage& image) override;
  Result<void> upload(const std::string& image_id, const std::string& file_path) override;
  Result<void> discard(const std::string& image_id) override;
  // Images made elsewhere are Glance's: the local directory has no one else who creates them.
  Result<void> adopt(const std::string& image_id, const std::string& disk_format,
                     const std::string& container_format) override;

 private:
  std::string dir_;
};

// Glance v2, with GlanceSource's options, retries and failover (see glance_source.h):
//   create   POST /v2/images with a client-chosen "id", so that a retry after a lost answer
//            (409: the id exists) finds the image it made instead of making a second one
//   upload   PUT /v2/images/{id}/file (application/octet-stream) streamed from the file, hashed
//            while it goes out; retried from the first byte on a broken transfer, 5xx or 429.
//            Then GET /v2/images/{id} must show status active, the file's size and its md5 and
//            sha512. A 409 (the image is no longer queued, e.g. "saving" after a partial upload)
//            is final unless that record shows an earlier attempt already completed.
//   discard  DELETE /v2/images/{id}; 404 counts as done. upload() calls it on every failure.
//   adopt    GET /v2/images/{id} (must be queued), then PATCH its disk_format and
//            container_format (a JSON patch, as glanceclient sends it for nova-compute)
// Safe to use from several threads at once if the HttpClient is.
class GlanceUploader final : public ImageUploader {
 public:
  using Sleeper = GlanceSource::Sleeper;

  // Validates the options (validateGlanceOptions); the direct-download options are unused.
  // `http` must outlive the uploader. An empty `sleep` sleeps for real.
  static Result<std::unique_ptr<GlanceUploader>> make(GlanceOptions options, HttpClient& http,
                                                      Sleeper sleep = {});
  ~GlanceUploader() override;

  Result<std::string> create(const NewImage& image) override;
  Result<void> upload(const std::string& image_id, const std::string& file_path) override;
  Result<void> discard(const std::string& image_id) override;
  Result<void> adopt(const std::string& image_id, const std::string& disk_format,
                     const std::string& container_format) override;

 private:
  GlanceUploader(std::unique_ptr<GlanceEndpoint> endpoint, HttpClient& http,
                 std::unique_ptr<GlanceSource> records);

  // DELETE /v2/images/{id}; 404 counts as done.
  Result<void> remove(const std::string& image_id, unsigned max_attempts);
  // Deletes the image after a failed upload; returns `cause`, noting a failed delete in it.
  Error deleteAfterFailure(const std::string& image_id, Error cause);

  // The options, the requests and the retries with failover (its own preferred server).
  std::unique_ptr<GlanceEndpoint> endpoint_;
  HttpClient& http_;
  // Reads the records back (the 409 checks, the check after an upload).
  std::unique_ptr<GlanceSource> records_;
};

}  // namespace kiln::imagecache
