#include <catch2/catch.hpp>

#include <filesystem>

#include "agent/state/instance_store.h"
#include "local_images.h"
#include "temp_dir.h"

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
