// PlacementClient against a scripted Placement (FakeHttpClient behind a real KeystoneSession):
// the requests nova's report client would send, generation conflicts re-read and retried a
// bounded number of times, 404 and 409 in each of their meanings, and Placement's own error text
// in every failure. Answers are shaped as Placement 8.0 writes them (placement/handlers/*.py).

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "openstack/placement/placement_client.h"
#include "tests/fakes/fake_http_client.h"
#include "tests/support/manual_clock.h"

namespace {

using kiln::ErrorCode;
using kiln::openstack::keystone::KeystoneAuthOptions;
using kiln::openstack::keystone::KeystoneSession;
using kiln::openstack::placement::Inventories;
using kiln::openstack::placement::Inventory;
using kiln::openstack::placement::PlacementClient;
using kiln::openstack::placement::PlacementClientOptions;
using kiln::testing::FakeHttpClient;
using kiln::testing::FakeReply;
using kiln::testing::ManualClock;
using kiln::testing::sentHeader;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kRp = "4f6c3e59-0d6a-4d8e-9a35-2a7d7f0c1b11";
constexpr const char* kOther = "9b1f0b2e-59d7-4a40-8a4e-57c5b4a3d2e0";
constexpr const char* kConsumer = "0c5e7a1d-3f2b-4c6d-8e9f-a1b2c3d4e5f6";
const std::string kBase = "http://placement:8778";

FakeReply tokenReply(const ManualClock& clock, const std::string& token = "tok") {
  json body = {{"token", {{"expires_at", kiln::formatUtc(clock.wallNow() + 1h)}}}};
  FakeReply reply = FakeReply::ok(body.dump(), 201);
  reply.headers = {{"x-subject-token", token}};
  return reply;
}

// Placement's error document (placement.util.json_error_formatter), with webob's preamble.
FakeReply placementError(long status, const std::string& title, const std::string& detail,
                         const std::string& code = "placement.undefined_code") {
  json body = {{"errors",
                {{{"status", status},
                  {"title", title},
                  {"detail", detail},
                  {"code", code},
                  {"request_id", "req-1"}}}}};
  return FakeReply::ok(body.dump(), status);
}

FakeReply generationConflict() {
  return placementError(409, "Conflict",
                        "There was a conflict when trying to complete your request.\n\n "
                        "resource provider generation conflict  ",
                        "placement.concurrent_update");
}

FakeReply providerReply(const std::string& uuid, const std::string& name, int generation) {
  return FakeReply::ok(json{
      {"uuid", uuid},
      {"name", name},
      {"generation", generation},
      {"root_provider_uuid", uuid},
      {"parent_provider_uuid", nullptr},
      {"links",
       json::array()}}.dump());
}

json inventoryJson(int total, int reserved, double ratio) {
  return {{"total", total},    {"reserved", reserved}, {"min_unit", 1},
          {"max_unit", total}, {"step_size", 1},       {"allocation_ratio", ratio}};
}

FakeReply inventoriesReply(int generation, const json& inventories) {
  return FakeReply::ok(
      json{{"resource_provider_generation", generation}, {"inventories", inventories}}.dump());
}

FakeReply traitsReply(int generation, const json& traits) {
  return FakeReply::ok(
      json{{"resource_provider_generation", generation}, {"traits", traits}}.dump());
}

Inventories wanted() {
  Inventories out;
  out["VCPU"] = Inventory{8, 0, 1, 8, 1, 16.0};
  out["MEMORY_MB"] = Inventory{16384, 512, 1, 16384, 1, 1.5};
  return out;
}

struct Fixture {
  ManualClock clock;
  FakeHttpClient http;
  std::unique_ptr<KeystoneSession> session;
  std::unique_ptr<PlacementClient> client;

