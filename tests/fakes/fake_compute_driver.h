#pragma once
// A ComputeDriver that keeps domains in a map, records calls and fails on request.

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "drivers/compute_driver.h"

namespace kiln::testing {

class FakeComputeDriver final : public drivers::ComputeDriver {
 public:
  Result<void> spawn(const drivers::InstanceSpec& spec, Timeline& timeline) override {
    std::lock_guard lock(mutex_);
    auto step = timeline.step("domain.start");
    spawned.push_back(spec);
    if (fail_spawn) {
      step.fail();
      return *fail_spawn;
    }
    domains[spec.uuid] = drivers::PowerState::kRunning;
    return success();
  }
  Result<void> destroy(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    destroyed.push_back(uuid);
    if (fail_destroy) return *fail_destroy;
    domains.erase(uuid);
    return success();
  }
  Result<bool> powerOff(const std::string& uuid, std::chrono::seconds) override {
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return Error::notFound("no domain");
    domains[uuid] = drivers::PowerState::kShutoff;
    return true;
  }
  Result<void> powerOn(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return Error::notFound("no domain");
    domains[uuid] = drivers::PowerState::kRunning;
    return success();
  }
  Result<bool> reboot(const std::string& uuid, bool hard, std::chrono::seconds) override {
    ++reboots_started_;
    if (before_reboot) before_reboot();  // outside the lock: a test may hold the reboot here
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return Error::notFound("no domain");
    ++reboots;
    return !hard;
  }
  Result<bool> pause(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return Error::notFound("no domain");
    bool running = domains[uuid] == drivers::PowerState::kRunning;
    if (running) domains[uuid] = drivers::PowerState::kPaused;
    ++pauses;
    return running;
  }
  Result<void> resume(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    domains[uuid] = drivers::PowerState::kRunning;
    return success();
  }
  Result<std::optional<drivers::PowerState>> powerState(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    if (fail_queries) return *fail_queries;
    auto it = domains.find(uuid);
    if (it == domains.end()) return std::optional<drivers::PowerState>{};
    return std::optional<drivers::PowerState>(it->second);
  }
  Result<std::vector<drivers::DomainStatus>> listManaged() override {
    std::lock_guard lock(mutex_);
    std::vector<drivers::DomainStatus> out;
    for (auto& [uuid, power] : domains) out.push_back({uuid, power});
    return out;
  }
  Result<drivers::HypervisorInfo> hypervisorInfo() override {
    drivers::HypervisorInfo info;
    info.type = "QEMU";
    info.version = "7.2.0";
    info.version_number = 7002000;
    info.libvirt_version = "9.0.0";
    info.cpus = 8;
    info.memory_mb = 16384;
    info.cpu_arch = "x86_64";
    info.cpu_model = "qemu64";
    info.cpu_vendor = "AMD";
    info.cpu_sockets = 1;
    info.cpu_cores = 8;
    info.cpu_threads = 1;
    return info;
  }
  Result<void> defineSecret(const std::string& usage, const std::string& value) override {
    std::lock_guard lock(mutex_);
    if (fail_secret) return *fail_secret;
    secrets[usage] = value;
    return success();
  }
  Result<void> undefineSecret(const std::string& usage) override {
    std::lock_guard lock(mutex_);
    secrets.erase(usage);
    return success();
  }
  Result<bool> secretExists(const std::string& usage) override {
    std::lock_guard lock(mutex_);
    return secrets.count(usage) != 0;
  }
  Result<void> defineDiskSecret(const std::string& uuid, const std::string& disk_path,
                                const std::string& passphrase) override {
    std::lock_guard lock(mutex_);
    if (fail_secret) return *fail_secret;
    disk_secrets[disk_path] = {uuid, passphrase};
    return success();
  }
  Result<void> undefineDiskSecret(const std::string& disk_path) override {
    std::lock_guard lock(mutex_);
    disk_secrets.erase(disk_path);
    return success();
  }
  Result<bool> diskSecretExists(const std::string& disk_path) override {
    std::lock_guard lock(mutex_);
    return disk_secrets.count(disk_path) != 0;
  }
  Result<std::vector<drivers::SecretInfo>> listSecrets() override {
    std::lock_guard lock(mutex_);
    std::vector<drivers::SecretInfo> out;
    for (const auto& [usage, value] : secrets) {
      out.push_back({usage, "iscsi", usage, secret_descriptions[usage]});
    }
    for (const auto& [path, secret] : disk_secrets)
      out.push_back({secret.first, "volume", path, ""});
    return out;
  }
  Result<void> removeSecret(const std::string& secret_uuid) override {
    std::lock_guard lock(mutex_);
    secrets.erase(secret_uuid);
    std::erase_if(disk_secrets, [&](const auto& kv) { return kv.second.first == secret_uuid; });
    return success();
  }
  // What the spawned spec said, as libvirt would give it back.
  Result<std::optional<drivers::DomainDescription>> describe(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    if (fail_queries) return *fail_queries;
    auto power = domains.find(uuid);
    if (power == domains.end()) return std::optional<drivers::DomainDescription>{};
    for (auto it = spawned.rbegin(); it != spawned.rend(); ++it) {
      if (it->uuid != uuid) continue;
      drivers::DomainDescription d;
      d.uuid = uuid;
      d.display_name = it->display_name;
      d.project_id = it->project_id;
      d.image_id = it->image_id;
      d.flavor_name = it->flavor_name;
      d.created_at = it->created_at;
      d.vcpus = it->vcpus;
      d.memory_mb = it->memory_mb;
      d.disks = it->disks;
      for (const auto& extra : attached_specs[uuid]) d.disks.push_back(extra);
      d.cdrom_path = it->cdrom_path;
      d.power = power->second;
      return std::optional<drivers::DomainDescription>(d);
    }
    return std::optional<drivers::DomainDescription>{};
  }
  Result<std::optional<drivers::DomainDevices>> domainDevices(const std::string& uuid) override {
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return std::optional<drivers::DomainDevices>{};
    drivers::DomainDevices devices;
    for (const auto& spec : spawned) {
      if (spec.uuid != uuid) continue;
      for (const auto& d : spec.disks) {
        devices.disk_targets.insert(d.device);
        if (!d.path.empty()) devices.files.push_back(d.path);
      }
      devices.files.push_back(spec.console_log_path);
    }
    for (const auto& dev : attached[uuid]) devices.disk_targets.insert(dev);
    return std::optional<drivers::DomainDevices>(devices);
  }
  Result<void> attachDisk(const std::string& uuid, const drivers::DiskSpec& disk) override {
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return Error::notFound("no domain");
    attached[uuid].push_back(disk.device);
    attached_specs[uuid].push_back(disk);
    return success();
  }
  Result<void> detachDisk(const std::string& uuid, const drivers::DiskSpec& disk) override {
    std::lock_guard lock(mutex_);
    auto& list = attached[uuid];
    list.erase(std::remove(list.begin(), list.end(), disk.device), list.end());
    std::erase_if(attached_specs[uuid], [&](const auto& d) { return d.device == disk.device; });
    return success();
  }
  Result<void> attachInterface(const std::string& uuid, const drivers::NicSpec& nic) override {
    std::lock_guard lock(mutex_);
    if (domains.count(uuid) == 0) return Error::notFound("no domain");
    if (fail_interface) return *fail_interface;
    attached_nics[uuid].push_back(nic.port_id);
    return success();
  }
  Result<void> detachInterface(const std::string& uuid, const drivers::NicSpec& nic,
                               std::chrono::milliseconds) override {
    std::lock_guard lock(mutex_);
    if (fail_interface) return *fail_interface;
    std::erase(attached_nics[uuid], nic.port_id);
    return success();
  }
  bool connected() const override { return true; }
  void setEventSink(std::function<void(const drivers::DomainEvent&)>) override {}
  void setReconnectHook(std::function<void()>) override {}

