#pragma once
// The config drive: ConfigDrive version 2, the ISO 9660 image labelled "config-2" that
// cloud-init's ConfigDrive datasource reads (as nova writes it: nova/virt/configdrive.py,
// nova/api/metadata/base.py, nova/virt/netutils.py). Built in-process with libisofs.

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>

#include "common/result.h"

namespace kiln::drivers::configdrive {

struct ConfigDriveInput {
  std::string uuid;
  std::string name;
  std::string hostname;
  std::string availability_zone;  // may be empty: written as null
  std::string project_id;
  unsigned launch_index = 0;
  std::map<std::string, std::string> public_keys;  // key name -> OpenSSH public key
  std::optional<std::string> user_data;            // decoded bytes; absent: no user_data file
  // Nova's network_info as the launch request gave it (validated by agent/api/network_info.h):
  // a JSON array of VIFs.
  nlohmann::json network_info = nlohmann::json::array();
};

// openstack/<version>/meta_data.json
nlohmann::json metaDataJson(const ConfigDriveInput& input);
// openstack/<version>/network_data.json, derived as nova's netutils.get_network_metadata does.
nlohmann::json networkDataJson(const nlohmann::json& network_info);

// Writes the ISO to `path` (mode 0600 created, fsynced, then renamed into place from a temporary
// in the same directory so a crash leaves no half-written image under `path`). More than 64 KiB
// of user data is kInvalidArgument, refused before anything is written; a failed write removes
// its temporary. 0600 is the instance disks' model: libvirt's DAC driver gives the file to QEMU's
// user while the guest runs (so the domain must not mark the drive relabel='no').
// Safe to call from several threads at once.
Result<void> writeConfigDrive(const ConfigDriveInput& input, const std::string& path);

}  // namespace kiln::drivers::configdrive
