// Block storage for real: Cinder-style iSCSI volumes served by tgt's tgtd on loopback (started by
// the CTest fixture), attached through QEMU's own initiator, seen and written by the guest.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/command_runner.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/integration/tgt_volume.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using kiln::testing::TestVolume;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

constexpr std::uint64_t kVolumeBytes = 64ULL << 20;

std::string launch(KilndHarness& kilnd, const std::string& uuid, const json& block_devices,
                   bool with_image = true) {
  json body = {
      {"uuid", uuid}, {"name", "vol"}, {"flavor", "test.small"}, {"block_devices", block_devices}};
  if (with_image) body["image"] = {{"id", "guest"}};
  auto r = kilnd.api("POST", "/v1/instances", body.dump());
  INFO(r.body);
  REQUIRE(r.status == 202);
  return uuid;
}

void deleteAndWait(KilndHarness& kilnd, const std::string& uuid) {
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

std::string secretsList() { return kiln::testing::virsh({"secret-list"}).value_or(""); }

}  // namespace

TEST_CASE("a volume is vdc in the guest, keeps what the guest wrote, and outlives instances",
          "[integration][volumes]") {
  TestVolume volume(11, "vol-persist", "chapuser", "chap-pa55word-1");
  volume.writeHead("KILN-WRITE:written-by-the-first-guest");
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();

  const std::string first =
      launch(kilnd, "8a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f01", json::array({volume.bdm()}));
  json active = kilnd.waitForState(first, "active");
  REQUIRE(active["volumes"].size() == 1);
  CHECK(active["volumes"][0]["device"] == "vdc");
  CHECK(active["volumes"][0]["auth_username"] == "chapuser");
  // The password is nowhere the scheduler or an operator can read it.
  CHECK(active.dump().find("chap-pa55word-1") == std::string::npos);
  auto xml = kiln::testing::virsh({"dumpxml", "kiln-" + first});
  REQUIRE(xml);
  CHECK(xml->find("chap-pa55word-1") == std::string::npos);
  CHECK(kilnd.logText().find("chap-pa55word-1") == std::string::npos);
  std::string db = kiln::testing::readAll(kilnd.statePath() + "/kiln.db") +
                   kiln::testing::readAll(kilnd.statePath() + "/kiln.db-wal");
  CHECK(db.find("chap-pa55word-1") == std::string::npos);
  CHECK(secretsList().find("kiln-" + first) != std::string::npos);

  std::string console = kilnd.waitForConsole(first, "KILN-READY");
  auto disks = kiln::testing::consoleDisks(console);
  CHECK(disks["vdc"] == kVolumeBytes);
  CHECK(console.find("KILN-WROTE vdc KILN-MARK:written-by-the-first-guest") != std::string::npos);

  // Delete: the volume is disconnected (its secret gone), never wiped.
  deleteAndWait(kilnd, first);
  CHECK(secretsList().find("kiln-" + first) == std::string::npos);
  CHECK(volume.head().starts_with("KILN-MARK:written-by-the-first-guest"));

  // A new instance with the same volume reads the marker back.
  const std::string second =
      launch(kilnd, "8a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f02", json::array({volume.bdm()}));
  kilnd.waitForState(second, "active");
  console = kilnd.waitForConsole(second, "KILN-READY");
  CHECK(console.find("KILN-FOUND vdc KILN-MARK:written-by-the-first-guest") != std::string::npos);
  deleteAndWait(kilnd, second);
}

TEST_CASE("a wrong CHAP password fails the launch with a clear fault and leaks nothing",
          "[integration][volumes]") {
  TestVolume volume(12, "vol-chap", "chapuser", "right-password-2");
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = launch(kilnd, "8a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f03",
                                  json::array({volume.bdm("wrong-password-2")}));
  json failed = kilnd.waitForState(uuid, "error");
  std::string fault = failed["fault"]["message"];
  INFO(fault);
  CHECK(fault.find("Starting instance") != std::string::npos);
  CHECK(fault.find("wrong-password-2") == std::string::npos);
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
  CHECK(secretsList().find("kiln-" + uuid) == std::string::npos);
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  CHECK(kilnd.logText().find("wrong-password-2") == std::string::npos);
  deleteAndWait(kilnd, uuid);
}

