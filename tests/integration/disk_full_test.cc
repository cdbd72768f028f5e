// The disk filling up under kilnd: state_path is a small ext4 filesystem of the test's own (a
// loop-mounted image), filled during an image fetch and during disk creation. The launch must
// fail with a fault that says so, leave no partial base or disk, and kilnd must keep serving; once
// space is freed, a launch works.
#include <sys/mount.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include "common/command_runner.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/integration/orphans.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

int run(std::vector<std::string> argv) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.timeout = std::chrono::seconds(60);
  auto out = runner.run(spec);
  if (!out) return -1;
  if (!out->succeeded()) UNSCOPED_INFO(out->stderr_text);
  return out->exit_code;
}

// A small ext4 filesystem (loop-mounted image) at `mountpoint`, unmounted and removed with the
// object even when the test fails. ext4 rather than tmpfs: QEMU opens disks with O_DIRECT
// (cache=none), which tmpfs refuses on older kernels.
class SmallFilesystem {
 public:
  SmallFilesystem(const std::string& mountpoint, unsigned mib)
      : image_(dir_.path() + "/fs.img"), mountpoint_(mountpoint) {
    std::ofstream(image_).close();
    stdfs::resize_file(image_, std::uint64_t{mib} << 20);
    REQUIRE(run({"mkfs.ext4", "-q", "-F", "-m", "0", image_}) == 0);
    stdfs::create_directories(mountpoint_);
    REQUIRE(run({"mount", "-o", "loop", image_, mountpoint_}) == 0);
    mounted_ = true;
    ::chmod(mountpoint_.c_str(), 0711);  // QEMU (another user) must reach the disks
  }
  ~SmallFilesystem() {
    // Lazy: a QEMU still going away must not keep the mount (and its loop device) behind.
    if (mounted_) run({"umount", "-l", mountpoint_});
  }
  SmallFilesystem(const SmallFilesystem&) = delete;
  SmallFilesystem& operator=(const SmallFilesystem&) = delete;

  std::uint64_t freeBytes() const { return stdfs::space(mountpoint_).available; }
  // Takes all but `leave` bytes of the free space.
  void fill(std::uint64_t leave) {
    std::uint64_t take = freeBytes() - leave;
    REQUIRE(run({"fallocate", "-l", std::to_string(take), filler()}) == 0);
  }
  void unfill() { stdfs::remove(filler()); }

 private:
  std::string filler() const { return mountpoint_ + "/filler"; }
  kiln::testing::TempDir dir_;
  std::string image_;
  std::string mountpoint_;
  bool mounted_ = false;
};