  explicit Fixture(PlacementClientOptions options = {}) {
    KeystoneAuthOptions o;
    o.auth_url = "http://keystone:5000";
    o.username = "kiln";
    o.password = "pw";
    o.user_domain_name = "Default";
    o.project_name = "service";
    o.project_domain_name = "Default";
    o.endpoint_override = kBase;
    auto created = KeystoneSession::create(o, http, clock);
    REQUIRE(created.ok());
    session = std::move(*created);
    client = std::make_unique<PlacementClient>(*session, options);
    http.push(tokenReply(clock));
  }

  // The requests Placement saw (Keystone's first one left out), as "METHOD path".
  std::vector<std::string> calls() const {
    std::vector<std::string> out;
    const auto requests = http.requests();
    const auto sent = http.sent();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (!requests[i].url.starts_with(kBase)) continue;
      out.push_back(sent[i].method + " " + requests[i].url.substr(kBase.size()));
    }
    return out;
  }
  json body(std::size_t index) const { return json::parse(http.sent().at(index).body); }
};

}  // namespace

TEST_CASE("placement: every request carries the token, microversion 1.39 and JSON types") {
  Fixture f;
  f.http.push(providerReply(kRp, "node-1", 3));
  f.http.push(inventoriesReply(3, json::object()));
  f.http.push(inventoriesReply(4, json::object()));
  REQUIRE(f.client->provider(kRp).ok());
  REQUIRE(f.client->setInventories(kRp, wanted()).ok());
  const auto requests = f.http.requests();
  REQUIRE(requests.size() == 4);
  for (std::size_t i = 1; i < requests.size(); ++i) {
    CHECK(sentHeader(requests[i], "X-Auth-Token") == "tok");
    CHECK(sentHeader(requests[i], "OpenStack-API-Version") == "placement 1.39");
    CHECK(sentHeader(requests[i], "Accept") == "application/json");
  }
  CHECK_FALSE(sentHeader(requests[1], "Content-Type"));
  CHECK(sentHeader(requests[3], "Content-Type") == "application/json");
}

TEST_CASE("placement: ensureProvider reads first and creates on 404") {
  SECTION("an existing provider is used as it is, name included") {
    Fixture f;
    f.http.push(providerReply(kRp, "old-name", 7));
    auto rp = f.client->ensureProvider(kRp, "node-1");
    REQUIRE(rp.ok());
    CHECK(rp->name == "old-name");
    CHECK(rp->generation == 7);
    CHECK(rp->root_provider_uuid == kRp);
    CHECK(rp->parent_provider_uuid.empty());
    CHECK(f.calls() == std::vector<std::string>{std::string("GET /resource_providers/") + kRp});
  }
  SECTION("404: POST with the uuid and the name; 1.20+ answers with the provider") {
    Fixture f;
    f.http.push(placementError(404, "Not Found",
                               std::string("No resource provider with uuid ") + kRp + " found"));
    f.http.push(providerReply(kRp, "node-1", 0));
    auto rp = f.client->ensureProvider(kRp, "node-1");
    REQUIRE(rp.ok());
    CHECK(rp->uuid == kRp);
    CHECK(rp->generation == 0);
    CHECK(f.calls() == std::vector<std::string>{std::string("GET /resource_providers/") + kRp,
                                                "POST /resource_providers"});
    CHECK(f.body(2) == json{{"uuid", kRp}, {"name", "node-1"}});
  }
  SECTION("a uuid in upper case is sent canonical") {
    Fixture f;
    f.http.push(providerReply(kRp, "node-1", 0));
    REQUIRE(f.client->ensureProvider("4F6C3E59-0D6A-4D8E-9A35-2A7D7F0C1B11", "node-1").ok());
    CHECK(f.calls() == std::vector<std::string>{std::string("GET /resource_providers/") + kRp});
  }
  SECTION("409 because another provider has the name: the error names both uuids") {
    Fixture f;
    f.http.push(placementError(404, "Not Found", "No resource provider found"));
    f.http.push(placementError(
        409, "Conflict",
        "There was a conflict when trying to complete your request.\n\n Conflicting resource "
        "provider name: node 1/a already exists.  ",
        "placement.duplicate_name"));
    f.http.push(placementError(404, "Not Found", "No resource provider found"));
    f.http.push(FakeReply::ok(
        json{{"resource_providers", {{{"uuid", kOther}, {"name", "node 1/a"}, {"generation", 2}}}}}
            .dump()));
    auto rp = f.client->ensureProvider(kRp, "node 1/a");
    REQUIRE_FALSE(rp.ok());
    CHECK(rp.error().code == ErrorCode::kConflict);
    CHECK_THAT(rp.error().message, Catch::Contains(kRp));
    CHECK_THAT(rp.error().message, Catch::Contains(kOther));
    CHECK_THAT(rp.error().message,
               Catch::Contains("Conflicting resource provider name: node 1/a already exists."));
    // The name went percent-encoded into the query.
    CHECK(f.calls().back() == "GET /resource_providers?name=node%201%2Fa");
  }
  SECTION("409 because this very provider appeared meanwhile: it is used") {
    Fixture f;
    f.http.push(placementError(404, "Not Found", "No resource provider found"));
    f.http.push(placementError(409, "Conflict", "Conflicting resource provider uuid: x",
                               "placement.duplicate_name"));
    f.http.push(providerReply(kRp, "node-1", 1));
    auto rp = f.client->ensureProvider(kRp, "node-1");
    REQUIRE(rp.ok());
    CHECK(rp->generation == 1);
  }
  SECTION("refused before any request: a bad uuid, an empty name") {
    Fixture f;
    CHECK(f.client->ensureProvider("node-1", "node-1").error().code == ErrorCode::kInvalidArgument);
    CHECK(f.client->ensureProvider(kRp, "").error().code == ErrorCode::kInvalidArgument);
    CHECK(f.calls().empty());
  }
}

