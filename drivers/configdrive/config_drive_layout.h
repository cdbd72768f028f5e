#pragma once
// The files of a config drive and where they sit. ConfigDrive version 2 keeps one directory per
// metadata version nova serves (openstack/2012-08-10 ... openstack/2020-10-14) and the newest
// again under openstack/latest; a file or a field appears from the version that introduced it, so
// a reader that asks for an old version gets what that version promised. cloud-init reads the
// newest version it knows.

#include <cstddef>
#include <string>
#include <vector>

#include "common/result.h"
#include "drivers/configdrive/config_drive.h"

namespace kiln::drivers::configdrive {

// nova's API refuses more (it stores user data base64-encoded in a 64 KiB column); the writer
// refuses it too, so no caller can put more on a drive than nova would.
inline constexpr std::size_t kMaxUserDataBytes = 65536;

struct ConfigDriveFile {
  std::string path;  // relative, '/'-separated: "openstack/latest/meta_data.json"
  std::string contents;
};

// In the order a directory listing shows them: parents before their files.
Result<std::vector<ConfigDriveFile>> configDriveFiles(const ConfigDriveInput& input);

}  // namespace kiln::drivers::configdrive
