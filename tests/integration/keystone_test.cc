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

TEST_CASE("keystone: admin and scheduler count only on the admin project's or the system's tokens",
          "[keystone]") {
  const json ks = keystoneFixture();
  const json& users = ks["users"];
  const std::string cloud_admin = users["admin"]["token"];        // admin of project "admin"
  const std::string system_admin = ks["system_tokens"]["admin"];  // the same user, system all
  const std::string tenant_admin = users["admin-b"]["token"];     // admin of project-b
  const std::string scheduler_a = users["sched-a"]["token"];      // scheduler of project-a
  const std::string project_a = ks["projects"]["project-a"];
  const std::string project_b = ks["projects"]["project-b"];
  {
    KilndHarness kilnd(keystoneConfig(ks, "admin_project_name = admin\nsystem_scope = all\n"));
    kilnd.addGuestImage("guest");
    kilnd.start();

    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(cloud_admin)).status == 200);
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(system_admin)).status == 200);
    // Keystone says admin (and scheduler), but of a project that is not the admin project.
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(tenant_admin)).status == 403);
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(scheduler_a)).status == 403);

    // The admin project's admin launches an instance for project-a.
    const std::string uuid = "3c5e7a91-2b4d-4f6a-9c8e-1d3f5b7a9c2e";
    const json request = {{"uuid", uuid},
                          {"name", "keystone-scope"},
                          {"flavor", "m1.tiny"},
                          {"image", {{"id", "guest"}}},
                          {"project_id", project_a}};
    auto launched = kilnd.api("POST", "/v1/instances", request.dump(), false, xAuth(cloud_admin));
    INFO(launched.body);
    REQUIRE(launched.status == 202);
    CHECK(launched.json["project_id"] == project_a);
    kilnd.useToken(cloud_admin);
    kilnd.waitForState(uuid, "active");
    const std::string path = "/v1/instances/" + uuid;

    // project-b's admin is a plain member (reader) of project-b: it may not launch, not even
    // for its own project, sees nothing of project-a's, and lists only its own (none).
    json own = request;
    own["uuid"] = "4d6f8b02-3c5e-4a7b-8d9f-2e4a6c8b0d3f";
    own["project_id"] = project_b;
    auto denied = kilnd.api("POST", "/v1/instances", own.dump(), false, xAuth(tenant_admin));
    CHECK(denied.status == 403);
    CHECK(denied.json["error"]["message"] ==
          "Policy does not allow compute:instances:create to be performed.");
    CHECK(kilnd.api("GET", path, "", false, xAuth(tenant_admin)).status == 404);
    CHECK(kilnd.api("DELETE", path, "", false, xAuth(tenant_admin)).status == 404);
    auto listed = kilnd.api("GET", "/v1/instances", "", false, xAuth(tenant_admin));
    REQUIRE(listed.status == 200);  // as a reader of its project: allowed, and empty
    CHECK(listed.json["instances"].empty());
    // A scheduler of project-a (not the admin project) may not delete project-a's instance.
    CHECK(kilnd.api("DELETE", path, "", false, xAuth(scheduler_a)).status != 202);

    // The system-scoped admin sees and deletes it.
    auto all = kilnd.api("GET", "/v1/instances", "", false, xAuth(system_admin));
    REQUIRE(all.status == 200);
    REQUIRE(all.json["instances"].size() == 1);
    CHECK(all.json["instances"][0]["uuid"] == uuid);
    REQUIRE(kilnd.api("DELETE", path, "", false, xAuth(system_admin)).status == 202);
    CHECK(kilnd.waitGone(uuid));
    CHECK(kilnd.logText().find("role admin does not count here") != std::string::npos);
  }
  {
    // No system scope grants admin: the system-scoped token is refused, the project one is not.
    KilndHarness kilnd(keystoneConfig(ks, "admin_project_name = admin\nsystem_scope =\n"));
    kilnd.start();
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(system_admin)).status == 403);
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(cloud_admin)).status == 200);
  }
  {
    // No admin project: only the system-scoped token is an admin (the defaults).
    KilndHarness kilnd(keystoneConfig(ks, ""));
    kilnd.start();
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(cloud_admin)).status == 403);
    CHECK(kilnd.api("GET", "/v1/host", "", false, xAuth(system_admin)).status == 200);
    CHECK(kilnd.logText().find("count on tokens scoped to no project or to the system 'all'") !=
          std::string::npos);
  }
}

TEST_CASE("keystone: duplicate X-Auth-Token headers are refused", "[keystone]") {
  const json ks = keystoneFixture();
  const std::string reader_a = ks["users"]["reader-a"]["token"];
  KilndHarness kilnd(keystoneConfig(ks, ""));
  kilnd.start();
  auto twice = kilnd.api("GET", "/v1/flavors", "", false, xAuth(reader_a) + xAuth(reader_a));
  CHECK(twice.status == 400);
  CHECK(kilnd.api("GET", "/v1/flavors", "", false, xAuth(reader_a)).status == 200);
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
