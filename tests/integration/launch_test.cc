// End to end: a real kilnd, a real libvirtd and QEMU (TCG), a real guest that reports its disks
// on the serial console.
#include <sqlite3.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/integration/kilnd_harness.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

constexpr std::uint64_t kGiB = 1ULL << 30;

std::string launchBody(const std::string& uuid, const json& flavor, const std::string& image) {
  return json{{"uuid", uuid},
              {"name", "it-" + uuid.substr(0, 8)},
              {"flavor", flavor},
              {"image", {{"id", image}}}}
      .dump();
}

bool dbHasRow(const std::string& db_path, const std::string& uuid) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*) FROM instances WHERE uuid = ?", -1, &stmt,
                             nullptr) == SQLITE_OK);
  sqlite3_bind_text(stmt, 1, uuid.c_str(), -1, SQLITE_TRANSIENT);
  REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
  bool found = sqlite3_column_int(stmt, 0) > 0;
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return found;
}

}  // namespace

TEST_CASE("launch, see the disks from inside, survive a kilnd restart, delete cleanly",
          "[integration]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "6f1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f01";

  auto accepted = kilnd.api("POST", "/v1/instances", launchBody(uuid, "test.small", "guest"));
  REQUIRE(accepted.status == 202);
  CHECK(accepted.json["state"] == "building");

  json active = kilnd.waitForState(uuid, "active");
  CHECK(active["power_state"] == "running");
  CHECK(active["image"]["id"] == "guest");
  REQUIRE(active["disks"].size() == 2);
  CHECK(active["disks"][0]["device"] == "vda");
  CHECK(active["disks"][0]["format"] == "qcow2");
  CHECK(active["disks"][0]["virtual_size"] == kGiB);
  CHECK(active["disks"][1]["device"] == "vdb");
  std::vector<std::string> steps;
  for (auto& s : active["timeline"]) {
    steps.push_back(s["step"]);
    CHECK(s["duration_ms"].is_number_integer());
  }
  CHECK(steps == std::vector<std::string>{"image.access", "image.record", "image.download",
                                          "image.inspect", "disk.root", "disk.ephemeral",
                                          "domain.define", "domain.start"});

  // The guest itself reports what it sees.
  std::string console = kilnd.waitForConsole(uuid, "KILN-READY");
  auto disks = kiln::testing::consoleDisks(console);
  CHECK(disks["vda"] == 1 * kGiB);  // root_gb
  CHECK(disks["vdb"] == 1 * kGiB);  // ephemeral_gb
  CHECK(disks.size() == 2);
  CHECK(console.find("KILN-BOOT firmware=bios") != std::string::npos);

  const std::string domain = "kiln-" + uuid;
  auto qemu_id_before = kiln::testing::virsh({"domid", domain});
  REQUIRE(qemu_id_before);
  auto base_path = active["disks"][0]["backing"]["path"].get<std::string>();
  std::string base_hash = kiln::testing::sha256File(base_path);
  struct stat base_stat_before {};
  REQUIRE(::stat(base_path.c_str(), &base_stat_before) == 0);

  // Restarting kilnd never stops an instance, and kilnd finds it again as it was.
  kilnd.stop();
  CHECK(kiln::testing::virsh({"domstate", domain}).value_or("").find("running") !=
        std::string::npos);
  kilnd.start();
  json after = kilnd.waitForState(uuid, "active");
  CHECK(after["power_state"] == "running");
  CHECK(kiln::testing::virsh({"domid", domain}) == qemu_id_before);

  auto listed = kilnd.api("GET", "/v1/instances");
  REQUIRE(listed.status == 200);
  REQUIRE(listed.json["instances"].size() == 1);

  // Delete: domain, files and row gone; the base untouched, byte for byte and owner.
  auto deleted = kilnd.api("DELETE", "/v1/instances/" + uuid);
  REQUIRE(deleted.status == 202);
  REQUIRE(kilnd.waitGone(uuid));
  CHECK_FALSE(kiln::testing::virsh({"dominfo", domain}));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  CHECK_FALSE(dbHasRow(kilnd.statePath() + "/kiln.db", uuid));
  CHECK(kiln::testing::sha256File(base_path) == base_hash);
  struct stat base_stat_after {};
  REQUIRE(::stat(base_path.c_str(), &base_stat_after) == 0);
  CHECK(base_stat_after.st_uid == base_stat_before.st_uid);
  CHECK(base_stat_after.st_mode == base_stat_before.st_mode);
  CHECK(base_stat_after.st_mtime == base_stat_before.st_mtime);
}

