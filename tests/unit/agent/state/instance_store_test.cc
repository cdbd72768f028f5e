#include <catch2/catch.hpp>

#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "agent/state/instance_store.h"
#include "tests/support/local_images.h"
#include "tests/support/temp_dir.h"

using kiln::state::InstanceRecord;
using kiln::state::InstanceState;
using kiln::state::InstanceStore;

namespace {
InstanceRecord sample(const std::string& uuid) {
  InstanceRecord r;
  r.uuid = uuid;
  r.name = "n<&>\"'";
  r.flavor.name = "m1.tiny";
  r.flavor.root_gb = 1;
  r.image_id = "img";
  r.image_properties = {{"hw_firmware_type", "uefi"}};
  r.request_fingerprint = "{}";
  r.disks.push_back({"vda", "/x/disk", "qcow2", 1 << 30, "/b/base", "raw"});
  r.timeline.push_back({"image.fetch", 12, 12.3, true});
  r.created_at = r.updated_at = "2026-01-01T00:00:00.000Z";
  return r;
}
}  // namespace

TEST_CASE("records survive a reopen unchanged", "[store]") {
  kiln::testing::TempDir dir;
  std::string path = dir.path() + "/kiln.db";
  {
    auto store = InstanceStore::open(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->insertNew(sample("a")).ok());
    auto rec = sample("b");
    rec.state = InstanceState::kError;
    rec.fault = "it broke";
    REQUIRE((*store)->insertNew(rec).ok());
  }
  auto store = InstanceStore::open(path);
  REQUIRE(store.ok());
  auto all = (*store)->loadAll();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK(kiln::state::toJson((*all)[0]) == kiln::state::toJson(sample("a")));
  CHECK((*all)[1].state == InstanceState::kError);
  CHECK((*all)[1].fault == "it broke");
}

TEST_CASE("insertNew refuses a duplicate, put replaces, remove deletes", "[store]") {
  kiln::testing::TempDir dir;
  auto store = InstanceStore::open(dir.path() + "/kiln.db");
  REQUIRE(store.ok());
  REQUIRE((*store)->insertNew(sample("a")).ok());
  auto dup = (*store)->insertNew(sample("a"));
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.error().code == kiln::ErrorCode::kConflict);
  auto changed = sample("a");
  changed.state = InstanceState::kActive;
  REQUIRE((*store)->put(changed).ok());
  auto got = (*store)->get("a");
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->state == InstanceState::kActive);
  REQUIRE((*store)->remove("a").ok());
  got = (*store)->get("a");
  REQUIRE(got.ok());
  CHECK_FALSE(got->has_value());
}

TEST_CASE("the database runs in WAL mode", "[store]") {
  kiln::testing::TempDir dir;
  auto store = InstanceStore::open(dir.path() + "/kiln.db");
  REQUIRE(store.ok());
  REQUIRE((*store)->insertNew(sample("a")).ok());
  CHECK(std::filesystem::exists(dir.path() + "/kiln.db-wal"));
}

TEST_CASE("a value erased from a record is gone from the database files", "[store]") {
  kiln::testing::TempDir dir;
  auto store = InstanceStore::open(dir.path() + "/kiln.db");
  REQUIRE(store.ok());
  auto rec = sample("a");
  kiln::state::DiskRecord disk;
  disk.device = "vdb";
  disk.path = "/x/disk.local";
  disk.format = "qcow2";
  disk.encryption_secret_uuid = "5a1c0c4e-3f0e-4d1b-8d2e-0f6f0c2b9a11";
  disk.sealed_key = "SEALED-KEY-THAT-MUST-NOT-LINGER";
  rec.disks.push_back(disk);
  for (int i = 0; i < 5; ++i) REQUIRE((*store)->put(rec).ok());
  auto files = [&] {
    return kiln::testing::readAll(dir.path() + "/kiln.db") +
           kiln::testing::readAll(dir.path() + "/kiln.db-wal");
  };
  REQUIRE(files().find(disk.sealed_key) != std::string::npos);
  rec.disks[1].sealed_key.clear();
  REQUIRE((*store)->put(rec).ok());
  // Without the checkpoint the log still holds the older pages.
  CHECK(files().find(disk.sealed_key) != std::string::npos);
  REQUIRE((*store)->forgetHistory().ok());
  CHECK(files().find(disk.sealed_key) == std::string::npos);
  auto got = (*store)->get("a");
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->disks[1].encryption_secret_uuid == disk.encryption_secret_uuid);
  CHECK((*got)->disks[1].sealed_key.empty());
}

