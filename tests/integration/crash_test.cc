// Crash consistency under fault injection: kilnd-failpoints is killed (SIGKILL, by its own
// failpoint) between two steps of launch, delete, attach, detach and snapshot; the production
// kilnd then restarts on the same state_path. Every acknowledged instance must end active, or
// error with a fault; a deleted one must stay deleted; and nothing may be left on the host that
// no instance owns (tests/integration/orphans.h). Each test prints its part of the matrix
// (failpoint x outcome); docs/testing.md holds the whole table.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>

#include "tests/integration/kilnd_harness.h"
#include "tests/integration/libvirtd_control.h"
#include "tests/integration/orphans.h"
#include "tests/integration/test_network.h"
#include "tests/integration/tgt_volume.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using kiln::testing::TestVolume;
using nlohmann::json;

namespace {

enum class Op { kLaunch, kDelete, kAttach, kDetach, kSnapshot };

struct Scenario {
  std::string failpoint;
  Op op = Op::kLaunch;
  std::string action = "abort";  // or "error": the step fails and its rollback runs
  bool kernel = false;           // the kernel connector (stand-in iscsiadm) instead of QEMU's
  bool encrypted = false;        // vdb is LUKS with a per-instance libvirt secret
  bool network = false;          // a NIC on the bridge kntbr9 and a config drive
};

struct Row {
  std::string failpoint;
  std::string action;
  std::string outcome;
  double seconds = 0;
};

std::string uuidFor(int n) { return fmt::format("c7a5e000-0000-4000-8000-{:012d}", n); }

// Polls until the instance is gone or settled (no task, not building or deleting).
json settle(KilndHarness& kilnd, const std::string& uuid, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = kilnd.api("GET", "/v1/instances/" + uuid);
    if (r.status == 404) return json();
    if (r.status == 200) {
      last = r.json;
      std::string state = last.value("state", "");
      if (state != "building" && state != "deleting" && last["task_state"].is_null()) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("instance " << uuid << " never settled: " << last.dump(2) << "\n" << kilnd.logText());
  return last;
}

json waitIdle(KilndHarness& kilnd, const std::string& uuid) {
  json rec = settle(kilnd, uuid, std::chrono::seconds(60));
  REQUIRE_FALSE(rec.is_null());
  return rec;
}

// The message of `fault` or `action_error` ({"message": ...}), shortened for the matrix.
std::string shortFault(const json& rec, const char* field) {
  json v = rec.value(field, json());
  std::string f = v.is_object() ? v.value("message", "") : "";
  return f.size() > 70 ? f.substr(0, 70) + "..." : f;
}

void printRows(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  std::cout << "\n| failpoint | action | outcome after restart | s |\n|---|---|---|---|\n";
  for (const auto& r : rows) {
    std::cout << fmt::format("| `{}` | {} | {} | {:.1f} |\n", r.failpoint, r.action, r.outcome,
                             r.seconds);
  }
  std::cout << std::flush;
}

// The test guest (BIOS, boots to KILN-READY) as "guest", and the UEFI guest as "uefi": launches
// use UEFI, so that an NVRAM file is among what a crash can leave behind.
void addLocalImageForCrash(KilndHarness& kilnd) {
  kilnd.addGuestImage("guest");
  kiln::testing::addLocalImage(kilnd.imagesDir(), "uefi", kiln::testing::readAll(KILN_UEFI_GUEST),
                               "raw", {{"hw_firmware_type", "uefi"}});
}

class CrashMatrix {
 public:
  explicit CrashMatrix(TestVolume& volume) : volume_(volume) {}
  ~CrashMatrix() { print(); }

  void run(const Scenario& sc) { rows_.push_back(runRow(sc)); }

 private:
  Row runRow(const Scenario& sc) {
    INFO("failpoint " << sc.failpoint << "=" << sc.action << (sc.kernel ? " (kernel)" : "")
                      << (sc.encrypted ? " (encrypted)" : "") << (sc.network ? " (network)" : ""));
    auto started = std::chrono::steady_clock::now();
    const std::string uuid = uuidFor(++counter_ + static_cast<int>(sc.op) * 100);
    kiln::testing::TempDir dir;
    const std::string devdir = dir.path() + "/by-path";
    std::string extra;
    if (sc.kernel) {
      extra = "[libvirt]\niscsi_connector = kernel\nvolume_device_dir = " + devdir +
              "\niscsi_node_dir = " + dir.path() + "/nodes\n";
    }
    if (sc.encrypted) extra += "[ephemeral_storage_encryption]\nenabled = true\n";
    KilndHarness kilnd(extra);
    if (sc.kernel) {
      std::ofstream(dir.path() + "/targets") << volume_.iqn() << " " << volume_.backing() << "\n";
      kilnd.setEnv("PATH", std::string(KILN_SOURCE_DIR "/tests/integration/stand-in:") +
                               std::getenv("PATH"));
      kilnd.setEnv("KILN_FAKE_ISCSI_LOG", dir.path() + "/iscsiadm.log");
      kilnd.setEnv("KILN_FAKE_ISCSI_MAP", dir.path() + "/targets");
      kilnd.setEnv("KILN_FAKE_ISCSI_DEVDIR", devdir);
      kilnd.setEnv("KILN_FAKE_ISCSI_NODES", dir.path() + "/nodes");
    }
    addLocalImageForCrash(kilnd);
    kilnd.setBinary(KILND_FAILPOINTS_PATH);
    kilnd.setEnv("KILN_FAILPOINTS", sc.failpoint + "=" + sc.action);
    kilnd.start();
    kiln::testing::OrphanScope scope{{uuid}, sc.kernel ? devdir : ""};

    auto launchBody = [&](const std::string& image, bool with_volume) {
      json body = {{"uuid", uuid}, {"name", "crash"}, {"flavor", "test.small"}};
      body["image"] = {{"id", image}};
      body["block_devices"] = with_volume ? json::array({volume_.bdm()}) : json::array();
      if (sc.network) {
        body["config_drive"] = true;
        body["network_info"] = json::array({{{"id", fmt::format("port-crash-{}", counter_)},
                                             {"address", "fa:16:3e:c7:00:01"},
                                             {"type", "bridge"},
                                             {"devname", fmt::format("kntcrash{}", counter_)},
                                             {"network", {{"bridge", "kntbr9"}}}}});
      }
      return body.dump();
    };
    auto action = [&](const json& body) {
      return kilnd.api("POST", "/v1/instances/" + uuid + "/action", body.dump());
    };
    // The job may reach the failpoint before the API thread has written its 202: no answer at
    // all is then the right outcome.
    auto answered = [](const kiln::testing::ApiResponse& r) {
      INFO(r.body);
      REQUIRE((r.status == 202 || r.status == 0));
      return r.status == 202;
    };
    bool acknowledged = false;
    bool deleted = false;
    std::string snapshot_id;
    switch (sc.op) {
      case Op::kLaunch: {
        acknowledged = answered(kilnd.api("POST", "/v1/instances", launchBody("uefi", true)));
        break;
      }
      case Op::kDelete:
        REQUIRE(kilnd.api("POST", "/v1/instances", launchBody("uefi", true)).status == 202);
        kilnd.waitForState(uuid, "active");
        // The intent is durable before the job is queued, so even a delete whose job reaches
        // delete.before_destroy before the 202 is written is resumed after the restart.
        answered(kilnd.api("DELETE", "/v1/instances/" + uuid));
        acknowledged = deleted = true;
        break;
      case Op::kAttach:
      case Op::kDetach:
        REQUIRE(kilnd.api("POST", "/v1/instances", launchBody("guest", false)).status == 202);
        kilnd.waitForState(uuid, "active");
        acknowledged = true;
        if (sc.op == Op::kDetach) {
          // Only a booted guest releases a hot-plugged disk.
          kilnd.waitForConsole(uuid, "KILN-READY");
          REQUIRE(action({{"attach_volume", volume_.bdm()}}).status == 202);
          REQUIRE(waitIdle(kilnd, uuid)["volumes"].size() == 1);
          answered(action({{"detach_volume", {{"volume_id", volume_.name()}}}}));
        } else {
          answered(action({{"attach_volume", volume_.bdm()}}));
        }
        break;
      case Op::kSnapshot: {
        REQUIRE(kilnd.api("POST", "/v1/instances", launchBody("guest", false)).status == 202);
        kilnd.waitForState(uuid, "active");
        acknowledged = true;
        auto r = action({{"snapshot", {{"name", "crash-snap"}}}});
        if (answered(r)) snapshot_id = r.json["image_id"];
        break;
      }
    }

    if (sc.action == "abort") {
      if (!kilnd.waitKilled(std::chrono::seconds(60))) {
        FAIL("failpoint " << sc.failpoint << " never killed kilnd\n" << kilnd.logText());
      }
      // The production kilnd, unarmed, on the same state_path.
      kilnd.setBinary(KILND_PATH);
      kilnd.unsetEnv("KILN_FAILPOINTS");
      kilnd.start();
    }

    json rec = settle(kilnd, uuid, std::chrono::seconds(90));
    Row row{sc.failpoint + (sc.kernel ? " (kernel)" : "") + (sc.encrypted ? " (encrypted)" : "") +
                (sc.network ? " (network)" : ""),
            sc.action, "", 0};
    if (deleted) {
      CHECK(rec.is_null());
      row.outcome = rec.is_null() ? "deleted" : "NOT DELETED: " + rec.value("state", "");
    } else if (rec.is_null()) {
      // Only an instance the API never acknowledged may be absent.
      CHECK_FALSE(acknowledged);
      row.outcome = "never acknowledged, absent";
    } else {
      std::string state = rec["state"];
      INFO(rec.dump(2));
      CHECK((state == "active" || state == "error"));
      if (state == "error") CHECK_FALSE(shortFault(rec, "fault").empty());
      if (state == "active") CHECK(rec["power_state"] == "running");
      row.outcome = state == "error" ? "error: " + shortFault(rec, "fault") : state;
      if (sc.op == Op::kAttach || sc.op == Op::kDetach) {
        row.outcome += rec["volumes"].empty() ? ", volume not attached" : ", volume attached";
      }
      if (sc.op == Op::kSnapshot) {
        bool image = std::filesystem::exists(kilnd.imagesDir() + "/" + snapshot_id + ".json");
        row.outcome += image ? ", image uploaded" : ", image discarded";
      }
      std::string action_error = shortFault(rec, "action_error");
      if (!action_error.empty()) row.outcome += " (" + action_error + ")";
    }
    auto orphans = kiln::testing::findOrphans(kilnd, scope);
    INFO(kilnd.logText());
    for (const auto& o : orphans) UNSCOPED_INFO(o);
    CHECK(orphans.empty());
    if (!orphans.empty()) row.outcome += " + " + std::to_string(orphans.size()) + " ORPHAN(S)";
    // What was recovered can still be deleted, and then nothing at all is left.
    if (!rec.is_null()) {
      REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
      REQUIRE(kilnd.waitGone(uuid));
      auto after = kiln::testing::findOrphans(kilnd, scope);
      for (const auto& o : after) UNSCOPED_INFO(o);
      CHECK(after.empty());
    }
    kilnd.stop();
    row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return row;
  }

  void print() const { printRows(rows_); }

  TestVolume& volume_;
  std::vector<Row> rows_;
  int counter_ = 0;
};

}  // namespace

TEST_CASE("crash matrix: launch", "[integration][volumes][crash]") {
  TestVolume volume(21, "vol-crash-launch", "cuser", "crash-pa55word");
  CrashMatrix matrix(volume);
  for (const char* fp : {"launch.after_record", "launch.after_image", "launch.after_root_disk",
                         "launch.after_disks", "launch.after_disks_recorded",
                         "launch.before_volume_connect", "launch.after_volume_connect",
                         "launch.after_volumes", "launch.after_define", "launch.after_start"}) {
    matrix.run({fp, Op::kLaunch});
  }
  // The kernel connector's iSCSI session (the stand-in's) across a crash.
  matrix.run({"launch.after_volume_connect", Op::kLaunch, "abort", true});
  matrix.run({"launch.after_define", Op::kLaunch, "abort", true});
}

TEST_CASE("crash matrix: launch rollback (error action)", "[integration][volumes][crash]") {
  TestVolume volume(22, "vol-crash-rollback", "cuser", "crash-pa55word");
  CrashMatrix matrix(volume);
  for (const char* fp :
       {"launch.after_image", "launch.after_disks_recorded", "launch.after_volume_connect",
        "launch.after_define", "launch.after_start"}) {
    matrix.run({fp, Op::kLaunch, "error"});
  }
  matrix.run({"launch.after_volume_connect", Op::kLaunch, "error", true});
}

TEST_CASE("crash matrix: delete", "[integration][volumes][crash]") {
  TestVolume volume(23, "vol-crash-delete", "cuser", "crash-pa55word");
  CrashMatrix matrix(volume);
  for (const char* fp : {"delete.before_destroy", "delete.after_destroy", "delete.after_volumes",
                         "delete.after_keys", "delete.after_files"}) {
    matrix.run({fp, Op::kDelete});
  }
  // With an encrypted vdb: a crash between the crypto-erase and the purge, and one while the
  // launch's disk secret exists but the domain does not.
  matrix.run({"delete.after_keys", Op::kDelete, "abort", false, true});
  matrix.run({"launch.after_disks_recorded", Op::kLaunch, "abort", false, true});
  matrix.run({"delete.after_destroy", Op::kDelete, "abort", true});
}

TEST_CASE("crash matrix: NICs and the config drive", "[integration][volumes][crash]") {
  // The bridge the NICs join; torn down with the test.
  kiln::testing::TestNetwork net("9", "198.51.100.1/24");
  TestVolume volume(26, "vol-crash-network", "cuser", "crash-pa55word");
  CrashMatrix matrix(volume);
  for (const char* fp : {"launch.after_disks_recorded", "launch.after_interfaces",
                         "launch.after_config_drive", "launch.after_start"}) {
    matrix.run({fp, Op::kLaunch, "abort", false, false, true});
  }
  for (const char* fp : {"launch.after_interfaces", "launch.after_config_drive"}) {
    matrix.run({fp, Op::kLaunch, "error", false, false, true});
  }
  for (const char* fp : {"delete.after_destroy", "delete.after_interfaces"}) {
    matrix.run({fp, Op::kDelete, "abort", false, false, true});
  }
}

TEST_CASE("crash matrix: attach and detach", "[integration][volumes][crash]") {
  TestVolume volume(24, "vol-crash-attach", "cuser", "crash-pa55word");
  CrashMatrix matrix(volume);
  for (const char* fp : {"attach.after_record", "attach.before_volume_connect",
                         "attach.after_volume_connect", "attach.after_device"}) {
    matrix.run({fp, Op::kAttach});
  }
  matrix.run({"attach.after_volume_connect", Op::kAttach, "abort", true});
  matrix.run({"attach.after_volume_connect", Op::kAttach, "error"});
  for (const char* fp :
       {"detach.after_record", "detach.after_device", "detach.after_volume_disconnect"}) {
    matrix.run({fp, Op::kDetach});
  }
  matrix.run({"detach.after_device", Op::kDetach, "abort", true});
}

TEST_CASE("crash matrix: snapshot", "[integration][volumes][crash]") {
  TestVolume volume(25, "vol-crash-snapshot");
  CrashMatrix matrix(volume);
  for (const char* fp : {"snapshot.after_record", "snapshot.after_pause", "snapshot.after_export",
                         "snapshot.after_resume", "snapshot.after_upload"}) {
    matrix.run({fp, Op::kSnapshot});
  }
  matrix.run({"snapshot.after_export", Op::kSnapshot, "error"});
}

TEST_CASE("libvirtd restarted in the middle of a launch: active or error, no orphans",
          "[integration][crash][libvirtd-restart]") {
  std::vector<Row> rows;
  int n = 900;
  for (const char* window : {"launch.after_volumes", "launch.after_define"}) {
    INFO("libvirtd restarted during " << window);
    const std::string uuid = uuidFor(++n);
    KilndHarness kilnd;
    addLocalImageForCrash(kilnd);
    kilnd.setBinary(KILND_FAILPOINTS_PATH);
    // The failpoint holds the launch for 3 s at that step: libvirtd restarts meanwhile.
    kilnd.setEnv("KILN_FAILPOINTS", std::string(window) + "=delay:3000");
    kilnd.start();
    auto started = std::chrono::steady_clock::now();
    json body = {{"uuid", uuid}, {"name", "lv"}, {"flavor", "test.small"}};
    body["image"] = {{"id", "uefi"}};
    REQUIRE(kilnd.api("POST", "/v1/instances", body.dump()).status == 202);
    const std::string hit = std::string("Failpoint '") + window + "' hit";
    for (int i = 0; i < 600 && kilnd.logText().find(hit) == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(kilnd.logText().find(hit) != std::string::npos);
    kiln::testing::restartLibvirtd();

    json rec = settle(kilnd, uuid, std::chrono::seconds(90));
    REQUIRE_FALSE(rec.is_null());
    std::string state = rec["state"];
    INFO(rec.dump(2) << "\n" << kilnd.logText());
    CHECK((state == "active" || state == "error"));
    if (state == "error") CHECK_FALSE(shortFault(rec, "fault").empty());
    // What the failed step left (a domain defined but never started, say) is swept once kilnd
    // has reconnected; give that reconcile a moment.
    kiln::testing::OrphanScope scope{{uuid}, ""};
    std::vector<std::string> orphans;
    for (int i = 0; i < 100; ++i) {
      orphans = kiln::testing::findOrphans(kilnd, scope);
      if (orphans.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    for (const auto& o : orphans) UNSCOPED_INFO(o);
    CHECK(orphans.empty());
    rows.push_back(
        {std::string("libvirtd restart at ") + window, "delay:3000",
         state == "error" ? "error: " + shortFault(rec, "fault") : state,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()});
    REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
    REQUIRE(kilnd.waitGone(uuid));
    CHECK(kiln::testing::findOrphans(kilnd, scope).empty());
  }
  printRows(rows);
}
