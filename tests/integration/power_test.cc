// Instance operations observed from the guest: stop and start, soft and hard reboot, a guest
// that powers itself off, and a QEMU process that dies.
#include <signal.h>

#include <catch2/catch.hpp>
#include <thread>

#include "tests/integration/kilnd_harness.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using nlohmann::json;

namespace {

int countOf(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

json idle(KilndHarness& kilnd, const std::string& uuid) {
  json rec;
  for (int i = 0; i < 600; ++i) {
    rec = kilnd.api("GET", "/v1/instances/" + uuid).json;
    if (rec["task_state"].is_null()) return rec;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL("instance stayed busy: " << rec.dump());
  return rec;
}

std::string consoleNow(KilndHarness& kilnd, const std::string& uuid) {
  return kilnd.api("GET", "/v1/instances/" + uuid + "/console").body;
}

// Waits until the console holds `count` occurrences of KILN-READY (one per boot).
void waitBoots(KilndHarness& kilnd, const std::string& uuid, int count) {
  for (int i = 0; i < 600; ++i) {
    if (countOf(consoleNow(kilnd, uuid), "KILN-READY") >= count) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("the guest did not boot " << count << " times:\n" << consoleNow(kilnd, uuid));
}

json action(KilndHarness& kilnd, const std::string& uuid, const json& body, int expected = 202) {
  auto r = kilnd.api("POST", "/v1/instances/" + uuid + "/action", body.dump());
  INFO(r.body);
  CHECK(r.status == expected);
  return r.json;
}

}  // namespace

TEST_CASE("stop, start, soft and hard reboot, seen from the guest console", "[integration]") {
  KilndHarness kilnd(
      "[DEFAULT]\nshutdown_timeout = 20\n[libvirt]\nwait_soft_reboot_seconds = 20\n");
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "9a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f01";
  REQUIRE(kilnd
              .api("POST", "/v1/instances",
                   json{{"uuid", uuid},
                        {"name", "p"},
                        {"flavor", "test.small"},
                        {"image", {{"id", "guest"}}}}
                       .dump())
              .status == 202);
  kilnd.waitForState(uuid, "active");
  waitBoots(kilnd, uuid, 1);

  action(kilnd, uuid, {{"start", json::object()}}, 409);
  json stopping = action(kilnd, uuid, {{"stop", json::object()}});
  CHECK(stopping["task_state"] == "powering_off");
  json stopped = idle(kilnd, uuid);
  CHECK(stopped["state"] == "stopped");
  CHECK(stopped["power_state"] == "shutdown");
  // A clean stop: the guest saw the ACPI power button.
  CHECK(consoleNow(kilnd, uuid).find("KILN-POWER-BUTTON") != std::string::npos);
  action(kilnd, uuid, {{"reboot", {{"type", "SOFT"}}}}, 409);

  action(kilnd, uuid, {{"start", json::object()}});
  CHECK(idle(kilnd, uuid)["state"] == "active");
  waitBoots(kilnd, uuid, 2);

  action(kilnd, uuid, {{"reboot", {{"type", "SOFT"}}}});
  CHECK(idle(kilnd, uuid)["state"] == "active");
  waitBoots(kilnd, uuid, 3);
  CHECK(countOf(consoleNow(kilnd, uuid), "KILN-POWER-BUTTON") == 2);

  action(kilnd, uuid, {{"reboot", {{"type", "HARD"}}}});
  CHECK(idle(kilnd, uuid)["state"] == "active");
  waitBoots(kilnd, uuid, 4);
  // HARD did not ask the guest.
  CHECK(countOf(consoleNow(kilnd, uuid), "KILN-POWER-BUTTON") == 2);
  action(kilnd, uuid, {{"reboot", {{"type", "GENTLE"}}}}, 400);
  action(kilnd, uuid, {{"dance", json::object()}}, 400);

  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

TEST_CASE("a guest that powers itself off is stopped within two seconds, a dead QEMU is an error",
          "[integration]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string a = "9a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f02";
  const std::string b = "9a1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f03";
  for (const auto& uuid : {a, b}) {
    REQUIRE(kilnd
                .api("POST", "/v1/instances",
                     json{{"uuid", uuid},
                          {"name", "p"},
                          {"flavor", "test.small"},
                          {"image", {{"id", "guest"}}}}
                         .dump())
                .status == 202);
  }
  kilnd.waitForState(a, "active");
  kilnd.waitForState(b, "active");
  waitBoots(kilnd, a, 1);

  // The guest powers off by itself (its ACPI button handler, pressed from outside kiln).
  REQUIRE(kiln::testing::virsh({"shutdown", "kiln-" + a}));
  for (int i = 0; i < 300; ++i) {
    auto state = kiln::testing::virsh({"domstate", "kiln-" + a}).value_or("");
    if (state.find("shut off") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto off_at = std::chrono::steady_clock::now();
  json rec = kilnd.waitForState(a, "stopped", std::chrono::seconds(10));
  CHECK(std::chrono::steady_clock::now() - off_at < std::chrono::seconds(2));
  CHECK(rec["power_state"] == "shutdown");

  // QEMU killed: the instance is in error with a fault that says what happened.
  auto pid_text = kiln::testing::readAll("/run/libvirt/qemu/kiln-" + b + ".pid");
  REQUIRE_FALSE(pid_text.empty());
  REQUIRE(::kill(std::stoi(pid_text), SIGKILL) == 0);
  json failed = kilnd.waitForState(b, "error", std::chrono::seconds(10));
  CHECK(failed["fault"]["message"].get<std::string>().find("QEMU process ended unexpectedly") !=
        std::string::npos);
  // A HARD reboot brings it back.
  action(kilnd, b, {{"reboot", {{"type", "HARD"}}}});
  CHECK(idle(kilnd, b)["state"] == "active");

  for (const auto& uuid : {a, b}) {
    REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
    REQUIRE(kilnd.waitGone(uuid));
  }
}
