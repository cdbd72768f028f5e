#pragma once
// Connecting a Cinder iSCSI volume to this host, in one of two ways:
//  - NativeIscsiConnector: QEMU's own initiator through a libvirt network disk; CHAP through an
//    ephemeral, private libvirt secret. No host block device, no session to clean up.
//  - KernelIscsiConnector: open-iscsi's iscsiadm (discovery, node record with CHAP, login), the
//    /dev/disk/by-path device as a block disk, logout when no other attachment uses the target.
// What is persisted about an attachment (Attachment) never holds the password.

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/command_runner.h"
#include "drivers/compute_driver.h"
#include "drivers/volume/iscsi_target.h"

namespace kiln::drivers::volume {

struct Attachment {
  std::string volume_id;
  std::string device;     // vdc, ...; vda for a boot volume
  std::string connector;  // "native" or "kernel"
  bool boot = false;
  bool read_only = false;
  std::vector<IscsiPath> paths;
  std::string auth_method;
  std::string auth_username;
  std::string secret_usage;  // native + CHAP: the libvirt secret's usage id
  std::string device_path;   // kernel: the by-path device
};

nlohmann::json attachmentToJson(const Attachment& a);
Result<Attachment> attachmentFromJson(const nlohmann::json& j);

// The disk the hypervisor sees for an attachment.
DiskSpec diskFor(const Attachment& a);

class VolumeConnector {
 public:
  virtual ~VolumeConnector() = default;
  // An Attachment with this connector's fields filled in, before anything is connected: the
  // caller records it, so that a crash in connect() leaves a record naming what to clean up.
  virtual Attachment plan(const std::string& instance_uuid, const std::string& volume_id,
                          const std::string& device, bool boot, const IscsiTarget& target) = 0;
  virtual Result<DiskSpec> connect(const Attachment& attachment, const IscsiTarget& target) = 0;
  // `others` are every other attachment on this host (shared targets stay logged in).
  // Idempotent: disconnecting what is not connected succeeds.
  virtual Result<void> disconnect(const Attachment& attachment,
                                  const std::vector<Attachment>& others) = 0;
  // Re-creates host-side state that a libvirtd restart loses (the native connector's secret).
  virtual Result<void> restore(const Attachment& attachment, const std::string& password) = 0;
};

class NativeIscsiConnector final : public VolumeConnector {
 public:
  explicit NativeIscsiConnector(ComputeDriver& driver) : driver_(driver) {}
  Attachment plan(const std::string& instance_uuid, const std::string& volume_id,
                  const std::string& device, bool boot, const IscsiTarget& target) override;
  Result<DiskSpec> connect(const Attachment& attachment, const IscsiTarget& target) override;
  Result<void> disconnect(const Attachment& attachment,
                          const std::vector<Attachment>& others) override;
  Result<void> restore(const Attachment& attachment, const std::string& password) override;

 private:
  ComputeDriver& driver_;
};

struct KernelIscsiOptions {
  std::string iscsiadm = "iscsiadm";
  std::string device_dir = "/dev/disk/by-path";
  std::chrono::milliseconds device_wait{std::chrono::seconds(10)};
  // open-iscsi's node database ([libvirt] iscsi_node_dir): the CHAP password is written into the
  // target's record here, never passed on iscsiadm's command line.
  std::string node_dir = "/etc/iscsi/nodes";
};

class KernelIscsiConnector final : public VolumeConnector {
 public:
  KernelIscsiConnector(CommandRunner& runner, KernelIscsiOptions options)
      : runner_(runner), options_(std::move(options)) {}
  Attachment plan(const std::string& instance_uuid, const std::string& volume_id,
                  const std::string& device, bool boot, const IscsiTarget& target) override;
  Result<DiskSpec> connect(const Attachment& attachment, const IscsiTarget& target) override;
  Result<void> disconnect(const Attachment& attachment,
                          const std::vector<Attachment>& others) override;
  Result<void> restore(const Attachment&, const std::string&) override { return success(); }

 private:
  Result<CommandOutput> iscsiadm(std::vector<std::string> args, bool allow_fail = false);
  Result<void> writeRecordPassword(const IscsiPath& path, const std::string& password);
  CommandRunner& runner_;
  KernelIscsiOptions options_;
};

}  // namespace kiln::drivers::volume
