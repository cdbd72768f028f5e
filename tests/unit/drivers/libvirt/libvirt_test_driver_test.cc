// LibvirtDriver against libvirt's in-process fake hypervisor (test:///default): the real libvirt
// library, handles, events and error paths, without a daemon.
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "drivers/libvirt/libvirt_driver.h"

using kiln::drivers::InstanceSpec;
using kiln::drivers::PowerState;
using kiln::drivers::libvirt::LibvirtDriver;
using kiln::drivers::libvirt::LibvirtDriverOptions;

namespace {
LibvirtDriverOptions testOptions() {
  LibvirtDriverOptions o;
  o.connection.uri = "test:///default";
  o.virt_type = "test";
  return o;
}
InstanceSpec spec(const std::string& uuid) {
  InstanceSpec s;
  s.uuid = uuid;
  // Not a one-character name: assigning one to a std::string draws a false -Wrestrict from
  // GCC 12 at -O3 (GCC bug 105329).
  s.display_name = "test";
  s.memory_mb = 64;
  kiln::drivers::DiskSpec disk;
  disk.device = "vda";
  disk.path = "/nonexistent/disk";
  disk.format = "qcow2";
  s.disks.push_back(disk);
  return s;
}
}  // namespace

TEST_CASE("spawn, state, list and destroy on the test driver", "[libvirt-test]") {
  // Declared before the driver: the driver's event thread may use them until it stops.
  std::mutex m;
  std::condition_variable cv;
  std::vector<kiln::drivers::DomainEvent> events;
  LibvirtDriver driver(testOptions());
  REQUIRE(driver.start().ok());
  REQUIRE(driver.connected());
  const std::string uuid = "11111111-2222-4333-8444-555555555555";
  kiln::SystemClock clock;
  kiln::Timeline timeline(clock);
  driver.setEventSink([&](const kiln::drivers::DomainEvent& e) {
    std::lock_guard lock(m);
    events.push_back(e);
    cv.notify_all();
  });

  REQUIRE(driver.spawn(spec(uuid), timeline).ok());
  auto steps = timeline.steps();
  REQUIRE(steps.size() == 2);
  CHECK(steps[0].name == "domain.define");
  CHECK(steps[1].name == "domain.start");

  auto state = driver.powerState(uuid);
  REQUIRE(state.ok());
  REQUIRE(state->has_value());
  CHECK(**state == PowerState::kRunning);

  auto managed = driver.listManaged();
  REQUIRE(managed.ok());
  // The test driver's own "test" domain is not ours and must not be listed.
  REQUIRE(managed->size() == 1);
  CHECK((*managed)[0].uuid == uuid);

  {
    std::unique_lock lock(m);
    cv.wait_for(lock, std::chrono::seconds(5), [&] { return !events.empty(); });
    REQUIRE_FALSE(events.empty());
    CHECK(events.back().uuid == uuid);
  }

  auto destroyed = driver.destroy(uuid);
  INFO((destroyed.ok() ? "" : destroyed.error().message));
  REQUIRE(destroyed.ok());
  state = driver.powerState(uuid);
  REQUIRE(state.ok());
  CHECK_FALSE(state->has_value());
  // Destroy is idempotent.
  REQUIRE(driver.destroy(uuid).ok());
  driver.stop();
}

TEST_CASE("a domain that fails to define leaves nothing behind", "[libvirt-test]") {
  LibvirtDriver driver(testOptions());
  REQUIRE(driver.start().ok());
  kiln::SystemClock clock;
  kiln::Timeline timeline(clock);
  auto bad = spec("not-a-uuid");
  auto r = driver.spawn(bad, timeline);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("Defining domain") != std::string::npos);
  auto managed = driver.listManaged();
  REQUIRE(managed.ok());
  CHECK(managed->empty());
}

TEST_CASE("an unreachable libvirt is reported as unavailable", "[libvirt-test]") {
  LibvirtDriverOptions o = testOptions();
  o.connection.uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
  LibvirtDriver driver(o);
  auto started = driver.start();
  CHECK_FALSE(started.ok());
  CHECK_FALSE(driver.connected());
  auto state = driver.powerState("11111111-2222-4333-8444-555555555555");
  REQUIRE_FALSE(state.ok());
  CHECK(state.error().code == kiln::ErrorCode::kUnavailable);
  driver.stop();
}
