// configdrive-tool INPUT.json OUTPUT.iso: writes the config drive for a ConfigDriveInput given as
// JSON, so that tests in other languages (cloud-init's own reader, in Python) can check the ISO
// that kiln makes. Input fields are ConfigDriveInput's; user_data is text.
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>

#include "drivers/configdrive/config_drive.h"

using kiln::drivers::configdrive::ConfigDriveInput;
using nlohmann::json;

namespace {

ConfigDriveInput inputFrom(const json& j) {
  ConfigDriveInput input;
  input.uuid = j.value("uuid", "");
  input.name = j.value("name", "");
  input.hostname = j.value("hostname", "");
  input.availability_zone = j.value("availability_zone", "");
  input.project_id = j.value("project_id", "");
  input.launch_index = j.value("launch_index", 0U);
  input.public_keys = j.value("public_keys", std::map<std::string, std::string>{});
  if (j.contains("user_data")) input.user_data = j.at("user_data").get<std::string>();
  input.network_info = j.value("network_info", json::array());
  return input;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s INPUT.json OUTPUT.iso\n", argv[0]);
    return 2;
  }
  ConfigDriveInput input;
  try {
    std::ifstream in(argv[1]);
    std::stringstream text;
    text << in.rdbuf();
    input = inputFrom(json::parse(text.str()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "configdrive-tool: cannot read '%s': %s\n", argv[1], e.what());
    return 2;
  }
  auto written = kiln::drivers::configdrive::writeConfigDrive(input, argv[2]);
  if (!written) {
    std::fprintf(stderr, "configdrive-tool: %s\n", written.error().message.c_str());
    return 1;
  }
  return 0;
}
