// kilnd with a real Keystone (scripts/start-keystone.sh): callers' tokens are validated by
// Keystone, their roles and project come from it, and the policy judges with them.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/integration/kilnd_harness.h"

using kiln::testing::KilndHarness;
using nlohmann::json;

namespace {

const std::string kShippedPolicy = std::string(KILN_SOURCE_DIR) + "/config/policy.yaml";

json keystoneFixture() {
  std::ifstream in(std::string(KILN_KEYSTONE_DIR) + "/fixture.json");
  REQUIRE(in);
  return json::parse(in);
}

std::string xAuth(const std::string& token) { return "X-Auth-Token: " + token + "\r\n"; }

// kilnd's [keystone] section for the fixture, with kiln's service user, and `extra` options.
std::string keystoneConfig(const json& ks, const std::string& extra) {
  return "[api]\npolicy_file = " + kShippedPolicy +
         "\n[keystone]\nauth_url = " + ks["url"].get<std::string>() +
         "/v3\nusername = kiln\npassword = " + ks["users"]["kiln"]["password"].get<std::string>() +
         "\nproject_name = service\ncache_seconds = 30\n" + extra;
}

}  // namespace

TEST_CASE("keystone: real tokens, their roles and projects decide what kilnd allows",
          "[keystone]") {
  const json ks = keystoneFixture();
  const json& users = ks["users"];
  // sched-a's scheduler role counts only because its project is the admin project here; the
  // next test shows what scope does.
  KilndHarness kilnd(keystoneConfig(ks, "admin_project_name = project-a\n"));
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string scheduler = users["sched-a"]["token"];
  const std::string reader_a = users["reader-a"]["token"];
  const std::string reader_b = users["reader-b"]["token"];
  const std::string project_a = ks["projects"]["project-a"];

  // kiln's own token file means nothing now, and a made-up token is refused by Keystone.
  CHECK(kilnd.api("GET", "/v1/flavors").status == 401);
  CHECK(kilnd.api("GET", "/v1/flavors", "", false, xAuth("gAAAAABnot-a-real-token")).status == 401);
  // Bearer works like X-Auth-Token.
  CHECK(kilnd.api("GET", "/v1/flavors", "", false, "Authorization: Bearer " + reader_a + "\r\n")
            .status == 200);
  CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(reader_a)).status == 403);
  CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(scheduler)).status == 200);

  // The scheduler of project-a launches; the instance belongs to its token's project.
  const std::string uuid = "7e1f3c2a-0b9d-4c6e-8a5f-2d4b6c8e0a13";
  const std::string body = json{
      {"uuid", uuid},
      {"name", "keystone-it"},
      {"flavor", "m1.tiny"},
      {"image",
       {{"id", "guest"}}}}.dump();
  auto denied_launch = kilnd.api("POST", "/v1/instances", body, false, xAuth(reader_a));
  CHECK(denied_launch.status == 403);
  auto accepted = kilnd.api("POST", "/v1/instances", body, false, xAuth(scheduler));
  INFO(accepted.body);
  REQUIRE(accepted.status == 202);
  CHECK(accepted.json["project_id"] == project_a);
  kilnd.useToken(scheduler);  // waitForState() and waitGone() poll with the harness's token
  kilnd.waitForState(uuid, "active");

  const std::string path = "/v1/instances/" + uuid;
  CHECK(kilnd.api("GET", path, "", false, xAuth(reader_a)).status == 200);
  auto denied = kilnd.api("DELETE", path, "", false, xAuth(reader_a));
  CHECK(denied.status == 403);
  CHECK(denied.json["error"]["message"] ==
        "Policy does not allow compute:instances:delete to be performed.");
  CHECK(kilnd.api("GET", path, "", false, xAuth(reader_b)).status == 404);
  auto list_b = kilnd.api("GET", "/v1/instances", "", false, xAuth(reader_b));
  REQUIRE(list_b.status == 200);
  CHECK(list_b.json["instances"].empty());

  REQUIRE(kilnd.api("DELETE", path, "", false, xAuth(scheduler)).status == 202);
  CHECK(kilnd.waitGone(uuid));
  // No token, no password in kilnd's log.
  const std::string log = kilnd.logText();
  CHECK(log.find(scheduler) == std::string::npos);
  CHECK(log.find(users["kiln"]["password"].get<std::string>()) == std::string::npos);
}

TEST_CASE("keystone: an unreachable Keystone is 503, not 401", "[policy]") {
  // Port 9 (discard) on loopback: nothing listens there.
  KilndHarness kilnd(
      "[keystone]\nauth_url = http://127.0.0.1:9/v3\nusername = kiln\npassword = x\n"
      "project_name = service\ntimeout = 2\n");
  kilnd.start();
  auto r = kilnd.api("GET", "/v1/flavors", "", false, xAuth("gAAAAABsome-caller-token"));
  CHECK(r.status == 503);
  CHECK(kilnd.api("GET", "/healthz", "", false).status == 200);
}