std::string randomBytes(std::size_t n) {
  std::mt19937_64 rng(42);
  std::string out(n, '\0');
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

json launchAndSettle(KilndHarness& kilnd, const std::string& uuid, const std::string& image) {
  json body = {{"uuid", uuid}, {"name", "full"}, {"flavor", "m1.tiny"}, {"image", {{"id", image}}}};
  auto r = kilnd.api("POST", "/v1/instances", body.dump());
  INFO(r.body);
  REQUIRE(r.status == 202);
  for (int i = 0; i < 600; ++i) {
    json rec = kilnd.api("GET", "/v1/instances/" + uuid).json;
    if (rec.value("state", "") != "building") return rec;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("the launch of " << uuid << " never ended\n" << kilnd.logText());
  return {};
}

// Entries of the image cache that are not finished bases (partial downloads, conversions).
std::vector<std::string> partialBases(const std::string& base_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(base_dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.ends_with(".part") || name.ends_with(".converted") ||
        name.find(".tmp-") != std::string::npos) {
      out.push_back(name);
    }
  }
  return out;
}

std::string faultOf(const json& rec) {
  return rec.contains("fault") ? rec["fault"].value("message", "") : "";
}

void deleteAndWait(KilndHarness& kilnd, const std::string& uuid) {
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

}  // namespace

TEST_CASE("the disk fills up during an image fetch: a clear fault, no partial base",
          "[integration][disk-full]") {
  // No host reserve: the filesystem is what there is (the reserve has a test of its own).
  KilndHarness kilnd("[DEFAULT]\nuse_cow_images = true\nreserved_host_disk_mb = 0\n");
  SmallFilesystem fs(kilnd.statePath(), 48);
  // Bigger than the whole filesystem; random, so nothing on the way can make it sparse.
  kiln::testing::addLocalImage(kilnd.imagesDir(), "huge", randomBytes(64ULL << 20), "raw");
  kilnd.addGuestImage("guest");
  kilnd.start();

  const std::string uuid = "d15cf000-0000-4000-8000-000000000001";
  json rec = launchAndSettle(kilnd, uuid, "huge");
  INFO(rec.dump(2) << "\n" << kilnd.logText());
  CHECK(rec["state"] == "error");
  CHECK_THAT(faultOf(rec), Catch::Contains("space", Catch::CaseSensitive::No));
  std::cout << "fault: " << faultOf(rec) << "\n";
  // Refused before the first byte, naming the filesystem and the image.
  CHECK_THAT(faultOf(rec),
             Catch::Contains("Not enough space in '" + kilnd.statePath() + "' for image 'huge'"));
  CHECK(partialBases(kilnd.statePath() + "/_base").empty());
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  CHECK(kilnd.api("GET", "/healthz", "", false).status == 200);
  CHECK(kiln::testing::findOrphans(kilnd, {{uuid}, ""}).empty());
  deleteAndWait(kilnd, uuid);

  // Two images that each fit the free space, fetched at once, do not fit together: the first
  // download holds its space, so the second is refused before it writes, never cut off halfway
  // by ENOSPC.
  // Whole MiB: qemu-img rounds a raw image's size up to a sector, kiln's inspector does not.
  std::uint64_t each = (fs.freeBytes() * 3 / 5) & ~((1ULL << 20) - 1);
  kiln::testing::addLocalImage(kilnd.imagesDir(), "half-a", randomBytes(each), "raw");
  kiln::testing::addLocalImage(kilnd.imagesDir(), "half-b", randomBytes(each + (1ULL << 20)),
                               "raw");
  std::vector<std::pair<std::string, std::string>> both = {
      {"d15cf000-0000-4000-8000-000000000003", "half-a"},
      {"d15cf000-0000-4000-8000-000000000004", "half-b"}};
  for (const auto& [id, image] : both) {
    json body = {{"uuid", id}, {"name", "full"}, {"flavor", "m1.tiny"}, {"image", {{"id", image}}}};
    REQUIRE(kilnd.api("POST", "/v1/instances", body.dump()).status == 202);
  }
  int failed = 0;
  for (const auto& [id, image] : both) {
    json r;
    for (int i = 0; i < 600; ++i) {
      r = kilnd.api("GET", "/v1/instances/" + id).json;
      if (r.value("state", "") != "building") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    INFO(r.dump(2));
    CHECK((r["state"] == "active" || r["state"] == "error"));
    std::cout << "concurrent fetch of '" << image << "': " << r["state"].get<std::string>() << " "
              << faultOf(r) << "\n";
    if (r["state"] == "error") {
      ++failed;
      CHECK_THAT(faultOf(r), Catch::Contains("Not enough space"));
      CHECK(faultOf(r).find("No space left") == std::string::npos);
    }
  }
  CHECK(failed >= 1);
  CHECK(partialBases(kilnd.statePath() + "/_base").empty());
  CHECK(kilnd.api("GET", "/healthz", "", false).status == 200);
  CHECK(kiln::testing::findOrphans(kilnd, {{both[0].first, both[1].first}, ""}).empty());
  for (const auto& [id, image] : both) deleteAndWait(kilnd, id);
  for (const auto& [id, image] : both) kilnd.api("DELETE", "/v1/images/" + image);

  // The space the failed fetches took is back: an image that fits launches.
  const std::string ok = "d15cf000-0000-4000-8000-000000000002";
  CHECK(launchAndSettle(kilnd, ok, "guest")["state"] == "active");
  deleteAndWait(kilnd, ok);
  kilnd.stop();
}

TEST_CASE("the disk fills up before disk creation: a clear fault, no partial disk",
          "[integration][disk-full]") {
  // Full copies (no overlays): the root disk takes real space.
  KilndHarness kilnd("[DEFAULT]\nuse_cow_images = false\nreserved_host_disk_mb = 0\n");
  SmallFilesystem fs(kilnd.statePath(), 96);
  kilnd.addGuestImage("guest");
  kilnd.start();

  // The first launch caches the base; then the filesystem is filled to a few MiB.
  const std::string first = "d15cf000-0000-4000-8000-000000000011";
  REQUIRE(launchAndSettle(kilnd, first, "guest")["state"] == "active");
  deleteAndWait(kilnd, first);
  fs.fill(2ULL << 20);

  const std::string uuid = "d15cf000-0000-4000-8000-000000000012";
  json rec = launchAndSettle(kilnd, uuid, "guest");
  INFO(rec.dump(2) << "\n" << kilnd.logText());
  CHECK(rec["state"] == "error");
  std::cout << "fault: " << faultOf(rec) << "\n";
  // The copy takes its space before qemu-img writes a byte: refused at once, not by ENOSPC.
  CHECK_THAT(faultOf(rec), Catch::Contains("Not enough space in '" + kilnd.statePath() +
                                           "' for the root disk of instance '" + uuid + "'"));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
  CHECK(partialBases(kilnd.statePath() + "/_base").empty());
  CHECK(kilnd.api("GET", "/healthz", "", false).status == 200);
  CHECK(kiln::testing::findOrphans(kilnd, {{uuid}, ""}).empty());
  deleteAndWait(kilnd, uuid);

  fs.unfill();
  const std::string ok = "d15cf000-0000-4000-8000-000000000013";
  CHECK(launchAndSettle(kilnd, ok, "guest")["state"] == "active");
  deleteAndWait(kilnd, ok);
  kilnd.stop();
}

TEST_CASE("reserved_host_disk_mb is never given to an image or a disk",
          "[integration][disk-full]") {
  KilndHarness kilnd("[DEFAULT]\nreserved_host_disk_mb = 64\n");
  SmallFilesystem fs(kilnd.statePath(), 128);
  const std::uint64_t free = fs.freeBytes();
  INFO("free " << (free >> 20) << " MiB");
  // Fits the filesystem, not the filesystem less the host's 64 MiB.
  const std::uint64_t too_big = ((free - (64ULL << 20)) + (4ULL << 20)) & ~((1ULL << 20) - 1);
  REQUIRE(too_big < free);
  kiln::testing::addLocalImage(kilnd.imagesDir(), "too-big", randomBytes(too_big), "raw");
  kiln::testing::addLocalImage(kilnd.imagesDir(), "small", randomBytes(8ULL << 20), "raw");
  kilnd.start();

  const std::string refused = "d15cf000-0000-4000-8000-000000000021";
  json rec = launchAndSettle(kilnd, refused, "too-big");
  INFO(rec.dump(2));
  CHECK(rec["state"] == "error");
  CHECK_THAT(faultOf(rec), Catch::Contains("64 MiB are reserved for the host"));
  CHECK(partialBases(kilnd.statePath() + "/_base").empty());
  CHECK(fs.freeBytes() >= free - (1ULL << 20));  // nothing was written
  deleteAndWait(kilnd, refused);

  const std::string fits = "d15cf000-0000-4000-8000-000000000022";
  CHECK(launchAndSettle(kilnd, fits, "small")["state"] == "active");
  deleteAndWait(kilnd, fits);
  kilnd.stop();
}
