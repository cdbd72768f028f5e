#pragma once
// What an instance owns on this host besides its domain: its directory and files, the
// connections of its volumes (and their CHAP secrets), and the keys of its encrypted disks. Made
// by the launch and the volume actions, restored by reconcile and start when libvirtd forgot them,
// and released by a rolled-back launch and by delete.

#include <string>
#include <string_view>
#include <vector>

#include "agent/api/launch_request.h"
#include "agent/lifecycle/instance_table.h"
#include "agent/lifecycle/manager_options.h"
#include "common/secret_box.h"
#include "drivers/compute_driver.h"
#include "drivers/volume/volume_connector.h"

namespace kiln::lifecycle {

class InstanceResources {
 public:
  InstanceResources(InstanceTable& table, drivers::ComputeDriver& driver,
                    drivers::volume::VolumeConnector& volumes, const SecretBox& secrets,
                    const ManagerOptions& options);

  std::string instanceDir(const std::string& uuid) const;

  // Records the attachment (its CHAP password sealed) before anything is connected, so a crash
  // leaves a record naming the secret or session to remove; then connects it. `operation`
  // ("launch" or "attach") names the failpoints around the connection.
  Result<drivers::DiskSpec> connectVolume(InstanceTable::Entry& entry,
                                          const api::BlockDeviceRequest& bdm,
                                          std::string_view operation);
  // Disconnects every volume the record names (never wiping them: their data is the user's);
  // the first failure is returned after trying them all.
  Result<void> disconnectVolumes(const InstanceTable::Entry& entry);
  // Every volume attachment on this host except those of `uuid`: shared targets stay logged in.
  std::vector<drivers::volume::Attachment> otherAttachments(const std::string& uuid) const;
  // Defines again the CHAP secrets libvirtd lost (a libvirtd restart forgets ephemeral secrets).
  void restoreVolumeSecrets(const InstanceTable::Entry& entry);

  // Crypto-erase: undefines the encrypted disks' libvirt secrets, then erases their sealed keys
  // from the record and writes it (and the store's history), all before any file is touched.
  Result<void> destroyDiskKeys(InstanceTable::Entry& entry);
  // Defines again the disk secrets libvirtd lost.
  void restoreDiskSecrets(const InstanceTable::Entry& entry);

  // Makes the host side of every NIC the record names (taps, bridges, filters); idempotent, so
  // it also restores taps a host reboot removed. The first failure is returned.
  Result<void> plugInterfaces(const InstanceTable::Entry& entry);
  Result<void> plugInterface(const std::string& uuid, const drivers::NicSpec& nic);
  // Removes the taps and filters of every NIC the record names; the first failure is returned
  // after trying them all.
  Result<void> unplugInterfaces(const InstanceTable::Entry& entry);
  Result<void> unplugInterface(const std::string& uuid, const drivers::NicSpec& nic);

  // Clears the instance directory's files (ephemeral_clear), then removes the directory.
  Result<void> purgeFiles(const std::string& uuid);

  // Everything a launch may have made, for its rollback: the domain, the volume connections, the
  // disk keys, the files. When the domain cannot be removed (libvirt away or failing) nothing else
  // is touched: a guest may still run on those disks and volumes. Later failures are logged and
  // the rest still removed. The error says what was left.
  Result<void> releaseAll(InstanceTable::Entry& entry);

 private:
  InstanceTable& table_;
  drivers::ComputeDriver& driver_;
  drivers::volume::VolumeConnector& volumes_;
  const SecretBox& secrets_;
  const ManagerOptions& options_;
};

}  // namespace kiln::lifecycle