  void setPower(const std::string& uuid, drivers::PowerState p) {
    std::lock_guard lock(mutex_);
    domains[uuid] = p;
  }
  bool hasDomain(const std::string& uuid) {
    std::lock_guard lock(mutex_);
    return domains.count(uuid) != 0;
  }

  std::mutex mutex_;
  std::map<std::string, std::vector<std::string>> attached_nics;  // uuid -> port ids
  std::optional<Error> fail_interface;
  std::atomic<int> reboots_started_{0};
  std::map<std::string, drivers::PowerState> domains;
  std::vector<drivers::InstanceSpec> spawned;
  std::vector<std::string> destroyed;
  std::optional<Error> fail_spawn;
  std::optional<Error> fail_destroy;
  // libvirt answering errors to questions about domains (powerState).
  std::optional<Error> fail_queries;
  std::optional<Error> fail_secret;
  int reboots = 0;
  // Called as a reboot begins, on the rebooting thread; set before the reboot is requested.
  std::function<void()> before_reboot;
  int rebootsStarted() const { return reboots_started_; }
  int pauses = 0;
  std::map<std::string, std::string> secrets;
  // disk path -> {secret uuid, passphrase}
  std::map<std::string, std::pair<std::string, std::string>> disk_secrets;
  std::map<std::string, std::string> secret_descriptions;
  std::map<std::string, std::vector<std::string>> attached;
  std::map<std::string, std::vector<drivers::DiskSpec>> attached_specs;
};

}  // namespace kiln::testing
