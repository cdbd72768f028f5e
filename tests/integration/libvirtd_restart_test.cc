// kilnd survives a restart of libvirtd: it reconnects by itself and keeps its instances.
#include <catch2/catch.hpp>
#include <thread>

#include "common/command_runner.h"
#include "tests/integration/kilnd_harness.h"
#include "tests/integration/libvirtd_control.h"

using kiln::testing::KilndHarness;

TEST_CASE("kilnd reconnects after libvirtd restarts", "[integration][libvirtd-restart]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "6f1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f10";
  auto r = kilnd.api(
      "POST", "/v1/instances",
      nlohmann::json{
          {"uuid", uuid}, {"name", "r"}, {"flavor", "m1.tiny"}, {"image", {{"id", "guest"}}}}
          .dump());
  REQUIRE(r.status == 202);
  kilnd.waitForState(uuid, "active");

  kiln::testing::stopLibvirtd();
  // healthz turns 503 while libvirtd is away...
  bool saw_down = false;
  for (int i = 0; i < 100 && !saw_down; ++i) {
    saw_down = kilnd.api("GET", "/healthz", "", false).status == 503;
    if (!saw_down) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(saw_down);
  kiln::testing::startLibvirtd();
  // ...and 200 again once kilnd has reconnected on its own.
  bool back = false;
  for (int i = 0; i < 300 && !back; ++i) {
    back = kilnd.api("GET", "/healthz", "", false).status == 200;
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  REQUIRE(back);
  auto rec = kilnd.waitForState(uuid, "active");
  CHECK(rec["power_state"] == "running");
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}
