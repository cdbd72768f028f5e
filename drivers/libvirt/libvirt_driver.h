#pragma once
#include <memory>

#include "drivers/compute_driver.h"
#include "drivers/libvirt/connection.h"

namespace kiln::drivers::libvirt {

struct LibvirtDriverOptions {
  ConnectionOptions connection;
  std::string virt_type = "kvm";  // the domain type: kvm, qemu (or test)
  std::string machine_type = "pc";
  std::string cpu_mode;
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
  Result<std::optional<PowerState>> powerState(const std::string& uuid) override;
  Result<std::vector<DomainStatus>> listManaged() override;
  Result<HypervisorInfo> hypervisorInfo() override;
  Result<void> defineSecret(const std::string& usage, const std::string& value) override;
  Result<void> undefineSecret(const std::string& usage) override;
  Result<bool> secretExists(const std::string& usage) override;
  Result<void> attachDisk(const std::string& uuid, const DiskSpec& disk) override;
  Result<void> detachDisk(const std::string& uuid, const DiskSpec& disk) override;
  bool connected() const override { return connection_.connected(); }
  void setEventSink(std::function<void(const DomainEvent&)> sink) override;
  void setReconnectHook(std::function<void()> hook) override;

  // The XML spawn() would define, for tests and the benchmark's floor.
  std::string domainXml(const InstanceSpec& spec) const;

 private:
  Error failed(std::string_view what);
  Result<std::string> liveXml(virDomainPtr dom);
  LibvirtDriverOptions options_;
  Connection connection_;
};

}  // namespace kiln::drivers::libvirt
