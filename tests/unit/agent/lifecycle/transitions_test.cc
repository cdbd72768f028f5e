// The state machine's table: what may start in which state, and the 409 that says why not.
#include "agent/lifecycle/transitions.h"

#include <catch2/catch.hpp>

namespace kiln::lifecycle {
namespace {

using state::InstanceRecord;
using state::InstanceState;
using state::TaskState;

InstanceRecord record(InstanceState s, TaskState t = TaskState::kNone, bool disks = true) {
  InstanceRecord rec;
  rec.uuid = std::string("u");  // not = "u": GCC 12 reports a false -Wrestrict (bug 105329)
  rec.state = s;
  rec.task_state = t;
  if (disks) rec.disks.push_back({"vda", "/x/disk", "qcow2", 1, "", ""});
  return rec;
}

TEST_CASE("transitions: each operation starts only in the states nova allows it", "[transitions]") {
  struct Case {
    Operation op;
    std::vector<InstanceState> allowed;
  };
  const std::vector<Case> cases = {
      {Operation::kSoftReboot, {InstanceState::kActive}},
      {Operation::kHardReboot,
       {InstanceState::kActive, InstanceState::kStopped, InstanceState::kError}},
      {Operation::kStop, {InstanceState::kActive}},
      {Operation::kStart, {InstanceState::kStopped}},
      {Operation::kSnapshot, {InstanceState::kActive, InstanceState::kStopped}},
      {Operation::kAttachVolume, {InstanceState::kActive, InstanceState::kStopped}},
      {Operation::kDetachVolume, {InstanceState::kActive, InstanceState::kStopped}},
      {Operation::kDelete,
       {InstanceState::kBuilding, InstanceState::kActive, InstanceState::kStopped,
        InstanceState::kError, InstanceState::kDeleting}},
  };
  for (const auto& c : cases) {
    for (auto s : {InstanceState::kBuilding, InstanceState::kActive, InstanceState::kStopped,
                   InstanceState::kError, InstanceState::kDeleting}) {
      INFO(operationName(c.op) << " in " << state::stateName(s));
      bool allowed = std::find(c.allowed.begin(), c.allowed.end(), s) != c.allowed.end();
      auto r = admit(c.op, record(s));
      CHECK(r.ok() == allowed);
      if (!r) CHECK(r.error().code == ErrorCode::kConflict);
    }
  }
}

TEST_CASE("transitions: a running task excludes everything but a delete", "[transitions]") {
  auto busy = record(InstanceState::kActive, TaskState::kImageUploading);
  for (auto op : {Operation::kSoftReboot, Operation::kHardReboot, Operation::kStop,
                  Operation::kSnapshot, Operation::kAttachVolume, Operation::kDetachVolume}) {
    auto r = admit(op, busy);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message.find("(image_uploading)") != std::string::npos);
  }
  CHECK(admit(Operation::kDelete, busy).ok());
}

TEST_CASE("transitions: the 409 names the state, the task and what the operation needs",
          "[transitions]") {
  auto r = admit(Operation::kSoftReboot, record(InstanceState::kStopped));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message ==
        "Instance 'u' is stopped; a soft reboot needs an idle active instance");
  auto busy = admit(Operation::kStart, record(InstanceState::kStopped, TaskState::kPoweringOn));
  REQUIRE_FALSE(busy.ok());
  CHECK(busy.error().message ==
        "Instance 'u' is stopped (powering_on); a start needs an idle stopped instance");
}

TEST_CASE("transitions: a hard reboot recovers an instance in error only while it has disks",
          "[transitions]") {
  CHECK(admit(Operation::kHardReboot, record(InstanceState::kError)).ok());
  CHECK_FALSE(
      admit(Operation::kHardReboot, record(InstanceState::kError, TaskState::kNone, false)).ok());
}

TEST_CASE("transitions: tasks and outcomes", "[transitions]") {
  CHECK(taskOf(Operation::kStop) == TaskState::kPoweringOff);
  CHECK(taskOf(Operation::kHardReboot) == TaskState::kRebootingHard);
  CHECK(taskOf(Operation::kDelete) == TaskState::kDeleting);
  CHECK(stateAfter(Operation::kStop) == InstanceState::kStopped);
  CHECK(stateAfter(Operation::kStart) == InstanceState::kActive);
  CHECK(stateAfter(Operation::kSnapshot) == std::nullopt);
}

TEST_CASE("task states round-trip through their names", "[transitions]") {
  for (auto t :
       {TaskState::kNone, TaskState::kSpawning, TaskState::kDeleting, TaskState::kRebooting,
        TaskState::kRebootingHard, TaskState::kPoweringOff, TaskState::kPoweringOn,
        TaskState::kImageUploading, TaskState::kAttachingVolume, TaskState::kDetachingVolume}) {
    CHECK(state::taskStateFromName(state::taskStateName(t)) == t);
  }
  CHECK(state::taskStateName(TaskState::kNone).empty());
  CHECK_FALSE(state::taskStateFromName("resizing"));
}

}  // namespace
}  // namespace kiln::lifecycle
