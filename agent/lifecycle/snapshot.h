#pragma once
// Snapshot: the root disk is captured while the guest is paused for a moment (one point in
// time), the guest resumes, and the copy is uploaded as a new image that inherits the base
// image's properties. A marker file names the image until the snapshot ends, so that the
// recovery after a crash discards an image that never got its bytes.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/clock.h"
#include "common/executor.h"
#include "drivers/compute_driver.h"
#include "drivers/disk/disk_builder.h"
#include "imagecache/image_uploader.h"

namespace kiln::lifecycle {

class Snapshotter {
 public:
  Snapshotter(InstanceTable& table, Executor& jobs, drivers::ComputeDriver& driver,
              drivers::disk::DiskBuilder& disks, imagecache::ImageUploader& uploader,
              const Clock& clock, const ManagerOptions& options);

  // Creates the image record (so the caller gets an id it can poll) and returns its id; the
  // capture and upload run on. kConflict when the instance is busy, not active or stopped, or
  // boots from a volume.
  Result<std::string> request(const std::string& uuid, const std::string& name,
                              const nlohmann::json& metadata);

  // The same capture into a queued image that another service created (Nova's API, which also
  // set its properties): the image gets its formats and then the bytes. The image is deleted
  // when the snapshot cannot start or fails, as nova-compute deletes it.
  Result<void> requestInto(const std::string& uuid, const std::string& image_id);

  // The snapshot markers left by a restart, listed before any new snapshot can start.
  std::vector<std::string> interruptedMarkers() const;
  // Discards the images the markers name (a restart interrupted their snapshots).
  void discardInterrupted(const std::vector<std::string>& markers);

 private:
  // Marks the image (for the recovery after a crash) and queues the capture and upload.
  Result<void> start(const EntryPtr& entry, const std::string& image_id);
  void run(const EntryPtr& entry, const std::string& image_id);
  std::string markerPath(const std::string& image_id) const;

  InstanceTable& table_;
  Executor& jobs_;
  drivers::ComputeDriver& driver_;
  drivers::disk::DiskBuilder& disks_;
  imagecache::ImageUploader& uploader_;
  const Clock& clock_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