namespace {
mode_t modeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}
}  // namespace

TEST_CASE("the store knows a new database from one that holds records", "[store]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/kiln.db";
  CHECK_FALSE(InstanceStore::exists(path).value());
  std::ofstream(path).close();  // an empty file is what SQLite would take for a new database
  CHECK_FALSE(InstanceStore::exists(path).value());
  std::filesystem::remove(path);
  REQUIRE(InstanceStore::open(path).ok());
  CHECK(InstanceStore::exists(path).value());
}

TEST_CASE("a database that is not one, or is damaged, stops the store from opening", "[store]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/kiln.db";
  {
    std::ofstream out(path);
    out << std::string(8192, 'x');
  }
  auto garbage = InstanceStore::open(path);
  REQUIRE_FALSE(garbage.ok());
  CHECK(garbage.error().message.find("is corrupt") != std::string::npos);
  CHECK(garbage.error().message.find(path) != std::string::npos);
  CHECK_FALSE(InstanceStore::exists(path).ok());

  // A real database with a damaged page: the integrity check finds it.
  std::filesystem::remove(path);
  {
    auto store = InstanceStore::open(path);
    REQUIRE(store.ok());
    for (int i = 0; i < 200; ++i) {
      REQUIRE((*store)->put(sample(fmt::format("00000000-0000-4000-8000-{:012}", i))).ok());
    }
    REQUIRE((*store)->forgetHistory().ok());
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    // The headers of b-tree pages (the first page is the file's header, left intact).
    for (int page = 2; page < 12; ++page) {
      f.seekp(4096 * page);
      f << std::string(16, '\x5a');
    }
  }
  auto damaged = InstanceStore::open(path);
  REQUIRE_FALSE(damaged.ok());
  CHECK(damaged.error().message.find("is corrupt") != std::string::npos);
  CHECK(damaged.error().message.find("Restore it from a backup") != std::string::npos);
}

TEST_CASE("the database and its log are private from the first byte", "[store]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/kiln.db";
  mode_t old = ::umask(022);
  auto store = InstanceStore::open(path);
  ::umask(old);
  REQUIRE(store.ok());
  REQUIRE((*store)->put(sample("a")).ok());
  for (const char* suffix : {"", "-wal", "-shm"}) {
    INFO(suffix);
    CHECK(modeOf(path + suffix) == 0600);
  }
}

TEST_CASE("a backup is a consistent, private copy that opens with the same records", "[store]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/kiln.db";
  const std::string copy = dir.path() + "/backup.db";
  auto store = InstanceStore::open(path);
  REQUIRE(store.ok());
  REQUIRE((*store)->put(sample("a")).ok());
  REQUIRE((*store)->put(sample("b")).ok());
  REQUIRE(InstanceStore::backup(path, copy).ok());
  REQUIRE((*store)->put(sample("c")).ok());  // after the copy: not in it
  CHECK(modeOf(copy) == 0600);
  CHECK_FALSE(std::filesystem::exists(copy + "-wal"));
  auto restored = InstanceStore::open(copy);
  REQUIRE(restored.ok());
  auto records = (*restored)->loadAll();
  REQUIRE(records.ok());
  REQUIRE(records->size() == 2);
  CHECK((*records)[0].uuid == "a");
  CHECK((*records)[1].name == sample("b").name);
  // A backup never overwrites a file.
  auto again = InstanceStore::backup(path, copy);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().message.find(copy) != std::string::npos);
  CHECK_FALSE(InstanceStore::backup(dir.path() + "/none.db", dir.path() + "/x.db").ok());
}
