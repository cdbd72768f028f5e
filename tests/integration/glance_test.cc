// The image service for real: kilnd fetching from a real OpenStack Glance (Debian's glance-api,
// started on loopback by the CTest fixture), verifying, refusing hostile images, sharing one
// download between concurrent launches, and managing its cache.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/command_runner.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

// The Glance the CTest fixture starts (scripts/start-glance.sh).
std::string glanceUrl() { return KILN_GLANCE_URL; }
std::string glanceStore() { return std::string(KILN_GLANCE_DIR) + "/images"; }

kiln::CommandOutput run(std::vector<std::string> argv) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.timeout = std::chrono::seconds(120);
  auto out = runner.run(spec);
  REQUIRE(out.ok());
  INFO(out->stderr_text);
  REQUIRE(out->succeeded());
  return *out;
}

// Creates an image in Glance and uploads `file`; returns its record.
json uploadImage(const std::string& name, const std::string& file, const std::string& disk_format,
                 json properties = json::object()) {
  json body = {{"name", name}, {"disk_format", disk_format}, {"container_format", "bare"}};
  body.update(properties);
  auto created = run({"curl", "-sS", "-f", "-X", "POST", "-H", "Content-Type: application/json",
                      "-d", body.dump(), glanceUrl() + "/v2/images"});
  json image = json::parse(created.stdout_text);
  std::string id = image["id"];
  run({"curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
       "--data-binary", "@" + file, glanceUrl() + "/v2/images/" + id + "/file"});
  auto shown = run({"curl", "-sS", "-f", glanceUrl() + "/v2/images/" + id});
  json record = json::parse(shown.stdout_text);
  REQUIRE(record["status"] == "active");
  return record;
}

// How many times Glance served the bytes of `id` over its API.
int glanceDownloads(const std::string& id) {
  std::ifstream log(std::string(KILN_GLANCE_DIR) + "/glance-api.log");
  std::string line;
  int count = 0;
  while (std::getline(log, line)) {
    if (line.find("GET /v2/images/" + id + "/file") != std::string::npos) ++count;
  }
  return count;
}

std::string launch(KilndHarness& kilnd, const std::string& uuid, const std::string& image_id,
                   const json& flavor = "test.small") {
  auto r = kilnd.api(
      "POST", "/v1/instances",
      json{{"uuid", uuid}, {"name", "g"}, {"flavor", flavor}, {"image", {{"id", image_id}}}}
          .dump());
  REQUIRE(r.status == 202);
  return uuid;
}

// A launch for `project` (the scheduler names it): kiln checks the image with its own token and
// Glance's rules for that project.
std::string launchFor(KilndHarness& kilnd, const std::string& uuid, const std::string& image_id,
                      const std::string& project) {
  auto r = kilnd.api("POST", "/v1/instances",
                     json{{"uuid", uuid},
                          {"name", "g"},
                          {"flavor", "test.small"},
                          {"image", {{"id", image_id}}},
                          {"project_id", project}}
                         .dump());
  REQUIRE(r.status == 202);
  return uuid;
}

// What a launch of an image Glance does not have ends with.
std::string missingFault(const std::string& image_id) {
  return "Image '" + image_id + "' was not found in Glance at '" + glanceUrl() + "'";
}

// A refused launch made nothing on the host: no instance directory, no domain.
void checkNothingLeft(KilndHarness& kilnd, const std::string& uuid) {
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
}

