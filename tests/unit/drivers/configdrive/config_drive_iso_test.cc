// The ISO read back by other tools: isoinfo for the volume id and the Joliet tree, xorriso for
// the Rock Ridge tree and the bytes of every file. Real files in /tmp.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/command_runner.h"
#include "drivers/configdrive/config_drive.h"
#include "tests/support/temp_dir.h"

using kiln::CommandOutput;
using kiln::ErrorCode;
using kiln::PosixCommandRunner;
using kiln::drivers::configdrive::ConfigDriveInput;
using kiln::drivers::configdrive::writeConfigDrive;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

CommandOutput run(std::vector<std::string> argv) {
  PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  auto out = runner.run(spec);
  REQUIRE(out);
  INFO(out->stderr_text);
  REQUIRE(out->succeeded());
  return *out;
}

std::string contents(const stdfs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// xorriso restores the image's read-only modes; the test's TempDir must still be removable by an
// unprivileged user.
void makeWritable(const stdfs::path& dir) {
  for (const auto& entry : stdfs::recursive_directory_iterator(dir)) {
    stdfs::permissions(entry.path(), stdfs::perms::owner_write, stdfs::perm_options::add);
  }
}

std::vector<std::string> leftovers(const stdfs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : stdfs::directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp-") != std::string::npos) {
      names.push_back(entry.path().filename().string());
    }
  }
  return names;
}

ConfigDriveInput sampleInput() {
  ConfigDriveInput input;
  input.uuid = "0b6f4c1e-7d2a-4e52-9a8e-3f1c2d4b5a69";
  input.name = "web-1";
  input.hostname = "web-1";
  input.project_id = "6b3c1f0e9d8a4b7c8e2f1a0b9c8d7e6f";
  input.public_keys = {{"alice", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice@example"}};
  // Bytes, not text: a NUL and a byte that is not UTF-8 must come back as they went in.
  const char user_data[] = "#!/bin/sh\necho KILN\0binary\xff\n";
  input.user_data = std::string(user_data, sizeof user_data - 1);
  input.network_info = json::parse(R"([{"id": "p1", "address": "fa:16:3e:11:22:33",
    "type": "bridge", "network": {"id": "n1", "subnets": [{"cidr": "198.51.100.0/24",
    "ips": [{"address": "198.51.100.10"}], "gateway": "198.51.100.1"}]}}])");
  return input;
}

}  // namespace

TEST_CASE("the config drive ISO reads back with xorriso and isoinfo", "[configdrive]") {
  kiln::testing::TempDir tmp;
  std::string iso = tmp.path() + "/disk.config";
  ConfigDriveInput input = sampleInput();
  auto written = writeConfigDrive(input, iso);
  INFO((written ? "" : written.error().message));
  REQUIRE(written);

  struct stat st {};
  REQUIRE(::stat(iso.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_size % 2048 == 0);
  CHECK(leftovers(tmp.path()).empty());

  std::string pvd = run({"isoinfo", "-d", "-i", iso}).stdout_text;
  CHECK(pvd.find("Volume id: config-2\n") != std::string::npos);
  // Only the volume ids are written as given; the publisher is held to ECMA-119's upper case.
  CHECK(pvd.find("Publisher id: KILN\n") != std::string::npos);
  CHECK(pvd.find("Rock Ridge signatures version") != std::string::npos);
  CHECK(pvd.find("Joliet with UCS level 3 found") != std::string::npos);

  std::string joliet = run({"isoinfo", "-J", "-f", "-i", iso}).stdout_text;
  CHECK(joliet.find("/openstack/latest/meta_data.json\n") != std::string::npos);
  CHECK(joliet.find("/openstack/2016-10-06/vendor_data2.json\n") != std::string::npos);

  stdfs::path out = tmp.path() + "/out";
  run({"xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out.string()});
  makeWritable(out);

  std::vector<std::string> versions;
  for (const auto& entry : stdfs::directory_iterator(out / "openstack")) {
    versions.push_back(entry.path().filename().string());
  }
  std::sort(versions.begin(), versions.end());
  CHECK(versions == std::vector<std::string>{"2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15",
                                             "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27",
                                             "2020-10-14", "latest"});
  stdfs::path latest = out / "openstack" / "latest";
  json md = json::parse(contents(latest / "meta_data.json"));
  CHECK(md["uuid"] == input.uuid);
  CHECK(md["public_keys"]["alice"] == input.public_keys.at("alice"));
  CHECK(contents(latest / "user_data") == *input.user_data);
  CHECK(contents(out / "openstack" / "2012-08-10" / "user_data") == *input.user_data);
  CHECK(json::parse(contents(latest / "network_data.json")) ==
        kiln::drivers::configdrive::networkDataJson(input.network_info));
  CHECK(contents(latest / "vendor_data.json") == "{}");
  CHECK(contents(latest / "vendor_data2.json") == "{}");
  CHECK_FALSE(stdfs::exists(out / "openstack" / "2013-04-04" / "network_data.json"));
}

TEST_CASE("the config drive holds at most 64 KiB of user data", "[configdrive]") {
  kiln::testing::TempDir tmp;
  std::string iso = tmp.path() + "/disk.config";
  ConfigDriveInput input = sampleInput();

  input.user_data = std::string(65537, 'x');
  auto refused = writeConfigDrive(input, iso);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == ErrorCode::kInvalidArgument);
  CHECK(refused.error().message.find("65537") != std::string::npos);
  CHECK(stdfs::is_empty(tmp.path()));

  input.user_data = std::string(65536, 'x');
  REQUIRE(writeConfigDrive(input, iso));
}

TEST_CASE("a failed config drive write leaves no file behind", "[configdrive]") {
  kiln::testing::TempDir tmp;

  SECTION("the directory is missing") {
    auto r = writeConfigDrive(sampleInput(), tmp.path() + "/missing/disk.config");
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("/missing/disk.config.tmp-") != std::string::npos);
    CHECK(stdfs::is_empty(tmp.path()));
  }
  SECTION("the rename fails after the image was written") {
    // A non-empty directory under the target name: everything works up to rename(2).
    stdfs::create_directories(tmp.path() + "/disk.config/occupied");
    auto r = writeConfigDrive(sampleInput(), tmp.path() + "/disk.config");
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("Cannot rename") != std::string::npos);
    CHECK(leftovers(tmp.path()).empty());
  }
}

TEST_CASE("config drives for concurrent launches are written side by side", "[configdrive]") {
  // kilnd launches instances in parallel; libisofs's process-wide state is shared by them.
  kiln::testing::TempDir tmp;
  std::vector<std::thread> writers;
  std::vector<int> ok(4, 0);
  for (int i = 0; i < 4; ++i) {
    writers.emplace_back([&, i] {
      ConfigDriveInput input = sampleInput();
      input.uuid = "instance-" + std::to_string(i);
      ok[i] = writeConfigDrive(input, tmp.path() + "/disk.config." + std::to_string(i)).ok();
    });
  }
  for (auto& w : writers) w.join();
  CHECK(ok == std::vector<int>{1, 1, 1, 1});
  for (int i = 0; i < 4; ++i) {
    std::string iso = tmp.path() + "/disk.config." + std::to_string(i);
    stdfs::path out = tmp.path() + "/out" + std::to_string(i);
    run({"xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", out.string()});
    makeWritable(out);
    CHECK(json::parse(contents(out / "openstack" / "latest" / "meta_data.json"))["uuid"] ==
          "instance-" + std::to_string(i));
  }
}
