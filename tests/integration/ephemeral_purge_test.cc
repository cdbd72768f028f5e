// "The ephemeral storage, whether encrypted or not, is purged", proven from outside: kilnd's
// state_path is a small ext4 filesystem of the test's own on a loop device, the guest writes a
// unique mark on vdb (and vda), and after the delete the test reads the whole raw block device,
// free space and all, for the mark. The control case (ephemeral_clear = none) must find it, so
// the scan is known to be able to fail.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "common/command_runner.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/integration/libvirtd_control.h"
#include "tests/support/local_images.h"
#include "tests/support/temp_dir.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

constexpr std::uint64_t kFilesystemBytes = 192ULL << 20;

kiln::Result<kiln::CommandOutput> run(std::vector<std::string> argv) {
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  spec.timeout = std::chrono::seconds(60);
  return runner.run(spec);
}

std::string mustRun(std::vector<std::string> argv) {
  auto out = run(argv);
  REQUIRE(out.ok());
  INFO(argv[0] << ": " << out->stderr_text);
  REQUIRE(out->succeeded());
  return out->stdout_text;
}

// An ext4 filesystem on a loop device, mounted at `mountpoint` for the life of the object. The
// teardown runs even when the test fails: `before_unmount` (stop kilnd, remove its domains) first,
// then unmount, detach and delete the image.
class LoopFilesystem {
 public:
  LoopFilesystem(std::string mountpoint, std::uint64_t bytes)
      : mountpoint_(std::move(mountpoint)), image_(dir_.path() + "/fs.img") {
    try {
      mustRun({"truncate", "-s", std::to_string(bytes), image_});
      auto dev = mustRun({"losetup", "--find", "--show", image_});
      while (!dev.empty() && (dev.back() == '\n' || dev.back() == ' ')) dev.pop_back();
      device_ = dev;
      // No online discard: freed blocks keep their bytes unless kiln clears or trims them.
      mustRun({"mkfs.ext4", "-q", "-F", "-E", "nodiscard", device_});
      stdfs::create_directories(mountpoint_);
      mustRun({"mount", "-o", "nodiscard", device_, mountpoint_});
      mounted_ = true;
      ::chmod(mountpoint_.c_str(), 0711);
    } catch (...) {
      release();  // a failed REQUIRE must not leave a loop device behind either
      throw;
    }
  }
  ~LoopFilesystem() {
    if (before_unmount) before_unmount();
    release();
  }
  LoopFilesystem(const LoopFilesystem&) = delete;
  LoopFilesystem& operator=(const LoopFilesystem&) = delete;

  const std::string& device() const { return device_; }

  // Reads the whole device with O_DIRECT (past every cache, as someone who took the disk away
  // would) and says whether `needle` is anywhere on it.
  bool deviceHolds(const std::string& needle) const {
    int dirfd = ::open(mountpoint_.c_str(), O_RDONLY | O_DIRECTORY);
    if (dirfd >= 0) {
      ::syncfs(dirfd);
      ::close(dirfd);
    }
    int fd = ::open(device_.c_str(), O_RDONLY | O_DIRECT);
    REQUIRE(fd >= 0);
    constexpr std::size_t kChunk = 4 << 20;
    std::unique_ptr<char, decltype(&std::free)> buf(
        static_cast<char*>(std::aligned_alloc(4096, kChunk)), &std::free);
    REQUIRE(buf);
    std::string carry;  // the tail of the previous chunk, for a match across the boundary
    bool found = false;
    for (off_t at = 0;; at += kChunk) {
      ssize_t n = ::pread(fd, buf.get(), kChunk, at);
      REQUIRE(n >= 0);
      if (n == 0) break;
      std::string window = carry + std::string(buf.get(), static_cast<std::size_t>(n));
      if (window.find(needle) != std::string::npos) {
        found = true;
        break;
      }
      carry = window.substr(window.size() - std::min(window.size(), needle.size()));
    }
    ::close(fd);
    return found;
  }

  std::function<void()> before_unmount;

