#pragma once
// Cinder-style iSCSI volumes served by the private tgtd of the `tgt` CTest fixture.

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/command_runner.h"
#include "tests/support/local_images.h"

namespace kiln::testing {

inline std::string tgtDir() { return KILN_TGT_DIR; }
inline std::string tgtPortal() { return "127.0.0.1:" + std::to_string(KILN_TGT_ISCSI_PORT); }

inline kiln::CommandOutput runOk(std::vector<std::string> argv) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.timeout = std::chrono::seconds(60);
  auto out = runner.run(spec);
  REQUIRE(out.ok());
  INFO(out->stdout_text << out->stderr_text);
  REQUIRE(out->succeeded());
  return *out;
}

// A target with one 64 MiB LUN (LUN 1, as Cinder's tgt driver does), optionally with CHAP.
// Deleted with the object; the backing file stays readable for checks until then.
class TestVolume {
 public:
  TestVolume(int tid, const std::string& name, const std::string& chap_user = "",
             const std::string& chap_pass = "")
      : tid_(tid),
        iqn_("iqn.2010-10.org.openstack:" + name),
        name_(name),
        user_(chap_user),
        pass_(chap_pass) {
    std::vector<std::string> argv = {KILN_SOURCE_DIR "/scripts/tgt-volume.sh",
                                     tgtDir(),
                                     std::to_string(KILN_TGT_CONTROL_PORT),
                                     "create",
                                     std::to_string(tid),
                                     iqn_,
                                     "64"};
    if (!chap_user.empty()) {
      argv.push_back(chap_user);
      argv.push_back(chap_pass);
    }
    auto out = runOk(argv);
    backing_ = out.stdout_text.substr(0, out.stdout_text.find('\n'));
    REQUIRE(std::filesystem::exists(backing_));
  }
  ~TestVolume() {
    kiln::PosixCommandRunner runner;
    kiln::CommandSpec spec;
    spec.argv = {KILN_SOURCE_DIR "/scripts/tgt-volume.sh",
                 tgtDir(),
                 std::to_string(KILN_TGT_CONTROL_PORT),
                 "delete",
                 std::to_string(tid_),
                 "--force"};
    (void)runner.run(spec);
  }
  // The block device mapping, as Cinder hands it to the compute host.
  nlohmann::json bdm(const std::string& password_override = "",
                     nlohmann::json extra = nlohmann::json::object()) const {
    nlohmann::json data = {{"target_portal", tgtPortal()},
                           {"target_iqn", iqn_},
                           {"target_lun", 1},
                           {"target_discovered", false},
                           {"volume_id", name_}};
    if (!user_.empty()) {
      data["auth_method"] = "CHAP";
      data["auth_username"] = user_;
      data["auth_password"] = password_override.empty() ? pass_ : password_override;
    }
    nlohmann::json out = {{"volume_id", name_},
                          {"connection_info", {{"driver_volume_type", "iscsi"}, {"data", data}}}};
    out.update(extra);
    return out;
  }
  // Writes `line` at the start of the volume, from the host (as a test fixture would).
  void writeHead(const std::string& line) const {
    std::fstream f(backing_, std::ios::in | std::ios::out | std::ios::binary);
    std::string block(4096, '\0');
    std::copy(line.begin(), line.end(), block.begin());
    f.write(block.data(), static_cast<std::streamsize>(block.size()));
  }
  std::string head() const { return readAll(backing_).substr(0, 4096); }
  const std::string& backing() const { return backing_; }
  const std::string& iqn() const { return iqn_; }
  const std::string& name() const { return name_; }

 private:
  int tid_;
  std::string iqn_;
  std::string name_;
  std::string user_;
  std::string pass_;
  std::string backing_;
};

}  // namespace kiln::testing
