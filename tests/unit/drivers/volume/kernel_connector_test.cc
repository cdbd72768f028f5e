// The kernel iSCSI connector's command sequence, against a scripted command runner.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "drivers/volume/volume_connector.h"
#include "tests/support/temp_dir.h"

using kiln::drivers::volume::Attachment;
using kiln::drivers::volume::IscsiTarget;
using kiln::drivers::volume::KernelIscsiConnector;

namespace {

struct ScriptedRunner final : kiln::CommandRunner {
  std::vector<std::vector<std::string>> calls;
  std::map<std::string, int> exit_for;  // by the last argument, e.g. "--login"
  std::string nodes;                    // --op new writes the record here, as iscsiadm does
  kiln::Result<kiln::CommandOutput> run(const kiln::CommandSpec& spec) override {
    calls.push_back(spec.argv);
    if (!nodes.empty() && spec.argv.back() == "new") {
      // iscsiadm -m node -T IQN -p HOST:PORT --op new
      const std::string& portal = spec.argv[6];
      const std::string dir = nodes + "/" + spec.argv[4];
      std::filesystem::create_directories(dir);
      std::ofstream(dir + "/" + portal.substr(0, portal.rfind(':')) + "," +
                    portal.substr(portal.rfind(':') + 1))
          << "# BEGIN RECORD 2.1.8\nnode.session.auth.authmethod = None\n# END RECORD\n";
    }
    kiln::CommandOutput out;
    auto it = exit_for.find(spec.argv.back());
    if (it != exit_for.end()) out.exit_code = it->second;
    return out;
  }
};

IscsiTarget target(const std::string& iqn) {
  IscsiTarget t;
  t.paths.push_back({"10.0.0.5", 3260, iqn, 1});
  t.auth_method = "CHAP";
  // Not a one-character user: assigning one to a std::string draws a false -Wrestrict from
  // GCC 12 at -O3 (GCC bug 105329).
  t.auth_username = "user";
  t.auth_password = "p4ss";
  return t;
}

}  // namespace

TEST_CASE("kernel connector: discovery, CHAP node record, login, wait for the device",
          "[volumes]") {
  kiln::testing::TempDir dir;
  ScriptedRunner runner;
  runner.nodes = dir.path() + "/nodes";
  KernelIscsiConnector connector(
      runner, {"iscsiadm", dir.path(), std::chrono::seconds(2), dir.path() + "/nodes"});
  auto t = target("iqn.2010-10.org.openstack:v1");
  Attachment att = connector.plan("inst", "v1", "vdc", false, t);
  CHECK(att.device_path ==
        dir.path() + "/ip-10.0.0.5:3260-iscsi-iqn.2010-10.org.openstack:v1-lun-1");
  // The device appears (as udev would make it) once logged in.
  std::ofstream(att.device_path) << "";
  runner.exit_for["--login"] = 15;  // already logged in: fine
  auto disk = connector.connect(att, t);
  REQUIRE(disk.ok());
  CHECK(disk->source == kiln::drivers::DiskSpec::Source::kBlock);
  CHECK(disk->path == att.device_path);
  REQUIRE(runner.calls.size() == 5);
  CHECK(runner.calls[0] == std::vector<std::string>{"iscsiadm", "-m", "discovery", "-t",
                                                    "sendtargets", "-p", "10.0.0.5:3260"});
  CHECK(runner.calls[3].back() == "user");
  CHECK(runner.calls[4].back() == "--login");
  // The password is on no command line (every local user reads those in /proc), but in the
  // root-only node record, before its end, where iscsiadm reads it.
  for (const auto& call : runner.calls) {
    for (const auto& arg : call) CHECK(arg.find("p4ss") == std::string::npos);
  }
  const std::string record = dir.path() + "/nodes/iqn.2010-10.org.openstack:v1/10.0.0.5,3260";
  std::ifstream in(record);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  CHECK(text ==
        "# BEGIN RECORD 2.1.8\nnode.session.auth.authmethod = None\n"
        "node.session.auth.password = p4ss\n# END RECORD\n");
  const auto owner_rw = std::filesystem::perms::owner_read | std::filesystem::perms::owner_write;
  CHECK((std::filesystem::status(record).permissions() & std::filesystem::perms::all) == owner_rw);
  // Connected again with a new password over the same record: it holds the new one only.
  runner.nodes.clear();
  t.auth_password = "n3w-p4ss";
  REQUIRE(connector.connect(att, t).ok());
  std::ifstream again(record);
  std::string text2((std::istreambuf_iterator<char>(again)), {});
  CHECK(text2 ==
        "# BEGIN RECORD 2.1.8\nnode.session.auth.authmethod = None\n"
        "node.session.auth.password = n3w-p4ss\n# END RECORD\n");
}

TEST_CASE("kernel connector: no node record after --op new is an error, not a password on argv",
          "[volumes]") {
  kiln::testing::TempDir dir;
  ScriptedRunner runner;  // makes no record
  KernelIscsiConnector connector(
      runner, {"iscsiadm", dir.path(), std::chrono::seconds(1), dir.path() + "/nodes"});
  auto t = target("iqn.2010-10.org.openstack:v1");
  Attachment att = connector.plan("inst", "v1", "vdc", false, t);
  auto disk = connector.connect(att, t);
  REQUIRE_FALSE(disk.ok());
  CHECK_THAT(disk.error().message, Catch::Contains("made no node record"));
  CHECK(disk.error().message.find("p4ss") == std::string::npos);
  for (const auto& call : runner.calls) CHECK(call.back() != "--login");
}

TEST_CASE("kernel connector: a device that never appears fails the connect", "[volumes]") {
  kiln::testing::TempDir dir;
  ScriptedRunner runner;
  runner.nodes = dir.path() + "/nodes";
  KernelIscsiConnector connector(
      runner, {"iscsiadm", dir.path(), std::chrono::milliseconds(300), dir.path() + "/nodes"});
  auto t = target("iqn.2010-10.org.openstack:v1");
  auto att = connector.plan("inst", "v1", "vdc", false, t);
  auto disk = connector.connect(att, t);
  REQUIRE_FALSE(disk.ok());
  CHECK(disk.error().message.find("did not appear") != std::string::npos);
  CHECK(disk.error().message.find("p4ss") == std::string::npos);
}

TEST_CASE("kernel connector: logout only when no other attachment uses the target", "[volumes]") {
  kiln::testing::TempDir dir;
  ScriptedRunner runner;
  KernelIscsiConnector connector(runner, {"iscsiadm", dir.path(), std::chrono::seconds(1)});
  auto t = target("iqn.2010-10.org.openstack:shared");
  auto mine = connector.plan("a", "v1", "vdc", false, t);
  auto theirs = connector.plan("b", "v2", "vdc", false, t);
  REQUIRE(connector.disconnect(mine, {theirs}).ok());
  CHECK(runner.calls.empty());
  REQUIRE(connector.disconnect(mine, {}).ok());
  REQUIRE(runner.calls.size() == 2);
  CHECK(runner.calls[0].back() == "--logout");
  CHECK(runner.calls[1].back() == "delete");
  // Logging out of a target with no session (exit 21) is not an error: disconnect is idempotent.
  runner.exit_for["--logout"] = 21;
  CHECK(connector.disconnect(mine, {}).ok());
}
