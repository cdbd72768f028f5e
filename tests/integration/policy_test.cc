// The API policy through a real kilnd: tokens with roles and projects, the shipped policy file,
// 403 naming the operation, and a policy file that stops startup with the line at fault.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/integration/kilnd_harness.h"
#include "tests/support/temp_dir.h"

using kiln::testing::KilndHarness;
using nlohmann::json;

namespace {

const std::string kShippedPolicy = std::string(KILN_SOURCE_DIR) + "/config/policy.yaml";

std::string xAuth(const std::string& token) { return "X-Auth-Token: " + token + "\r\n"; }

}  // namespace

TEST_CASE(
    "policy: a scheduler launches with project_id, its project's reader may look but not delete",
    "[policy]") {
  KilndHarness kilnd("[api]\npolicy_file = " + kShippedPolicy + "\n");
  const std::string scheduler = kilnd.addToken("scheduler", "service");
  const std::string reader_a = kilnd.addToken("reader", "project-a");
  const std::string reader_b = kilnd.addToken("reader", "project-b");
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "5b0c9a52-44d5-4b8e-8d1f-7d7a1f0c9e01";
  const std::string body = json{
      {"uuid", uuid},
      {"name", "policy-it"},
      {"flavor", "m1.tiny"},
      {"image", {{"id", "guest"}}},
      {"project_id",
       "project-a"}}.dump();

  auto denied_launch = kilnd.api("POST", "/v1/instances", body, false, xAuth(reader_a));
  CHECK(denied_launch.status == 403);
  CHECK(denied_launch.json["error"]["message"] ==
        "Policy does not allow compute:instances:create to be performed.");

  auto accepted = kilnd.api("POST", "/v1/instances", body, false, xAuth(scheduler));
  INFO(accepted.body);
  REQUIRE(accepted.status == 202);
  CHECK(accepted.json["project_id"] == "project-a");
  json active = kilnd.waitForState(uuid, "active");
  CHECK(active["project_id"] == "project-a");

  const std::string path = "/v1/instances/" + uuid;
  auto shown = kilnd.api("GET", path, "", false, xAuth(reader_a));
  CHECK(shown.status == 200);
  CHECK(shown.json["project_id"] == "project-a");
  auto denied = kilnd.api("DELETE", path, "", false, xAuth(reader_a));
  CHECK(denied.status == 403);
  CHECK(denied.json["error"]["message"] ==
        "Policy does not allow compute:instances:delete to be performed.");
  // Another project's reader cannot even tell that the instance exists.
  CHECK(kilnd.api("GET", path, "", false, xAuth(reader_b)).status == 404);
  CHECK(kilnd.api("DELETE", path, "", false, xAuth(reader_b)).status == 404);
  auto list_b = kilnd.api("GET", "/v1/instances", "", false, xAuth(reader_b));
  REQUIRE(list_b.status == 200);
  CHECK(list_b.json["instances"].empty());
  CHECK(kilnd.api("GET", path, "", false, xAuth(scheduler)).status == 200);
  CHECK(kilnd.waitForState(uuid, "active")["state"] == "active");  // the 403 changed nothing

  REQUIRE(kilnd.api("DELETE", path, "", false, xAuth(scheduler)).status == 202);
  CHECK(kilnd.waitGone(uuid));
}

TEST_CASE("policy: a policy file that does not parse stops kilnd with the line at fault",
          "[policy]") {
  kiln::testing::TempDir dir;
  const std::string policy = dir.path() + "/policy.yaml";
  std::ofstream(policy) << "# kiln policy\n"
                           "\"compute:instances:create\": \"rule:admin_or_scheduler\"\n"
                           "\"compute:instances:delete\": \"role:admin and (role:scheduler\"\n";
  KilndHarness kilnd("[api]\npolicy_file = " + policy + "\n");
  REQUIRE_FALSE(kilnd.tryStart());
  CHECK_THAT(kilnd.logText(),
             Catch::Contains(policy + ":3: ") && Catch::Contains("compute:instances:delete"));

  // A typo in an operation name is a load error too, not a silently unused rule.
  std::ofstream(policy) << "\"compute:instance:delete\": \"!\"\n";
  KilndHarness typo("[api]\npolicy_file = " + policy + "\n");
  REQUIRE_FALSE(typo.tryStart());
  CHECK_THAT(typo.logText(),
             Catch::Contains(policy + ":1: ") && Catch::Contains("compute:instance:delete"));

  // A policy file the operator named must exist.
  KilndHarness missing("[api]\npolicy_file = " + dir.path() + "/none.yaml\n");
  REQUIRE_FALSE(missing.tryStart());
  CHECK_THAT(missing.logText(), Catch::Contains("none.yaml"));
}

TEST_CASE("policy: SIGHUP reloads the policy and keeps the old one when the new one is wrong",
          "[policy]") {
  kiln::testing::TempDir dir;
  const std::string policy = dir.path() + "/policy.yaml";
  std::ofstream(policy) << "\"compute:flavors:list\": \"!\"\n";
  KilndHarness kilnd("[api]\npolicy_file = " + policy + "\n");
  kilnd.start();
  CHECK(kilnd.api("GET", "/v1/flavors").status == 403);

  auto reloaded = [&](int status) {
    for (int i = 0; i < 60; ++i) {
      if (kilnd.api("GET", "/v1/flavors").status == status) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  std::ofstream(policy) << "\"compute:flavors:list\": \"@\"\n";
  kilnd.signal(SIGHUP);
  CHECK(reloaded(200));

  std::ofstream(policy) << "\"compute:flavors:list\": \"not\"\n";
  kilnd.signal(SIGHUP);
  for (int i = 0; i < 60 && kilnd.logText().find("Keeping the old policy") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_THAT(kilnd.logText(),
             Catch::Contains("Keeping the old policy") && Catch::Contains(policy + ":1: "));
  CHECK(kilnd.api("GET", "/v1/flavors").status == 200);
}
