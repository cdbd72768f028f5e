#include "agent/lifecycle/instance_manager.h"

#include <fmt/format.h>

#include "common/fs.h"

namespace kiln::lifecycle {

using state::InstanceRecord;

InstanceManager::InstanceManager(drivers::ComputeDriver& driver, imagecache::ImageCache& cache,
                                 drivers::disk::DiskBuilder& disks,
                                 drivers::volume::VolumeConnector& volumes,
                                 const SecretBox& secrets, imagecache::ImageUploader& uploader,
                                 state::InstanceStore& store, const Clock& clock, Executor& jobs,
                                 ManagerOptions options)
    : options_(std::move(options)),
      jobs_(jobs),
      table_(store, clock),
      resources_(table_, driver, volumes, secrets, options_),
      launcher_(table_, jobs_, driver, cache, disks, resources_, secrets, clock, options_),
      deleter_(table_, jobs_, driver, resources_, options_),
      power_(table_, jobs_, driver, resources_, options_),
      snapshots_(table_, jobs_, driver, disks, uploader, clock, options_),
      volume_actions_(table_, jobs_, driver, volumes, resources_, options_),
      interface_actions_(table_, jobs_, driver, resources_, options_),
      recovery_(table_, jobs_, driver, volumes, resources_, deleter_, snapshots_, options_),
      sweep_(table_, driver, clock,
             {options_.instances_dir, options_.quarantine_dir, options_.orphan_action,
              options_.orphan_grace, options_.ephemeral_clear, options_.host_network}),
      reconciler_(table_, jobs_, driver, resources_, deleter_, recovery_, sweep_,
                  options_.reconcile_interval) {}

InstanceManager::~InstanceManager() {
  shutdown();
  jobs_.close();
}

void InstanceManager::shutdown() {
  shutting_down_ = true;
  table_.stopWaiting();
  reconciler_.stop();
}

Result<void> InstanceManager::recover() { return recovery_.recover(); }

Result<InstanceRecord> InstanceManager::launch(const api::LaunchRequest& request) {
  if (shutting_down_) return Error::unavailable("kilnd is shutting down");
  return launcher_.accept(request);
}

Result<InstanceRecord> InstanceManager::requestDelete(const std::string& uuid) {
  return deleter_.request(uuid);
}

Result<InstanceRecord> InstanceManager::powerAction(const std::string& uuid, PowerAction action) {
  return power_.request(uuid, action);
}

Result<std::string> InstanceManager::snapshot(const std::string& uuid, const std::string& name,
                                              const nlohmann::json& metadata) {
  return snapshots_.request(uuid, name, metadata);
}

Result<void> InstanceManager::snapshotInto(const std::string& uuid, const std::string& image_id) {
  if (shutting_down_) return Error::unavailable("kilnd is shutting down");
  return snapshots_.requestInto(uuid, image_id);
}

Result<InstanceRecord> InstanceManager::attachVolume(const std::string& uuid,
                                                     api::BlockDeviceRequest request) {
  return volume_actions_.attach(uuid, std::move(request));
}

Result<InstanceRecord> InstanceManager::attachInterface(const std::string& uuid,
                                                        api::VifRequest request) {
  return interface_actions_.attach(uuid, std::move(request));
}

Result<InstanceRecord> InstanceManager::detachInterface(const std::string& uuid,
                                                        const std::string& port_id) {
  return interface_actions_.detach(uuid, port_id);
}

Result<InstanceRecord> InstanceManager::detachVolume(const std::string& uuid,
                                                     const std::string& volume_id) {
  return volume_actions_.detach(uuid, volume_id);
}

Result<InstanceRecord> InstanceManager::get(const std::string& uuid) const {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  return table_.read(*entry);
}

Result<std::optional<InstanceRecord>> InstanceManager::waitFor(
    const std::string& uuid, const std::function<bool(const InstanceRecord&)>& done,
    std::chrono::milliseconds timeout) const {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return std::optional<InstanceRecord>();
  return table_.waitFor(*entry, done, timeout);
}

void InstanceManager::stopWaiting() { table_.stopWaiting(); }

bool InstanceManager::stoppedWaiting() const { return table_.stoppedWaiting(); }

std::vector<InstanceRecord> InstanceManager::list() const { return table_.records(); }

Result<std::string> InstanceManager::consoleLog(const std::string& uuid,
                                                std::uint64_t max_bytes) const {
  if (!table_.find(uuid)) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  auto text = fs::readFileTail(resources_.instanceDir(uuid) + "/console.log", max_bytes);
  if (!text && text.error().code == ErrorCode::kNotFound) return std::string();
  return text;
}

Usage InstanceManager::usage() const {
  Usage u;
  for (const auto& rec : list()) {
    ++u.instances;
    u.vcpus += rec.flavor.vcpus;
    u.memory_mb += rec.flavor.memory_mb;
    u.disk_gb += rec.flavor.root_gb + rec.flavor.ephemeral_gb;
  }
  return u;
}

std::set<std::string> InstanceManager::imagesInUse() const {
  std::set<std::string> ids;
  for (const auto& rec : list()) ids.insert(rec.image_id);
  return ids;
}

std::vector<sync::Orphan> InstanceManager::orphans() const { return sweep_.orphans(); }

void InstanceManager::reconcileAll() { reconciler_.reconcileAll(); }

void InstanceManager::onDomainEvent(const drivers::DomainEvent& event) {
  reconciler_.onDomainEvent(event);
}

void InstanceManager::startReconciler() { reconciler_.start(); }

void InstanceManager::requestReconcile() { reconciler_.requestPass(); }

void InstanceManager::setLaunchBoundaryHookForTest(
    std::function<void(std::string_view boundary)> hook) {
  launcher_.setBoundaryHookForTest(std::move(hook));
}

}  // namespace kiln::lifecycle