void deleteAndWait(KilndHarness& kilnd, const std::string& uuid) {
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

std::string glanceConfig(const std::string& servers, const std::string& extra = "") {
  return "[glance]\napi_servers = " + servers + "\nnum_retries = 2\n" + extra;
}

bool baseDirEmpty(const KilndHarness& kilnd) {
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(kilnd.statePath() + "/_base", ec)) {
    (void)e;
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("a guest launched from a Glance image boots, with the image's properties",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json image = uploadImage("kiln-guest", kiln::testing::guestImagePath(), "raw",
                           {{"hw_qemu_guest_agent", "no"}, {"os_distro", "busybox"}});
  // The first server refuses connections: kilnd fails over to the second.
  KilndHarness kilnd(glanceConfig("http://127.0.0.1:1, " + glanceUrl()));
  kilnd.start();
  const std::string uuid = launch(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f01", image["id"]);
  json active = kilnd.waitForState(uuid, "active");
  CHECK(active["image"]["properties"]["os_distro"] == "busybox");
  CHECK(active["image"]["properties"]["hw_qemu_guest_agent"] == "no");
  auto disks = kiln::testing::consoleDisks(kilnd.waitForConsole(uuid, "KILN-READY"));
  CHECK(disks["vda"] == 1ULL << 30);
  CHECK(glanceDownloads(image["id"]) == 1);

  auto cached = kilnd.api("GET", "/v1/images");
  REQUIRE(cached.status == 200);
  REQUIRE(cached.json["images"].size() == 1);
  CHECK(cached.json["images"][0]["id"] == image["id"]);
  CHECK(cached.json["images"][0]["instances"] == json::array({uuid}));
  // In use: eviction is refused.
  CHECK(kilnd.api("DELETE", "/v1/images/" + image["id"].get<std::string>()).status == 409);
  deleteAndWait(kilnd, uuid);
  CHECK(kilnd.api("DELETE", "/v1/images/" + image["id"].get<std::string>()).status == 204);
  CHECK(baseDirEmpty(kilnd));
}

TEST_CASE("a qcow2 image from Glance is converted to a raw base and boots",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  kiln::testing::TempDir tmp;
  std::string qcow2 = tmp.path() + "/guest.qcow2";
  run({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", kiln::testing::guestImagePath(),
       qcow2});
  json image = uploadImage("kiln-guest-qcow2", qcow2, "qcow2");
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();
  const std::string uuid = launch(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f02", image["id"]);
  json active = kilnd.waitForState(uuid, "active");
  CHECK(active["disks"][0]["backing"]["format"] == "raw");
  std::vector<std::string> steps;
  for (auto& s : active["timeline"]) steps.push_back(s["step"]);
  CHECK(std::find(steps.begin(), steps.end(), "image.convert") != steps.end());
  kilnd.waitForConsole(uuid, "KILN-READY");
  auto shown = kilnd.api("GET", "/v1/images/" + image["id"].get<std::string>());
  CHECK(shown.json["format"] == "raw");
  CHECK(shown.json["source_format"] == "qcow2");
  deleteAndWait(kilnd, uuid);
}

TEST_CASE("bytes that do not match Glance's hash fail the launch and leave nothing cached",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  kiln::testing::TempDir tmp;
  std::string file = tmp.path() + "/data.raw";
  std::ofstream(file) << std::string(1 << 20, 'k');
  json image = uploadImage("tampered", file, "raw");
  // Corrupt the stored copy behind Glance's back, as a bad disk or a man in the middle would.
  std::string stored = glanceStore() + "/" + image["id"].get<std::string>();
  REQUIRE(stdfs::exists(stored));
  {
    std::fstream f(stored, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    f.write("EVIL", 4);
  }
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();
  const std::string uuid = launch(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f03", image["id"]);
  json failed = kilnd.waitForState(uuid, "error");
  CHECK(failed["fault"]["message"].get<std::string>().find("hash does not match") !=
        std::string::npos);
  CHECK(baseDirEmpty(kilnd));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
  deleteAndWait(kilnd, uuid);
}

TEST_CASE("hostile images from Glance are refused with a reason before qemu-img reads them",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  kiln::testing::TempDir tmp;
  auto make = [&](const std::string& name, const std::vector<std::string>& args) {
    std::string path = tmp.path() + "/" + name;
    std::vector<std::string> argv = {"qemu-img", "create", "-q"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(path);
    argv.push_back("64M");
    run(argv);
    return path;
  };
  struct Hostile {
    std::string file;
    std::string disk_format;
    std::string reason;
  };
  // A backing file given as a json: pseudo-protocol path, one argument to qemu-img.
  const std::string json_backing =
      R"(json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}})";
  std::vector<Hostile> cases = {
      {make("backing.qcow2", {"-f", "qcow2", "-F", "raw", "-b", "/etc/shadow"}), "qcow2",
       "backing file"},
      {make("json-backing.qcow2", {"-f", "qcow2", "-u", "-F", "raw", "-b", json_backing}), "qcow2",
       "backing file"},
      {make("datafile.qcow2", {"-f", "qcow2", "-o", "data_file=" + tmp.path() + "/ext.raw"}),
       "qcow2", "data file"},
      {make("liar.qcow2", {"-f", "qcow2"}), "raw", "'qcow2'"},
      {make("flat.vmdk", {"-f", "vmdk", "-o", "subformat=monolithicFlat"}), "vmdk", "vmdk"},
  };
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();
  int n = 0;
  for (const auto& c : cases) {
    json image = uploadImage("hostile", c.file, c.disk_format);
    std::string uuid = fmt::format("7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f{:02}", 10 + n++);
    launch(kilnd, uuid, image["id"]);
    json failed = kilnd.waitForState(uuid, "error");
    std::string fault = failed["fault"]["message"];
    INFO(c.file << ": " << fault);
    std::transform(fault.begin(), fault.end(), fault.begin(), ::tolower);
    CHECK(fault.find(c.reason) != std::string::npos);
    CHECK(baseDirEmpty(kilnd));
    deleteAndWait(kilnd, uuid);
  }
}

TEST_CASE("concurrent launches of one uncached image cause exactly one download",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json image = uploadImage("shared", kiln::testing::guestImagePath(), "raw");
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();
  std::vector<std::string> uuids;
  for (int i = 0; i < 3; ++i) {
    uuids.push_back(launch(kilnd, fmt::format("7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f2{}", i),
                           image["id"], json{{"vcpus", 1}, {"memory_mb", 128}, {"root_gb", 1}}));
  }
  int downloads_in_timelines = 0;
  for (const auto& uuid : uuids) {
    json active = kilnd.waitForState(uuid, "active");
    for (auto& s : active["timeline"]) downloads_in_timelines += s["step"] == "image.download";
  }
  CHECK(downloads_in_timelines == 1);
  CHECK(glanceDownloads(image["id"]) == 1);
  for (const auto& uuid : uuids) deleteAndWait(kilnd, uuid);
}

TEST_CASE("a file:// location under an allowed filesystem is copied without HTTP",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json image = uploadImage("direct", kiln::testing::guestImagePath(), "raw");
  KilndHarness kilnd(glanceConfig(glanceUrl(),
                                  "allowed_direct_url_schemes = file\n"
                                  "[image_file_url]\nfilesystems = " +
                                      glanceStore() + "\n"));
  kilnd.start();
  const std::string uuid = launch(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f30", image["id"]);
  kilnd.waitForState(uuid, "active");
  CHECK(glanceDownloads(image["id"]) == 0);
  kilnd.waitForConsole(uuid, "KILN-READY");
  deleteAndWait(kilnd, uuid);
}

TEST_CASE("pre-caching, and the cache manager removing only unused bases",
          "[integration][glance]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json kept = uploadImage("kept", kiln::testing::guestImagePath(), "raw");
  json unused = uploadImage("unused", kiln::testing::guestImagePath(), "raw");
  KilndHarness kilnd(glanceConfig(glanceUrl()) +
                     "[image_cache]\nmanager_interval = 1\n"
                     "remove_unused_original_minimum_age_seconds = 2\n");
  kilnd.start();
  std::string unused_id = unused["id"];
  auto put = kilnd.api("PUT", "/v1/images/" + unused_id);
  REQUIRE(put.status == 202);
  json shown;
  for (int i = 0; i < 100; ++i) {
    shown = kilnd.api("GET", "/v1/images/" + unused_id).json;
    if (shown.value("status", "") == "cached") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(shown["status"] == "cached");
  CHECK(kilnd.api("PUT", "/v1/images/" + unused_id).status == 200);
  CHECK(kilnd.api("GET", "/v1/images/no-such-image").status == 404);
  CHECK(kilnd.api("PUT", "/v1/images/..%2Fetc").status == 400);

  // An instance that is stopped still needs its base.
  const std::string uuid = launch(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f40", kept["id"]);
  kilnd.waitForState(uuid, "active");
  REQUIRE(kiln::testing::virsh({"destroy", "kiln-" + uuid}));
  kilnd.waitForState(uuid, "stopped", std::chrono::seconds(60));

  // The unused base goes after its minimum age; the one the stopped instance uses stays.
  bool removed = false;
  for (int i = 0; i < 100 && !removed; ++i) {
    removed = kilnd.api("GET", "/v1/images/" + unused_id).status == 404;
    if (!removed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(removed);
  auto still = kilnd.api("GET", "/v1/images/" + kept["id"].get<std::string>());
  CHECK(still.status == 200);
  CHECK(still.json["instances"] == json::array({uuid}));
  deleteAndWait(kilnd, uuid);
}

TEST_CASE("another project's private image is refused like a missing one, cached or not",
          "[integration][glance][access]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json image = uploadImage("a-private", kiln::testing::guestImagePath(), "raw",
                           {{"owner", "project-a"}, {"visibility", "private"}});
  REQUIRE(image["owner"] == "project-a");
  const std::string id = image["id"];
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();

  // Project B, uncached: refused in the words of a missing image, nothing fetched or made.
  const std::string b1 = launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f50", id, "project-b");
  json denied = kilnd.waitForState(b1, "error");
  CHECK(denied["fault"]["message"] == missingFault(id));
  checkNothingLeft(kilnd, b1);
  CHECK(baseDirEmpty(kilnd));
  CHECK(glanceDownloads(id) == 0);
  const std::string missing_id = "00000000-0000-4000-8000-0000000000ab";
  const std::string gone =
      launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f53", missing_id, "project-b");
  CHECK(kilnd.waitForState(gone, "error")["fault"]["message"] == missingFault(missing_id));

  // The owner's launch works and caches the base.
  const std::string a1 = launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f51", id, "project-a");
  kilnd.waitForState(a1, "active");
  CHECK_FALSE(baseDirEmpty(kilnd));

  // Cached now, and still not project B's: no cache hit, no domain.
  const std::string b2 = launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f52", id, "project-b");
  json again = kilnd.waitForState(b2, "error");
  CHECK(again["fault"]["message"] == missingFault(id));
  checkNothingLeft(kilnd, b2);
  std::vector<std::string> steps;
  for (auto& s : again["timeline"]) steps.push_back(s["step"]);
  CHECK(steps == std::vector<std::string>{"image.access"});
  // The same from a caller whose own token is project B's.
  kilnd.stop();
  const std::string b_token = kilnd.addToken("admin", "project-b");
  kilnd.start();
  kilnd.useToken(b_token);
  const std::string own_uuid = "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f54";
  auto r = kilnd.api(
      "POST", "/v1/instances",
      json{{"uuid", own_uuid}, {"name", "g"}, {"flavor", "test.small"}, {"image", {{"id", id}}}}
          .dump());
  REQUIRE(r.status == 202);
  CHECK(r.json["project_id"] == "project-b");
  json own = kilnd.waitForState(own_uuid, "error");
  CHECK(own["fault"]["message"] == missingFault(id));
  for (const auto& uuid : {b1, gone, a1, b2, own_uuid}) {
    deleteAndWait(kilnd, uuid);
  }
}

TEST_CASE("a shared image boots for an accepted member, not for a pending one",
          "[integration][glance][access]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json image = uploadImage("a-shared", kiln::testing::guestImagePath(), "raw",
                           {{"owner", "project-a"}, {"visibility", "shared"}});
  const std::string id = image["id"];
  for (const char* member : {"project-b", "project-c"}) {
    run({"curl", "-sS", "-f", "-X", "POST", "-H", "Content-Type: application/json", "-d",
         json{{"member", member}}.dump(), glanceUrl() + "/v2/images/" + id + "/members"});
  }
  run({"curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/json", "-d",
       R"({"status": "accepted"})", glanceUrl() + "/v2/images/" + id + "/members/project-b"});
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();

  const std::string c = launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f60", id, "project-c");
  CHECK(kilnd.waitForState(c, "error")["fault"]["message"] == missingFault(id));
  checkNothingLeft(kilnd, c);
  const std::string b = launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f61", id, "project-b");
  kilnd.waitForState(b, "active");
  const std::string d = launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f62", id, "project-d");
  CHECK(kilnd.waitForState(d, "error")["fault"]["message"] == missingFault(id));
  checkNothingLeft(kilnd, d);
  for (const auto& uuid : {c, b, d}) deleteAndWait(kilnd, uuid);
}

TEST_CASE("a snapshot of project B's instance is owned by project B in Glance, private",
          "[integration][glance][access]") {
  REQUIRE_FALSE(glanceUrl().empty());
  json image = uploadImage("b-base", kiln::testing::guestImagePath(), "raw",
                           {{"owner", "project-b"}, {"visibility", "private"}});
  KilndHarness kilnd(glanceConfig(glanceUrl()));
  kilnd.start();
  const std::string uuid =
      launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f70", image["id"], "project-b");
  kilnd.waitForState(uuid, "active");
  auto snap = kilnd.api("POST", "/v1/instances/" + uuid + "/action",
                        json{{"snapshot", {{"name", "b-snap"}}}}.dump());
  REQUIRE(snap.status == 202);
  const std::string snap_id = snap.json["image_id"];
  json record;
  for (int i = 0; i < 600; ++i) {
    record =
        json::parse(run({"curl", "-sS", "-f", glanceUrl() + "/v2/images/" + snap_id}).stdout_text);
    if (record["status"] == "active") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  REQUIRE(record["status"] == "active");
  CHECK(record["owner"] == "project-b");
  CHECK(record["visibility"] == "private");
  // Hence project C cannot boot it.
  const std::string c =
      launchFor(kilnd, "7a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f71", snap_id, "project-c");
  CHECK(kilnd.waitForState(c, "error")["fault"]["message"] == missingFault(snap_id));
  checkNothingLeft(kilnd, c);
  // The upload has ended when the instance has no task any more.
  for (int i = 0; i < 300; ++i) {
    if (kilnd.api("GET", "/v1/instances/" + uuid).json["task_state"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  deleteAndWait(kilnd, c);
  deleteAndWait(kilnd, uuid);
  run({"curl", "-sS", "-f", "-X", "DELETE", glanceUrl() + "/v2/images/" + snap_id});
}