 private:
  void release() {
    if (mounted_ && ::umount(mountpoint_.c_str()) != 0) {
      // Something still holds a file open; never leave the mount behind.
      ::umount2(mountpoint_.c_str(), MNT_DETACH);
    }
    mounted_ = false;
    if (!device_.empty()) (void)run({"losetup", "-d", device_});
    device_.clear();
  }

  kiln::testing::TempDir dir_;
  std::string mountpoint_;
  std::string image_;
  std::string device_;
  bool mounted_ = false;
};

// The word after `tag` on the console ("KILN-EPH-WROTE <id>").
std::string consoleWord(const std::string& console, const std::string& tag) {
  auto at = console.find(tag + " ");
  if (at == std::string::npos) return "";
  std::istringstream words(console.substr(at + tag.size() + 1));
  std::string word;
  words >> word;
  return word;
}

// The record kilnd stores (the API never shows the sealed key).
json storedRecord(const std::string& db_path, const std::string& uuid) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT record FROM instances WHERE uuid = ?", -1, &stmt,
                             nullptr) == SQLITE_OK);
  sqlite3_bind_text(stmt, 1, uuid.c_str(), -1, SQLITE_TRANSIENT);
  json rec;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    rec = json::parse(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rec;
}

std::string fileOrEmpty(const std::string& path) {
  return stdfs::exists(path) ? kiln::testing::readAll(path) : std::string();
}

void destroyDomainsUnder(const std::string& path) {
  auto list = kiln::testing::virsh({"list", "--all", "--name"});
  if (!list) return;
  std::istringstream in(*list);
  std::string name;
  while (in >> name) {
    auto xml = kiln::testing::virsh({"dumpxml", name});
    if (xml && xml->find(path) != std::string::npos) {
      kiln::testing::virsh({"destroy", name});
      kiln::testing::virsh({"undefine", "--nvram", name});
    }
  }
}

struct PurgeCase {
  std::string clear;  // ephemeral_clear
  bool encrypted = false;
  const char* uuid;
};

