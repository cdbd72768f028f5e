#include "drivers/configdrive/config_drive_layout.h"

#include <fmt/format.h>

#include <array>
#include <string_view>

namespace kiln::drivers::configdrive {
namespace {

using nlohmann::json;

// nova/api/metadata/base.py OPENSTACK_VERSIONS, oldest first, and the versions that introduced
// something written here.
constexpr std::array<std::string_view, 10> kVersions = {
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
    "2016-10-06", "2017-02-22", "2018-08-27", "2020-10-14", "latest"};
constexpr std::string_view kGrizzly = "2013-04-04";    // random_seed
constexpr std::string_view kHavana = "2013-10-17";     // vendor_data.json
constexpr std::string_view kLiberty = "2015-10-15";    // network_data.json, project_id
constexpr std::string_view kNewtonOne = "2016-06-30";  // devices
constexpr std::string_view kNewtonTwo = "2016-10-06";  // vendor_data2.json

// Dates compare as text; "latest" has everything.
bool atLeast(std::string_view version, std::string_view introduced) {
  return version == "latest" || version >= introduced;
}

// A name that is not valid UTF-8 must not make the writer throw: it is replaced, not refused,
// because the API validated the text already and the guest only displays it.
std::string dumpJson(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

Result<std::vector<ConfigDriveFile>> configDriveFiles(const ConfigDriveInput& input) {
  if (input.user_data && input.user_data->size() > kMaxUserDataBytes) {
    return Error::invalid(
        fmt::format("User data of {} bytes does not fit a config drive, which "
                    "holds at most {} bytes",
                    input.user_data->size(), kMaxUserDataBytes));
  }
  std::string network_data = dumpJson(networkDataJson(input.network_info));
  std::string empty_object = dumpJson(json::object());  // kiln has no vendor data providers

  std::vector<ConfigDriveFile> files;
  for (std::string_view version : kVersions) {
    std::string dir = fmt::format("openstack/{}/", version);
    // Each version gets its own random seed, as each of nova's does.
    json metadata = metaDataJson(input);
    if (!atLeast(version, kGrizzly)) metadata.erase("random_seed");
    if (!atLeast(version, kLiberty)) metadata.erase("project_id");
    if (!atLeast(version, kNewtonOne)) metadata.erase("devices");
    files.push_back({dir + "meta_data.json", dumpJson(metadata)});
    if (input.user_data) files.push_back({dir + "user_data", *input.user_data});
    if (atLeast(version, kHavana)) files.push_back({dir + "vendor_data.json", empty_object});
    if (atLeast(version, kLiberty)) files.push_back({dir + "network_data.json", network_data});
    if (atLeast(version, kNewtonTwo)) files.push_back({dir + "vendor_data2.json", empty_object});
  }
  return files;
}

}  // namespace kiln::drivers::configdrive
