// Snapshots of running instances become images: the guest marks its root disk, the snapshot is
// taken while it runs, and an instance launched from the new image finds the mark.
#include <catch2/catch.hpp>
#include <filesystem>
#include <regex>
#include <thread>

#include "common/command_runner.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

std::string rootMark(const std::string& console, const std::string& tag) {
  std::smatch m;
  std::regex re(tag + " ([0-9a-f-]{36})");
  return std::regex_search(console, m, re) ? m[1].str() : "";
}

json idle(KilndHarness& kilnd, const std::string& uuid) {
  json rec;
  for (int i = 0; i < 1200; ++i) {
    rec = kilnd.api("GET", "/v1/instances/" + uuid).json;
    if (rec["task_state"].is_null()) return rec;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("instance stayed busy: " << rec.dump());
  return rec;
}

std::string launch(KilndHarness& kilnd, const std::string& uuid, const std::string& image) {
  auto r = kilnd.api(
      "POST", "/v1/instances",
      json{{"uuid", uuid}, {"name", "s"}, {"flavor", "test.small"}, {"image", {{"id", image}}}}
          .dump());
  INFO(r.body);
  REQUIRE(r.status == 202);
  return uuid;
}

void deleteAndWait(KilndHarness& kilnd, const std::string& uuid) {
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

// Snapshot, then launch from it: the mark the first guest wrote is what the second finds.
void snapshotRoundTrip(KilndHarness& kilnd, const std::string& base_image) {
  const std::string first = launch(kilnd, "ba1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f01", base_image);
  kilnd.waitForState(first, "active");
  std::string console = kilnd.waitForConsole(first, "KILN-READY");
  std::string mark = rootMark(console, "KILN-ROOT-WROTE");
  REQUIRE_FALSE(mark.empty());

  auto r = kilnd.api(
      "POST", "/v1/instances/" + first + "/action",
      json{{"snapshot", {{"name", "snap-1"}, {"metadata", {{"purpose", "test"}}}}}}.dump());
  INFO(r.body);
  REQUIRE(r.status == 202);
  std::string image_id = r.json["image_id"];
  json during = kilnd.api("GET", "/v1/instances/" + first).json;
  CHECK((during["task_state"] == "image_uploading" || during["task_state"].is_null()));
  json after = idle(kilnd, first);
  INFO(after.dump());
  CHECK(after.value("action_error", json()).is_null());
  CHECK(after["state"] == "active");
  CHECK(after["power_state"] == "running");  // resumed after the capture

  const std::string second = launch(kilnd, "ba1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f02", image_id);
  json rec = kilnd.waitForState(second, "active");
  CHECK(rec["image"]["properties"]["image_type"] == "snapshot");
  CHECK(rec["image"]["properties"]["instance_uuid"] == first);
  CHECK(rec["image"]["properties"]["base_image_ref"] == base_image);
  CHECK(rec["image"]["properties"]["purpose"] == "test");
  CHECK(rec["image"]["properties"]["os_distro"] == "busybox");  // inherited
  std::string console2 = kilnd.waitForConsole(second, "KILN-READY");
  CHECK(rootMark(console2, "KILN-ROOT-FOUND") == mark);
  deleteAndWait(kilnd, first);
  deleteAndWait(kilnd, second);
}

}  // namespace

TEST_CASE("a snapshot of a running instance becomes a local image that boots with its data",
          "[integration]") {
  KilndHarness kilnd;
  kiln::testing::addLocalImage(kilnd.imagesDir(), "guest",
                               kiln::testing::readAll(kiln::testing::guestImagePath()), "raw",
                               {{"os_distro", "busybox"}});
  kilnd.start();
  snapshotRoundTrip(kilnd, "guest");
  // The new image is a whole one in the image directory, its bytes matching its record.
  bool found = false;
  for (const auto& e : stdfs::directory_iterator(kilnd.imagesDir())) {
    if (e.path().extension() != ".json" || e.path().stem() == "guest") continue;
    json record = json::parse(kiln::testing::readAll(e.path()));
    std::string bytes =
        kiln::testing::readAll(kilnd.imagesDir() + "/" + e.path().stem().string() + ".img");
    CHECK(record["os_hash_value"] == kiln::testing::hexDigest("sha512", bytes));
    CHECK(record["disk_format"] == "qcow2");
    found = true;
  }
  CHECK(found);
}

TEST_CASE("a snapshot goes to Glance and boots from there", "[integration][glance]") {
  const std::string url = KILN_GLANCE_URL;
  kiln::PosixCommandRunner runner;
  auto run = [&](std::vector<std::string> argv) {
    kiln::CommandSpec spec;
    spec.argv = std::move(argv);
    spec.timeout = std::chrono::seconds(60);
    auto out = runner.run(spec);
    REQUIRE(out.ok());
    REQUIRE(out->succeeded());
    return out->stdout_text;
  };
  json body = {{"name", "snap-base"},
               {"disk_format", "raw"},
               {"container_format", "bare"},
               {"os_distro", "busybox"}};
  json image =
      json::parse(run({"curl", "-sS", "-f", "-X", "POST", "-H", "Content-Type: application/json",
                       "-d", body.dump(), url + "/v2/images"}));
  std::string base_id = image["id"];
  // A named string, not "@" + guestImagePath(): prefixing a temporary draws a false -Wrestrict
  // from GCC 12 at -O3 (GCC bug 105329).
  const std::string guest_image = kiln::testing::guestImagePath();
  run({"curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
       "--data-binary", "@" + guest_image, url + "/v2/images/" + base_id + "/file"});
  KilndHarness kilnd("[glance]\napi_servers = " + url + "\n");
  kilnd.start();
  snapshotRoundTrip(kilnd, base_id);
}