TEST_CASE("an image too large for the flavor fails with a fault and leaves nothing",
          "[integration]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "6f1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f02";
  // root_gb 0 would mean "the image's size"; a flavor with root_gb 1 is fine for the guest, so
  // give the image a min_disk the flavor cannot meet and a second image whose virtual size is
  // too big.
  std::string big = kilnd.imagesDir() + "/big.qcow2";
  REQUIRE(std::system(("qemu-img create -q -f qcow2 " + big + " 3G").c_str()) == 0);
  kiln::testing::addLocalImage(kilnd.imagesDir(), "big", kiln::testing::readAll(big), "qcow2");
  auto r = kilnd.api("POST", "/v1/instances", launchBody(uuid, "m1.tiny", "big"));
  REQUIRE(r.status == 202);
  json failed = kilnd.waitForState(uuid, "error");
  CHECK(failed["fault"]["message"].get<std::string>().find("larger than the flavor's root disk") !=
        std::string::npos);
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

TEST_CASE("the API authenticates, validates and answers errors in JSON", "[integration]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  auto health = kilnd.api("GET", "/healthz", "", false);
  CHECK(health.status == 200);
  CHECK(health.json == json{{"status", "ok"}, {"libvirt", "connected"}});

  auto anonymous = kilnd.api("GET", "/v1/instances", "", false);
  CHECK(anonymous.status == 401);
  CHECK(anonymous.json["error"]["code"] == 401);
  auto wrong = kilnd.api("GET", "/v1/instances", "", false,
                         "Authorization: Bearer 0000000000000000000000000000000000\r\n");
  CHECK(wrong.status == 401);
  CHECK(wrong.body.find("0000000000000000") == std::string::npos);

  auto host = kilnd.api("GET", "/v1/host");
  REQUIRE(host.status == 200);
  CHECK(host.json["hypervisor_type"] == "QEMU");
  CHECK(host.json["vcpus"]["total"].get<int>() > 0);
  CHECK(host.json["memory_mb"]["total"].get<int>() > 0);
  CHECK(host.json["disk_gb"]["total"].get<int>() > 0);
  CHECK(host.json["availability_zone"] == "nova");

  auto flavors = kilnd.api("GET", "/v1/flavors");
  REQUIRE(flavors.status == 200);
  CHECK(flavors.json["flavors"].size() == 2);

  const std::string uuid = "6f1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f03";
  struct Bad {
    std::string body;
    int status;
  };
  for (const Bad& bad : {Bad{"{not json", 400}, Bad{"[]", 400},
                         Bad{launchBody("not-a-uuid", "test.small", "guest"), 400},
                         Bad{launchBody(uuid, "no.such.flavor", "guest"), 400},
                         Bad{launchBody(uuid, json{{"vcpus", "2"}}, "guest"), 400},
                         Bad{std::string(2 * 1024 * 1024, ' '), 413}}) {
    auto r = kilnd.api("POST", "/v1/instances", bad.body);
    INFO(bad.body.substr(0, 80));
    CHECK(r.status == bad.status);
    CHECK(r.json["error"]["message"].is_string());
  }
  CHECK(kilnd.api("GET", "/v1/instances/not-a-uuid").status == 400);
  CHECK(kilnd.api("GET", "/v1/instances/" + uuid).status == 404);
  CHECK(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 404);
  CHECK(kilnd.api("PUT", "/v1/instances").status == 405);
  CHECK(kilnd.api("GET", "/v1/nothing").status == 404);

  // Idempotent create: the same body again is the same instance; another body conflicts.
  auto first = kilnd.api("POST", "/v1/instances", launchBody(uuid, "test.small", "guest"));
  REQUIRE(first.status == 202);
  auto again = kilnd.api("POST", "/v1/instances", launchBody(uuid, "test.small", "guest"));
  CHECK(again.status == 202);
  CHECK(again.json["uuid"] == uuid);
  auto other = kilnd.api("POST", "/v1/instances", launchBody(uuid, "m1.tiny", "guest"));
  CHECK(other.status == 409);
  kilnd.waitForState(uuid, "active");
  CHECK(kilnd.api("GET", "/v1/instances").json["instances"].size() == 1);
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

TEST_CASE("kilnd tells systemd it is ready once the API listens, and stopping", "[integration]") {
  KilndHarness kilnd;
  kilnd.enableNotifySocket();
  kilnd.start();  // returns once /healthz answers
  std::string ready = kilnd.readNotify(std::chrono::seconds(5));
  CHECK(ready.find("READY=1") != std::string::npos);
  CHECK(ready.find("STATUS=Listening on 127.0.0.1:") != std::string::npos);
  kilnd.stop();
  std::string stopping = kilnd.readNotify(std::chrono::seconds(5));
  CHECK(stopping.find("STOPPING=1") != std::string::npos);
}

TEST_CASE("an invalid configuration stops kilnd with a message naming the option",
          "[integration]") {
  KilndHarness kilnd("[libvirt]\nkeepalive_count = lots\n");
  CHECK_FALSE(kilnd.tryStart());
  CHECK(kilnd.logText().find("[libvirt] keepalive_count") != std::string::npos);
}