void runPurgeCase(const PurgeCase& c) {
  // The filesystem is the test's own and small: no host reserve on it.
  std::string config =
      "[DEFAULT]\nreserved_host_disk_mb = 0\n[libvirt]\nephemeral_clear = " + c.clear + "\n";
  if (c.encrypted) config += "[ephemeral_storage_encryption]\nenabled = true\n";
  KilndHarness kilnd(config);
  LoopFilesystem fs(kilnd.statePath(), kFilesystemBytes);
  fs.before_unmount = [&] {
    kilnd.stop();
    destroyDomainsUnder(kilnd.statePath());
  };
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = c.uuid;
  auto accepted = kilnd.api(
      "POST", "/v1/instances",
      json{
          {"uuid", uuid}, {"name", "purge"}, {"flavor", "test.small"}, {"image", {{"id", "guest"}}}}
          .dump());
  REQUIRE(accepted.status == 202);
  json active = kilnd.waitForState(uuid, "active");
  std::string console = kilnd.waitForConsole(uuid, "KILN-READY");
  const std::string eph_id = consoleWord(console, "KILN-EPH-WROTE");
  const std::string root_id = consoleWord(console, "KILN-ROOT-WROTE");
  INFO(console);
  REQUIRE_FALSE(eph_id.empty());
  REQUIRE_FALSE(root_id.empty());
  // The marks as they are on the disks; the console only ever shows the ids.
  const std::string eph_mark = "KILN-EPH:" + eph_id;
  const std::string root_mark = "KILN-ROOT:" + root_id;
  REQUIRE(console.find(eph_mark) == std::string::npos);

  const std::string vdb_path = active["disks"][1]["path"].get<std::string>();
  std::string secret_uuid;
  std::string sealed_key;
  const std::string db = kilnd.statePath() + "/kiln.db";
  // vda's mark is on the device while the guest runs: the scan sees what the guest wrote.
  CHECK(fs.deviceHolds(root_mark));
  if (c.encrypted) {
    // vdb's mark never reaches the device in plaintext, even while the instance runs.
    CHECK_FALSE(fs.deviceHolds(eph_mark));
    secret_uuid = active["disks"][1]["encryption"]["secret_uuid"].get<std::string>();
    CHECK_FALSE(active["disks"][1]["encryption"].contains("sealed_key"));
    sealed_key = storedRecord(db, uuid)["disks"][1]["encryption"]["sealed_key"].get<std::string>();
    REQUIRE_FALSE(sealed_key.empty());
    auto secrets = kiln::testing::virsh({"secret-list"});
    REQUIRE(secrets);
    CHECK(secrets->find(secret_uuid) != std::string::npos);
    CHECK(secrets->find(vdb_path) != std::string::npos);

    // Stop, lose the secret with a libvirtd restart, start: kilnd defines it again from the
    // sealed key and the guest reads its mark back through the LUKS layer.
    REQUIRE(kilnd.api("POST", "/v1/instances/" + uuid + "/action", R"({"stop":{}})").status == 202);
    kilnd.waitForState(uuid, "stopped");
    kiln::testing::restartLibvirtd();
    bool back = false;
    for (int i = 0; i < 300 && !back; ++i) {
      back = kilnd.api("GET", "/healthz", "", false).status == 200;
      if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(back);
    REQUIRE(kilnd.api("POST", "/v1/instances/" + uuid + "/action", R"({"start":{}})").status ==
            202);
    kilnd.waitForState(uuid, "active");
    std::string again = kilnd.waitForConsole(uuid, "KILN-EPH-FOUND");
    CHECK(consoleWord(again, "KILN-EPH-FOUND") == eph_id);
    CHECK(kilnd.logText().find("Re-creating the key secret of disk '" + vdb_path + "'") !=
          std::string::npos);
    CHECK_FALSE(fs.deviceHolds(eph_mark));
  } else {
    CHECK(fs.deviceHolds(eph_mark));
  }

  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));

  const bool purged = c.clear != "none";
  if (c.encrypted) {
    CHECK_FALSE(fs.deviceHolds(eph_mark));
    auto secrets = kiln::testing::virsh({"secret-list"});
    REQUIRE(secrets);
    CHECK(secrets->find(secret_uuid) == std::string::npos);
    CHECK(secrets->find(vdb_path) == std::string::npos);
    // The sealed key is gone from the database and its log, not only from the row.
    CHECK(fileOrEmpty(db).find(sealed_key) == std::string::npos);
    CHECK(fileOrEmpty(db + "-wal").find(sealed_key) == std::string::npos);
  } else {
    CHECK(fs.deviceHolds(eph_mark) == !purged);
  }
  // vda's overlay is the tenant's too, and is cleared the same way.
  CHECK(fs.deviceHolds(root_mark) == !purged);
  INFO(kilnd.logText());
  if (purged) CHECK(kilnd.logText().find(c.clear + " cleared") != std::string::npos);
  // discard reached the device through FITRIM, not through a mount option.
  if (c.clear == "discard") {
    CHECK(kilnd.logText().find("the filesystem cannot trim") == std::string::npos);
  }
}

}  // namespace

TEST_CASE("ephemeral_clear=zero: no trace of the guest's marks on the raw device",
          "[integration][purge]") {
  runPurgeCase({"zero", false, "7e0c1a52-8f4b-4c1e-9a6d-2b3c4d5e6f01"});
}

TEST_CASE("ephemeral_clear=discard: the freed blocks are trimmed off the device",
          "[integration][purge]") {
  runPurgeCase({"discard", false, "7e0c1a52-8f4b-4c1e-9a6d-2b3c4d5e6f02"});
}

TEST_CASE("ephemeral_clear=none (control): the marks stay on the device after delete",
          "[integration][purge]") {
  runPurgeCase({"none", false, "7e0c1a52-8f4b-4c1e-9a6d-2b3c4d5e6f03"});
}

TEST_CASE("encrypted vdb: never plaintext on the device, key gone with the instance",
          "[integration][purge][encryption]") {
  // ephemeral_clear = none on purpose: the crypto-erase alone must keep the mark off the device.
  runPurgeCase({"none", true, "7e0c1a52-8f4b-4c1e-9a6d-2b3c4d5e6f04"});
}
