#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "drivers/compute_driver.h"
#include "drivers/libvirt/connection.h"
#include "drivers/libvirt/firmware.h"
#include "drivers/libvirt/handles.h"

namespace kiln::drivers::libvirt {

struct LibvirtDriverOptions {
  ConnectionOptions connection;
  std::string virt_type = "kvm";  // the domain type: kvm, qemu (or test)
  std::string machine_type = "pc";
  std::string cpu_mode;
  // UEFI firmware: found through QEMU's firmware descriptors unless both paths are given.
  std::string uefi_loader;
  std::string uefi_nvram_template;
  std::vector<std::string> firmware_dirs = defaultFirmwareDescriptorDirs();
  // Named in the description of every secret this driver defines (kilnd passes its instances
  // directory), so that the recovery sweep can prove a secret is this kilnd's before removing it.
  std::string secret_owner;
};

class LibvirtDriver final : public ComputeDriver {
 public:
  explicit LibvirtDriver(LibvirtDriverOptions options);
  ~LibvirtDriver() override;

  // Starts the connection machinery; a failure to connect now is reported but kilnd keeps
  // running and reconnects when libvirtd comes back.
  Result<void> start();
  void stop();

  Result<void> spawn(const InstanceSpec& spec, Timeline& timeline) override;
  Result<void> destroy(const std::string& uuid) override;
  Result<bool> powerOff(const std::string& uuid, std::chrono::seconds grace) override;
  Result<void> powerOn(const std::string& uuid) override;
  Result<bool> reboot(const std::string& uuid, bool hard, std::chrono::seconds grace) override;
  Result<bool> pause(const std::string& uuid) override;
  Result<void> resume(const std::string& uuid) override;
  Result<std::optional<PowerState>> powerState(const std::string& uuid) override;
  Result<std::vector<DomainStatus>> listManaged() override;
  Result<HypervisorInfo> hypervisorInfo() override;
  Result<std::optional<DomainDevices>> domainDevices(const std::string& uuid) override;
  Result<std::optional<DomainDescription>> describe(const std::string& uuid) override;
  Result<void> defineSecret(const std::string& usage, const std::string& value) override;
  Result<void> undefineSecret(const std::string& usage) override;
  Result<bool> secretExists(const std::string& usage) override;
  Result<void> defineDiskSecret(const std::string& uuid, const std::string& disk_path,
                                const std::string& passphrase) override;
  Result<void> undefineDiskSecret(const std::string& disk_path) override;
  Result<bool> diskSecretExists(const std::string& disk_path) override;
  Result<std::vector<SecretInfo>> listSecrets() override;
  Result<void> removeSecret(const std::string& secret_uuid) override;
  Result<void> attachDisk(const std::string& uuid, const DiskSpec& disk) override;
  Result<void> detachDisk(const std::string& uuid, const DiskSpec& disk) override;
  Result<void> attachInterface(const std::string& uuid, const NicSpec& nic) override;
  Result<void> detachInterface(const std::string& uuid, const NicSpec& nic,
                               std::chrono::milliseconds timeout) override;
  bool connected() const override { return connection_.connected(); }
  void setEventSink(std::function<void(const DomainEvent&)> sink) override;
  void setReconnectHook(std::function<void()> hook) override;

  // The XML spawn() would define, for tests and the benchmark's floor.
  Result<std::string> domainXml(const InstanceSpec& spec) const;

 private:
  Error failed(std::string_view what);
  Result<std::string> liveXml(virDomainPtr dom);
  Result<DomainHandle> lookup(const std::string& uuid);
  // Secrets by usage type (VIR_SECRET_USAGE_TYPE_ISCSI or _VOLUME) and usage id.
  Result<SecretHandle> lookupSecret(int usage_type, const std::string& usage);
  Result<void> defineSecretOf(int usage_type, const std::string& usage, const std::string& uuid,
                              const char* description, const std::string& value);
  Result<void> undefineSecretOf(int usage_type, const std::string& usage);
  // The host's capabilities XML, read once per connection (machine types do not change).
  Result<std::string> capabilities(virConnectPtr conn);
  // Device-removed events ("<uuid>/<alias>") not yet claimed by a detach waiting for them.
  std::mutex removed_mutex_;
  std::condition_variable removed_cv_;
  std::set<std::string> removed_devices_;
  std::mutex caps_mutex_;
  std::string caps_xml_;
  LibvirtDriverOptions options_;
  Connection connection_;
};

}  // namespace kiln::drivers::libvirt