TEST_CASE("hot attach and detach, seen by the guest", "[integration][volumes]") {
  TestVolume volume(13, "vol-hot");
  volume.writeHead("KILN-MARK:hot-volume");
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = launch(kilnd, "8a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f04", json::array());
  kilnd.waitForState(uuid, "active");
  kilnd.waitForConsole(uuid, "KILN-READY");

  auto r = kilnd.api("POST", "/v1/instances/" + uuid + "/action",
                     json{{"attach_volume", volume.bdm()}}.dump());
  REQUIRE(r.status == 202);
  std::string console = kilnd.waitForConsole(uuid, "KILN-DISK-ADDED vdc");
  kilnd.waitForConsole(uuid, "KILN-FOUND vdc KILN-MARK:hot-volume");
  json rec;
  for (int i = 0; i < 100; ++i) {
    rec = kilnd.api("GET", "/v1/instances/" + uuid).json;
    if (rec["task_state"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(rec["volumes"].size() == 1);

  r = kilnd.api("POST", "/v1/instances/" + uuid + "/action",
                json{{"detach_volume", {{"volume_id", "vol-hot"}}}}.dump());
  REQUIRE(r.status == 202);
  kilnd.waitForConsole(uuid, "KILN-DISK-REMOVED vdc");
  for (int i = 0; i < 200; ++i) {
    rec = kilnd.api("GET", "/v1/instances/" + uuid).json;
    if (rec["task_state"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(rec["volumes"].empty());
  CHECK(rec.value("action_error", json()).is_null());
  auto xml = kiln::testing::virsh({"dumpxml", "--inactive", "kiln-" + uuid});
  REQUIRE(xml);
  CHECK(xml->find("vol-hot") == std::string::npos);
  CHECK(kilnd
            .api("POST", "/v1/instances/" + uuid + "/action",
                 json{{"detach_volume", {{"volume_id", "vol-hot"}}}}.dump())
            .status == 404);
  deleteAndWait(kilnd, uuid);
  CHECK(volume.head().starts_with("KILN-MARK:hot-volume"));
}

TEST_CASE("boot from volume: the guest boots from its iSCSI root disk", "[integration][volumes]") {
  TestVolume root(14, "vol-root");
  // The root volume holds the test guest itself, as a volume created from an image would.
  {
    std::string guest = kiln::testing::readAll(kiln::testing::guestImagePath());
    std::fstream f(root.backing(), std::ios::in | std::ios::out | std::ios::binary);
    f.write(guest.data(), static_cast<std::streamsize>(guest.size()));
  }
  KilndHarness kilnd;
  kilnd.start();
  const std::string uuid =
      launch(kilnd, "8a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f05",
             json::array({root.bdm("", {{"boot_index", 0}})}), /*with_image=*/false);
  json active = kilnd.waitForState(uuid, "active");
  for (const auto& d : active["disks"]) CHECK(d["device"] != "vda");
  std::string console = kilnd.waitForConsole(uuid, "KILN-READY");
  auto disks = kiln::testing::consoleDisks(console);
  CHECK(disks["vda"] == kVolumeBytes);
  CHECK(disks["vdb"] == 1ULL << 30);  // the flavor's ephemeral disk
  auto images = kilnd.api("GET", "/v1/images");
  CHECK(images.json["images"].empty());
  deleteAndWait(kilnd, uuid);
  // The root volume is intact: still the guest's boot code.
  CHECK(kiln::testing::readAll(root.backing()).substr(510, 2) == "\x55\xaa");
}

TEST_CASE("the kernel connector: iscsiadm's sequence, a block disk with the volume's data",
          "[integration][volumes]") {
  TestVolume volume(15, "vol-kernel", "kuser", "kernel-pa55word");
  volume.writeHead("KILN-MARK:through-the-kernel-path");
  kiln::testing::TempDir dir;
  std::string devdir = dir.path() + "/by-path";
  std::string log = dir.path() + "/iscsiadm.log";
  std::string map = dir.path() + "/targets";
  std::string nodes = dir.path() + "/nodes";
  // The stand-in lets the login through only with these CHAP credentials in the node record.
  std::ofstream(map) << "iqn.2010-10.org.openstack:vol-kernel " << volume.backing()
                     << " kuser kernel-pa55word\n";
  KilndHarness kilnd("[libvirt]\niscsi_connector = kernel\nvolume_device_dir = " + devdir +
                     "\niscsi_node_dir = " + nodes + "\n");
  kilnd.setEnv("PATH",
               std::string(KILN_SOURCE_DIR "/tests/integration/stand-in:") + std::getenv("PATH"));
  kilnd.setEnv("KILN_FAKE_ISCSI_LOG", log);
  kilnd.setEnv("KILN_FAKE_ISCSI_MAP", map);
  kilnd.setEnv("KILN_FAKE_ISCSI_DEVDIR", devdir);
  kilnd.setEnv("KILN_FAKE_ISCSI_NODES", nodes);
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid =
      launch(kilnd, "8a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f06", json::array({volume.bdm()}));
  json active = kilnd.waitForState(uuid, "active");
  CHECK(active["volumes"][0]["connector"] == "kernel");
  std::string console = kilnd.waitForConsole(uuid, "KILN-READY");
  CHECK(console.find("KILN-FOUND vdc KILN-MARK:through-the-kernel-path") != std::string::npos);
  auto xml = kiln::testing::virsh({"dumpxml", "kiln-" + uuid});
  REQUIRE(xml);
  CHECK(xml->find("<disk type='block'") != std::string::npos);

  std::string p = kiln::testing::tgtPortal();
  std::string iqn = "iqn.2010-10.org.openstack:vol-kernel";
  std::vector<std::string> expected = {
      "-m discovery -t sendtargets -p " + p,
      "-m node -T " + iqn + " -p " + p + " --op new",
      "-m node -T " + iqn + " -p " + p + " --op update -n node.session.auth.authmethod -v CHAP",
      "-m node -T " + iqn + " -p " + p + " --op update -n node.session.auth.username -v kuser",
      "-m node -T " + iqn + " -p " + p + " --login",
  };
  auto lines = [&] {
    std::vector<std::string> out;
    std::istringstream in(kiln::testing::readAll(log));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  };
  CHECK(lines() == expected);
  // The password was on no command line (the log holds them verbatim) and in no log line; it is
  // in the root-only node record, where iscsiadm read it for the login.
  CHECK(kiln::testing::readAll(log).find("kernel-pa55word") == std::string::npos);
  CHECK(kilnd.logText().find("kernel-pa55word") == std::string::npos);
  const std::string record =
      nodes + "/" + iqn + "/" + p.substr(0, p.rfind(':')) + "," + p.substr(p.rfind(':') + 1);
  CHECK(kiln::testing::readAll(record).find("node.session.auth.password = kernel-pa55word\n# END "
                                            "RECORD") != std::string::npos);
  struct stat record_stat {};
  REQUIRE(::stat(record.c_str(), &record_stat) == 0);
  CHECK((record_stat.st_mode & 0777) == 0600);

  deleteAndWait(kilnd, uuid);
  auto after = lines();
  REQUIRE(after.size() == expected.size() + 2);
  CHECK(after[expected.size()] == "-m node -T " + iqn + " -p " + p + " --logout");
  CHECK(after[expected.size() + 1] == "-m node -T " + iqn + " -p " + p + " --op delete");
  CHECK(stdfs::is_empty(devdir));
  CHECK_FALSE(stdfs::exists(record));
  CHECK(volume.head().starts_with("KILN-MARK:through-the-kernel-path"));
}