TEST_CASE("placement: setInventories sends the generation it read and retries conflicts") {
  Fixture f;
  f.http.push(inventoriesReply(5, {{"VCPU", inventoryJson(4, 0, 16.0)}}));
  f.http.push(generationConflict());
  f.http.push(inventoriesReply(6, {{"VCPU", inventoryJson(4, 0, 16.0)}}));
  f.http.push(inventoriesReply(7, json::object()));
  auto generation = f.client->setInventories(kRp, wanted());
  REQUIRE(generation.ok());
  CHECK(*generation == 7);
  const std::string path = std::string("/resource_providers/") + kRp + "/inventories";
  CHECK(f.calls() ==
        std::vector<std::string>{"GET " + path, "PUT " + path, "GET " + path, "PUT " + path});
  CHECK(f.body(2)["resource_provider_generation"] == 5);
  CHECK(f.body(4)["resource_provider_generation"] == 6);
  CHECK(f.body(4)["inventories"] ==
        json{{"VCPU", inventoryJson(8, 0, 16.0)}, {"MEMORY_MB", inventoryJson(16384, 512, 1.5)}});
}

TEST_CASE("placement: setInventories gives up after max_attempts, with Placement's text") {
  Fixture f(PlacementClientOptions{3});
  for (int i = 0; i < 3; ++i) {
    f.http.push(inventoriesReply(10 + i, json::object()));
    f.http.push(generationConflict());
  }
  auto generation = f.client->setInventories(kRp, wanted());
  REQUIRE_FALSE(generation.ok());
  CHECK(generation.error().code == ErrorCode::kConflict);
  CHECK_THAT(generation.error().message, Catch::Contains("3 times"));
  CHECK_THAT(generation.error().message, Catch::Contains("resource provider generation conflict"));
  CHECK(f.http.pending() == 0);
  CHECK(f.calls().size() == 6);
}

TEST_CASE("placement: setInventories sends nothing when Placement has it already") {
  Fixture f;
  json held = {{"VCPU", inventoryJson(8, 0, 16.0)},
               {"MEMORY_MB", inventoryJson(16384, 512, 1.5000000001)}};
  f.http.push(inventoriesReply(9, held));
  auto generation = f.client->setInventories(kRp, wanted());
  REQUIRE(generation.ok());
  CHECK(*generation == 9);
  CHECK(f.calls().size() == 1);
}

