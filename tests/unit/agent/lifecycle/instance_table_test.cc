// The instance table: one job per instance with a bounded wait, update-then-save, and a removed
// instance that nothing writes back.
#include "agent/lifecycle/instance_table.h"

#include <catch2/catch.hpp>
#include <thread>

#include "tests/support/manual_clock.h"
#include "tests/support/temp_dir.h"

namespace kiln::lifecycle {
namespace {

using state::InstanceRecord;
using state::InstanceState;

struct Table {
  testing::TempDir dir;
  testing::ManualClock clock;
  std::unique_ptr<state::InstanceStore> store =
      state::InstanceStore::open(dir.path() + "/db").value();
  InstanceTable table{*store, clock};

  EntryPtr add(const std::string& uuid) {
    InstanceRecord rec;
    rec.uuid = uuid;
    rec.name = "vm";
    rec.request_fingerprint = "fp";
    auto inserted = table.insertNew(rec);
    REQUIRE(inserted.ok());
    REQUIRE(inserted->created);
    return inserted->entry;
  }
  std::optional<InstanceRecord> stored(const std::string& uuid) { return store->get(uuid).value(); }
};

TEST_CASE("table: a job that cannot begin in time says who holds the instance since when",
          "[table]") {
  Table t;
  auto entry = t.add("u1");
  auto launch = t.table.beginJob(entry, JobKind::kLaunch, std::chrono::milliseconds(0));
  REQUIRE(launch.ok());
  t.clock.advance(std::chrono::seconds(5));
  auto other = t.table.beginJob(entry, JobKind::kDelete, std::chrono::milliseconds(20));
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().code == ErrorCode::kConflict);
  CHECK(other.error().message ==
        "Instance 'u1' is busy with launch since 2023-11-14T22:13:20.000Z");
  CHECK_FALSE(t.table.tryBeginJob(entry, JobKind::kReconcile));
}

TEST_CASE("table: a waiting job begins as soon as the running one ends", "[table]") {
  Table t;
  auto entry = t.add("u1");
  std::optional<InstanceTable::Job> first;
  first.emplace(t.table.beginJob(entry, JobKind::kReboot, std::chrono::milliseconds(0)).value());
  std::thread ender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    first.reset();
  });
  auto second = t.table.beginJob(entry, JobKind::kDelete, std::chrono::seconds(30));
  ender.join();
  CHECK(second.ok());
}

TEST_CASE("table: jobs of different instances do not wait for each other", "[table]") {
  Table t;
  auto a = t.add("a");
  auto b = t.add("b");
  auto ja = t.table.beginJob(a, JobKind::kLaunch, std::chrono::milliseconds(0));
  auto jb = t.table.beginJob(b, JobKind::kLaunch, std::chrono::milliseconds(0));
  CHECK(ja.ok());
  CHECK(jb.ok());
}

TEST_CASE("table: update writes before the record changes, and a failed change writes nothing",
          "[table]") {
  Table t;
  auto entry = t.add("u1");
  auto refused = t.table.update(*entry, [](InstanceRecord& rec) -> Result<void> {
    rec.name = "changed";
    return Error::conflict("no");
  });
  CHECK_FALSE(refused.ok());
  CHECK(t.table.read(*entry).name == "vm");
  CHECK(t.stored("u1")->name == "vm");
  auto written = t.table.update(*entry, [](InstanceRecord& rec) -> Result<void> {
    rec.state = InstanceState::kActive;
    return success();
  });
  REQUIRE(written.ok());
  CHECK(t.stored("u1")->state == InstanceState::kActive);
  CHECK(t.table.read(*entry).state == InstanceState::kActive);
}

TEST_CASE("table: a removed instance is never written back", "[table]") {
  Table t;
  auto entry = t.add("u1");
  REQUIRE(t.table.remove(*entry).ok());
  CHECK_FALSE(t.table.find("u1"));
  t.table.settle(*entry, [](InstanceRecord& rec) { rec.name = "ghost"; });
  CHECK_FALSE(t.stored("u1"));
  auto refused = t.table.update(*entry, [](InstanceRecord&) -> Result<void> { return success(); });
  CHECK(refused.error().code == ErrorCode::kNotFound);
}

TEST_CASE("table: a second insert of a uuid returns the instance already there", "[table]") {
  Table t;
  auto first = t.add("u1");
  InstanceRecord again;
  again.uuid = "u1";
  again.name = "other";
  auto second = t.table.insertNew(again);
  REQUIRE(second.ok());
  CHECK_FALSE(second->created);
  CHECK(second->entry == first);
  CHECK(t.table.read(*first).name == "vm");
}

}  // namespace
TEST_CASE("table: waitFor returns when the record settles, or when the instance goes", "[table]") {
  Table t;
  auto entry = t.add("u1");
  auto active = [](const InstanceRecord& r) { return r.state == InstanceState::kActive; };
  std::thread settler([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    t.table.settle(*entry, [](InstanceRecord& r) { r.state = InstanceState::kActive; });
  });
  auto settled = t.table.waitFor(*entry, active, std::chrono::seconds(30));
  settler.join();
  REQUIRE(settled.ok());
  REQUIRE(settled->has_value());
  CHECK((*settled)->state == InstanceState::kActive);

  auto never = [](const InstanceRecord& r) { return r.state == InstanceState::kError; };
  auto timed_out = t.table.waitFor(*entry, never, std::chrono::milliseconds(10));
  REQUIRE_FALSE(timed_out.ok());
  CHECK(timed_out.error().message == "Instance 'u1' did not settle within 0 s");

  std::thread remover([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(t.table.remove(*entry).ok());
  });
  auto gone = t.table.waitFor(*entry, never, std::chrono::seconds(30));
  remover.join();
  REQUIRE(gone.ok());
  CHECK_FALSE(gone->has_value());
}

TEST_CASE("table: stopWaiting ends the waits under way and those to come at once", "[table]") {
  Table t;
  auto entry = t.add("u1");
  auto never = [](const InstanceRecord& r) { return r.state == InstanceState::kError; };
  std::optional<Result<std::optional<InstanceRecord>>> waited;
  std::thread waiter([&] { waited = t.table.waitFor(*entry, never, std::chrono::minutes(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto stopped_at = std::chrono::steady_clock::now();
  t.table.stopWaiting();
  waiter.join();
  CHECK(std::chrono::steady_clock::now() - stopped_at < std::chrono::seconds(5));
  REQUIRE(waited.has_value());
  REQUIRE_FALSE(waited->ok());
  CHECK(waited->error().code == ErrorCode::kUnavailable);
  CHECK(waited->error().message == "kilnd is stopping: no longer waiting for instance 'u1'");
  CHECK(t.table.stoppedWaiting());
  CHECK_FALSE(t.table.waitFor(*entry, never, std::chrono::minutes(30)).ok());
  // What already holds is still returned: the caller learns the outcome it waited for.
  auto done = t.table.waitFor(
      *entry, [](const InstanceRecord&) { return true; }, std::chrono::minutes(30));
  REQUIRE(done.ok());
  CHECK(done->has_value());
}

}  // namespace kiln::lifecycle