TEST_CASE("placement: inventory in use is an error, never retried") {
  Fixture f;
  f.http.push(inventoriesReply(2, {{"DISK_GB", inventoryJson(100, 0, 1.0)}}));
  f.http.push(placementError(
      409, "Conflict",
      std::string("There was a conflict when trying to complete your request.\n\n update "
                  "conflict: Inventory for 'DISK_GB' on resource provider '") +
          kRp + "' in use.  ",
      "placement.inventory.inuse"));
  auto generation = f.client->setInventories(kRp, wanted());
  REQUIRE_FALSE(generation.ok());
  CHECK(generation.error().code == ErrorCode::kConflict);
  CHECK_THAT(generation.error().message,
             Catch::Contains("Inventory for 'DISK_GB' on resource provider"));
  CHECK_THAT(generation.error().message, Catch::Contains("HTTP 409"));
  CHECK(f.http.pending() == 0);
  CHECK(f.calls().size() == 2);
}

TEST_CASE("placement: a 400 to an inventory is Placement's text, as kInvalidArgument") {
  Fixture f;
  f.http.push(inventoriesReply(2, json::object()));
  f.http.push(placementError(
      400, "Bad Request",
      "The server could not comply with the request since it is either malformed or otherwise "
      "incorrect.\n\n Unable to update inventory for resource provider x: Invalid inventory for "
      "'MEMORY_MB' on resource provider 'x'. The reserved value is greater than total.  "));
  auto generation = f.client->setInventories(kRp, wanted());
  REQUIRE_FALSE(generation.ok());
  CHECK(generation.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(generation.error().message,
             Catch::EndsWith("The reserved value is greater than total."));
}

TEST_CASE("placement: setTraits with generations, and unknown traits named") {
  const std::string path = std::string("/resource_providers/") + kRp + "/traits";
  SECTION("a conflict is re-read and retried") {
    Fixture f;
    f.http.push(traitsReply(1, {"COMPUTE_NODE"}));
    f.http.push(generationConflict());
    f.http.push(traitsReply(2, {"COMPUTE_NODE", "CUSTOM_X"}));
    f.http.push(traitsReply(3, {"COMPUTE_NODE", "COMPUTE_IMAGE_TYPE_RAW"}));
    auto generation = f.client->setTraits(kRp, {"COMPUTE_NODE", "COMPUTE_IMAGE_TYPE_RAW"});
    REQUIRE(generation.ok());
    CHECK(*generation == 3);
    CHECK(f.calls() ==
          std::vector<std::string>{"GET " + path, "PUT " + path, "GET " + path, "PUT " + path});
    CHECK(f.body(2) == json{{"resource_provider_generation", 1},
                            {"traits", {"COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_NODE"}}});
    CHECK(f.body(4)["resource_provider_generation"] == 2);
  }
  SECTION("nothing to change: no PUT") {
    Fixture f;
    f.http.push(traitsReply(4, {"COMPUTE_NODE"}));
    CHECK(*f.client->setTraits(kRp, {"COMPUTE_NODE"}) == 4);
    CHECK(f.calls().size() == 1);
  }
  SECTION("Placement's 400 for unknown traits: the error names exactly those") {
    Fixture f;
    f.http.push(traitsReply(1, json::array()));
    f.http.push(placementError(400, "Bad Request",
                               "The server could not comply with the request since it is either "
                               "malformed or otherwise incorrect.\n\n No such trait "
                               "CUSTOM_NOPE, COMPUTE_NOT_A_TRAIT  "));
    f.http.push(FakeReply::ok(json{{"traits", {"COMPUTE_NODE"}}}.dump()));
    auto generation =
        f.client->setTraits(kRp, {"COMPUTE_NODE", "COMPUTE_NOT_A_TRAIT", "CUSTOM_NOPE"});
    REQUIRE_FALSE(generation.ok());
    CHECK(generation.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(generation.error().message,
               Catch::StartsWith("Placement does not know the trait(s) 'COMPUTE_NOT_A_TRAIT', "
                                 "'CUSTOM_NOPE', so resource provider"));
    CHECK_THAT(generation.error().message, !Catch::Contains("'COMPUTE_NODE'"));
    CHECK(f.calls().back() == "GET /traits?name=in:COMPUTE_NODE,COMPUTE_NOT_A_TRAIT,CUSTOM_NOPE");
  }
  SECTION("setOwnedTraits keeps the traits kiln does not own, at every attempt") {
    Fixture f;
    f.http.push(traitsReply(1, {"COMPUTE_NODE", "COMPUTE_STATUS_DISABLED", "CUSTOM_RACK_A"}));
    f.http.push(generationConflict());
    f.http.push(traitsReply(2, {"COMPUTE_NODE", "COMPUTE_STATUS_DISABLED", "CUSTOM_RACK_B"}));
    f.http.push(traitsReply(3, json::array()));
    auto generation = f.client->setOwnedTraits(
        kRp, {"COMPUTE_NODE", "COMPUTE_IMAGE_TYPE_RAW"},
        {"COMPUTE_NODE", "COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_STATUS_DISABLED"});
    REQUIRE(generation.ok());
    CHECK(f.body(2)["traits"] == json{"COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_NODE", "CUSTOM_RACK_A"});
    CHECK(f.body(4)["traits"] == json{"COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_NODE", "CUSTOM_RACK_B"});
  }
}

TEST_CASE("placement: a missing provider is kNotFound with Placement's text") {
  Fixture f;
  f.http.push(placementError(404, "Not Found",
                             "The resource could not be found.\n\n No resource provider with "
                             "uuid 4f6c3e59-0d6a-4d8e-9a35-2a7d7f0c1b11 found  "));
  auto inventories = f.client->inventories(kRp);
  REQUIRE_FALSE(inventories.ok());
  CHECK(inventories.error().code == ErrorCode::kNotFound);
  CHECK(inventories.error().message ==
        std::string("Placement answered HTTP 404 to reading the inventories of resource provider "
                    "'") +
            kRp +
            "': The resource could not be found. No resource provider with uuid "
            "4f6c3e59-0d6a-4d8e-9a35-2a7d7f0c1b11 found");
}

TEST_CASE("placement: deleteAllocations: 204 and 404 are fine, others are errors") {
  Fixture f;
  f.http.push(FakeReply::ok("", 204));
  f.http.push(placementError(404, "Not Found", "No allocations for consumer"));
  f.http.push(placementError(503, "Service Unavailable", "database gone"));
  CHECK(f.client->deleteAllocations(kConsumer).ok());
  CHECK(f.client->deleteAllocations(kConsumer).ok());
  auto failed = f.client->deleteAllocations(kConsumer);
  REQUIRE_FALSE(failed.ok());
  CHECK(failed.error().code == ErrorCode::kUnavailable);
  CHECK_THAT(failed.error().message, Catch::Contains(kConsumer));
  CHECK_THAT(failed.error().message, Catch::EndsWith("database gone"));
  CHECK(f.calls() == std::vector<std::string>(3, std::string("DELETE /allocations/") + kConsumer));
  CHECK(f.client->deleteAllocations("not-a-uuid").error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("placement: a provider's allocations and usages") {
  Fixture f;
  f.http.push(FakeReply::ok(json{{"resource_provider_generation", 12},
                                 {"allocations",
                                  {{kConsumer, {{"resources", {{"VCPU", 2}, {"MEMORY_MB", 512}}}}},
                                   {kOther, {{"resources", {{"DISK_GB", 10}}}}}}}}
                                .dump()));
  f.http.push(FakeReply::ok(json{{"resource_provider_generation", 12},
                                 {"usages", {{"VCPU", 2}, {"MEMORY_MB", 512}, {"DISK_GB", 10}}}}
                                .dump()));
  auto allocations = f.client->providerAllocations(kRp);
  REQUIRE(allocations.ok());
  CHECK(allocations->generation == 12);
  REQUIRE(allocations->consumers.size() == 2);
  CHECK(allocations->consumers.at(kConsumer).at("VCPU") == 2);
  CHECK(allocations->consumers.at(kConsumer).at("MEMORY_MB") == 512);
  CHECK(allocations->consumers.at(kOther).at("DISK_GB") == 10);
  auto usages = f.client->usages(kRp);
  REQUIRE(usages.ok());
  CHECK(usages->usages == std::map<std::string, std::int64_t, std::less<>>{
                              {"DISK_GB", 10}, {"MEMORY_MB", 512}, {"VCPU", 2}});
  const std::string rp = std::string("/resource_providers/") + kRp;
  CHECK(f.calls() ==
        std::vector<std::string>{"GET " + rp + "/allocations", "GET " + rp + "/usages"});
}

TEST_CASE("placement: a 401 from keystonemiddleware renews the token through the session") {
  Fixture f;
  f.http.push(FakeReply::ok(
      R"({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})",
      401));
  f.http.push(tokenReply(f.clock, "tok-2"));
  f.http.push(
      FakeReply::ok(json{{"resource_provider_generation", 1}, {"usages", json::object()}}.dump()));
  REQUIRE(f.client->usages(kRp).ok());
  CHECK(f.session->authentications() == 2);
  CHECK(sentHeader(f.http.requests().back(), "X-Auth-Token") == "tok-2");

  SECTION("refused again: kUnauthorized with keystonemiddleware's words") {
    f.http.push(FakeReply::ok(
        R"({"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})",
        401));
    f.http.push(tokenReply(f.clock, "tok-3"));
    f.http.push(FakeReply::ok(R"({"error": {"message": "requires authentication"}})", 401));
    auto usages = f.client->usages(kRp);
    REQUIRE_FALSE(usages.ok());
    CHECK(usages.error().code == ErrorCode::kUnauthorized);
    CHECK_THAT(usages.error().message, Catch::EndsWith("requires authentication"));
  }
}

TEST_CASE("placement: answers that are not what Placement writes are kUnavailable") {
  Fixture f;
  f.http.push(FakeReply::ok("<html>proxy error</html>"));
  f.http.push(FakeReply::ok(json{{"inventories", json::object()}}.dump()));
  CHECK(f.client->usages(kRp).error().code == ErrorCode::kUnavailable);
  CHECK(f.client->inventories(kRp).error().code == ErrorCode::kUnavailable);
}

TEST_CASE("placement: error text extraction") {
  using kiln::openstack::placement::detail::placementErrorCode;
  using kiln::openstack::placement::detail::placementErrorText;
  CHECK(placementErrorText(R"({"errors": [{"detail": "  a\n\n  b  "}, {"detail": "c"}]})") ==
        "a b; c");
  CHECK(placementErrorText(R"({"errors": [{"title": "Conflict"}]})") == "Conflict");
  CHECK(placementErrorText(R"({"error": {"message": "needs auth"}})") == "needs auth");
  CHECK(placementErrorText("<html>\n 502 Bad Gateway </html>") == "<html> 502 Bad Gateway </html>");
  CHECK(placementErrorText("") == "(no text)");
  CHECK(placementErrorText(std::string(2000, 'x')).size() < 700);
  CHECK(placementErrorCode(R"({"errors": [{"code": "placement.concurrent_update"}]})") ==
        "placement.concurrent_update");
  CHECK(placementErrorCode("nope").empty());
  CHECK(kiln::openstack::placement::detail::percentEncode("a b/c~d_e.f-g,h") ==
        "a%20b%2Fc~d_e.f-g%2Ch");
}
