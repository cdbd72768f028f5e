// The API's authorization: every route asks the policy about its one operation, with the
// instance's owner as the target. A fake hypervisor at the driver seam; the real router, policy,
// token authenticator, instance manager, store and image cache.
#include "agent/api/api_router.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <thread>

#include "agent/api/launch_request.h"
#include "tests/fakes/fake_compute_driver.h"
#include "tests/support/local_images.h"
#include "tests/support/manual_executor.h"
#include "tests/support/temp_dir.h"

using kiln::api::ApiRouter;
using kiln::rpc::HttpRequest;
using kiln::rpc::HttpResponse;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

constexpr const char* kUuid = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10";
constexpr const char* kAdmin = "admin-token-0123456789";
constexpr const char* kScheduler = "scheduler-token-0123456789";
constexpr const char* kReaderA = "reader-a-token-0123456789";
constexpr const char* kReaderB = "reader-b-token-0123456789";
constexpr const char* kNoRole = "norole-token-0123456789";

struct Api {
  kiln::testing::TempDir dir;
  std::string images = dir.path() + "/images";
  std::string state = dir.path() + "/state";
  kiln::SystemClock clock;
  kiln::testing::ManualExecutor executor;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img{runner};
  kiln::drivers::disk::DiskBuilder disks{qemu_img};
  kiln::testing::FakeComputeDriver driver;
  kiln::drivers::volume::NativeIscsiConnector connector{driver};
  kiln::SecretBox secrets = kiln::SecretBox::fromKeyForTest({});
  kiln::imagecache::LocalDirSource source{images};
  kiln::imagecache::LocalDirUploader uploader{images};
  kiln::config::FlavorCatalog flavors{{kiln::config::Flavor{"tiny", 1, 128, 1, 0, {}}}};
  std::unique_ptr<kiln::imagecache::ImageCache> cache;
  std::unique_ptr<kiln::state::InstanceStore> store;
  std::unique_ptr<kiln::lifecycle::InstanceManager> manager;
  std::unique_ptr<kiln::lifecycle::ImageCacheService> image_service;
  std::shared_ptr<const kiln::rpc::Authenticator> auth;
  std::shared_ptr<const kiln::rpc::Policy> policy =
      std::make_shared<const kiln::rpc::Policy>(kiln::rpc::Policy::defaults());
  std::unique_ptr<ApiRouter> router;

  Api() {
    stdfs::create_directories(images);
    stdfs::create_directories(state);
    kiln::testing::addLocalImage(images, "img", std::string(1 << 20, 'k'));
    kiln::imagecache::ImageCacheOptions options;
    options.base_dir = state + "/_base";
    cache = std::make_unique<kiln::imagecache::ImageCache>(source, qemu_img, options, clock);
    REQUIRE(cache->init().ok());
    auto s = kiln::state::InstanceStore::open(state + "/kiln.db");
    REQUIRE(s.ok());
    store = std::move(s).value();
    manager = std::make_unique<kiln::lifecycle::InstanceManager>(
        driver, *cache, disks, connector, secrets, uploader, *store, clock, executor,
        kiln::lifecycle::ManagerOptions{state + "/instances", state + "/snapshots", true});
    REQUIRE(manager->recover().ok());
    kiln::lifecycle::CacheManagerOptions cache_manager;
    cache_manager.manager_interval = -1;
    image_service =
        std::make_unique<kiln::lifecycle::ImageCacheService>(*cache, *manager, cache_manager);
    auto tokens = kiln::rpc::TokenAuthenticator::parse(
        std::string(kAdmin) + " admin\n" + kScheduler + " scheduler service\n" + kReaderA +
            " reader project-a\n" + kReaderB + " reader project-b\n" + kNoRole + " , project-a\n",
        "tokens");
    REQUIRE(tokens.ok());
    auth = std::make_shared<const kiln::rpc::TokenAuthenticator>(std::move(tokens).value());
    router = std::make_unique<ApiRouter>(
        *manager, *image_service, driver, flavors, [this] { return auth; },
        [this] { return policy; }, kiln::api::HostIdentity{"host", "nova", state, "", "native"});
  }
  ~Api() {
    router.reset();
    image_service.reset();
    manager->shutdown();
  }

  HttpResponse call(const std::string& token, const std::string& method, const std::string& path,
                    const std::string& body = "", bool x_auth_token = false) {
    HttpRequest req;
    req.method = method;
    req.path = path;
    req.body = body;
    req.peer = "test";
    if (!token.empty()) {
      if (x_auth_token) {
        req.x_auth_token = token;
      } else {
        req.authorization = "Bearer " + token;
      }
    }
    return router->handle(req);
  }
  static json launchBody(const std::string& project = "") {
    json body = {{"uuid", kUuid}, {"name", "vm"}, {"flavor", "tiny"}, {"image", {{"id", "img"}}}};
    if (!project.empty()) body["project_id"] = project;
    return body;
  }
  void waitSettled() {
    executor.runUntilIdle();
    auto rec = manager->get(kUuid);
    REQUIRE(rec.ok());
    if (rec->state == kiln::state::InstanceState::kBuilding) FAIL("instance stayed building");
  }
};

std::string message(const HttpResponse& r) {
  return json::parse(r.body)["error"]["message"].get<std::string>();
}

}  // namespace

TEST_CASE("router: a scheduler launches for a project, and the view shows project_id", "[router]") {
  Api api;
  auto launched =
      api.call(kScheduler, "POST", "/v1/instances", Api::launchBody("project-a").dump());
  INFO(launched.body);
  REQUIRE(launched.status == 202);
  CHECK(json::parse(launched.body)["project_id"] == "project-a");
  api.waitSettled();
  auto shown = api.call(kAdmin, "GET", std::string("/v1/instances/") + kUuid);
  REQUIRE(shown.status == 200);
  CHECK(json::parse(shown.body)["project_id"] == "project-a");
}

TEST_CASE("router: readers see their project's instances and act on none", "[router]") {
  Api api;
  REQUIRE(
      api.call(kScheduler, "POST", "/v1/instances", Api::launchBody("project-a").dump()).status ==
      202);
  api.waitSettled();
  const std::string path = std::string("/v1/instances/") + kUuid;

  CHECK(api.call(kReaderA, "GET", path).status == 200);
  auto console = api.call(kReaderA, "GET", path + "/console");
  CHECK(console.status != 403);
  CHECK(console.status != 404);

  auto del = api.call(kReaderA, "DELETE", path);
  CHECK(del.status == 403);
  CHECK(message(del) == "Policy does not allow compute:instances:delete to be performed.");
  for (const char* action :
       {"reboot", "stop", "start", "snapshot", "attach_volume", "detach_volume"}) {
    json body = {{action, json::object()}};
    auto denied = api.call(kReaderA, "POST", path + "/action", body.dump());
    CHECK(denied.status == 403);
    CHECK_THAT(message(denied), Catch::Contains(std::string("compute:instances:action:") + action));
  }

  // Another project's reader cannot tell the instance from a missing one.
  for (const auto& [method, sub] : std::vector<std::pair<std::string, std::string>>{
           {"GET", ""}, {"DELETE", ""}, {"GET", "/console"}}) {
    auto hidden = api.call(kReaderB, method, path + sub);
    CHECK(hidden.status == 404);
    CHECK(message(hidden) == fmt::format("Instance '{}' does not exist", kUuid));
  }
  auto hidden_action = api.call(kReaderB, "POST", path + "/action", R"({"reboot": {}})");
  CHECK(hidden_action.status == 404);

  // Lists are filtered by the show rule.
  auto list_a = json::parse(api.call(kReaderA, "GET", "/v1/instances").body);
  CHECK(list_a["instances"].size() == 1);
  auto list_b = api.call(kReaderB, "GET", "/v1/instances");
  REQUIRE(list_b.status == 200);
  CHECK(json::parse(list_b.body)["instances"].empty());
  CHECK(json::parse(api.call(kScheduler, "GET", "/v1/instances").body)["instances"].size() == 1);

  // A token without roles may do nothing, and sees nothing of the instance.
  CHECK(api.call(kNoRole, "GET", "/v1/instances").status == 403);
  CHECK(api.call(kNoRole, "GET", path).status == 404);

  // The scheduler may act; the instance is still there for it to delete.
  CHECK(api.call(kScheduler, "DELETE", path).status == 202);
}

TEST_CASE("router: every other route is authorized by its operation", "[router]") {
  Api api;
  struct Route {
    std::string method, path, operation;
  };
  const std::vector<Route> routes = {
      {"POST", "/v1/instances", "compute:instances:create"},
      {"GET", "/v1/host", "compute:host:show"},
      {"GET", "/v1/images", "compute:images:list"},
      {"GET", "/v1/images/img", "compute:images:show"},
      {"PUT", "/v1/images/img", "compute:images:precache"},
      {"DELETE", "/v1/images/img", "compute:images:evict"},
  };
  for (const auto& r : routes) {
    INFO(r.method << " " << r.path);
    auto denied =
        api.call(kReaderA, r.method, r.path, r.method == "POST" ? Api::launchBody().dump() : "");
    CHECK(denied.status == 403);
    CHECK(message(denied) == "Policy does not allow " + r.operation + " to be performed.");
  }
  CHECK(api.call(kReaderA, "GET", "/v1/flavors").status == 200);
  CHECK(api.call(kNoRole, "GET", "/v1/flavors").status == 403);
  CHECK(api.call(kScheduler, "GET", "/v1/host").status == 200);
  CHECK(api.call(kScheduler, "GET", "/v1/images").status == 200);
  // A wrong method or sub-resource on an instance is answered before the instance is looked up.
  const std::string path = std::string("/v1/instances/") + kUuid;
  CHECK(api.call(kReaderB, "PUT", path).status == 405);
  CHECK(api.call(kReaderB, "GET", path + "/action").status == 405);
  CHECK(api.call(kReaderB, "GET", path + "/nope").status == 404);
  CHECK(api.call(kReaderB, "GET", path).status == 404);
  // Unauthenticated: 401 before any policy; /healthz needs nothing.
  CHECK(api.call("", "GET", "/v1/flavors").status == 401);
  CHECK(api.call("wrong-token-0123456789", "GET", "/v1/flavors").status == 401);
  CHECK(api.call("", "GET", "/healthz").status == 200);
}

TEST_CASE("router: X-Auth-Token is accepted like a Bearer token", "[router]") {
  Api api;
  CHECK(api.call(kScheduler, "GET", "/v1/host", "", /*x_auth_token=*/true).status == 200);
  CHECK(api.call(kReaderA, "GET", "/v1/host", "", /*x_auth_token=*/true).status == 403);
  CHECK(api.call("wrong-token-0123456789", "GET", "/v1/host", "", true).status == 401);
}

TEST_CASE("router: project_id defaults to the caller's, and is part of the request", "[router]") {
  Api api;
  auto launched = api.call(kScheduler, "POST", "/v1/instances", Api::launchBody().dump());
  REQUIRE(launched.status == 202);
  CHECK(json::parse(launched.body)["project_id"] == "service");
  // The same body, retried: the same request.
  CHECK(api.call(kScheduler, "POST", "/v1/instances", Api::launchBody().dump()).status == 202);
  // The same body for another project: another request, refused as a conflict.
  auto other = api.call(kScheduler, "POST", "/v1/instances", Api::launchBody("project-b").dump());
  CHECK(other.status == 409);
  // An admin without a project sending the same body means project "": a different request.
  CHECK(api.call(kAdmin, "POST", "/v1/instances", Api::launchBody().dump()).status == 409);
  api.waitSettled();
}

TEST_CASE("router: a custom policy takes effect at the next request", "[router]") {
  Api api;
  auto custom = kiln::rpc::Policy::parse(
      "\"compute:instances:create\": \"role:scheduler and project_id:%(project_id)s\"\n",
      "custom.yaml");
  REQUIRE(custom.ok());
  api.policy = std::make_shared<const kiln::rpc::Policy>(std::move(custom).value());
  auto foreign = api.call(kScheduler, "POST", "/v1/instances", Api::launchBody("project-a").dump());
  CHECK(foreign.status == 403);
  CHECK_THAT(message(foreign), Catch::Contains("compute:instances:create"));
  CHECK(api.call(kScheduler, "POST", "/v1/instances", Api::launchBody("service").dump()).status ==
        202);
  api.waitSettled();
}

TEST_CASE("launch requests: project_id is checked", "[router]") {
  kiln::config::FlavorCatalog flavors{{kiln::config::Flavor{"tiny", 1, 128, 1, 0, {}}}};
  auto parse = [&](const json& body, std::string_view caller_project = "") {
    return kiln::api::parseLaunchRequest(body.dump(), flavors, caller_project);
  };
  json body = Api::launchBody();
  CHECK(parse(body)->project_id.empty());
  CHECK(parse(body, "p-1")->project_id == "p-1");
  body["project_id"] = "6f0c2d_A-b";
  CHECK(parse(body, "p-1")->project_id == "6f0c2d_A-b");
  for (const json& bad :
       {json(""), json(std::string(65, 'a')), json("a b"), json("a/b"), json(42), json(nullptr)}) {
    body["project_id"] = bad;
    auto r = parse(body);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("project_id"));
  }
  CHECK_FALSE(parse(Api::launchBody(), "not a project").ok());
  // The fingerprint: unchanged for requests without a project (as before projects), different
  // per project.
  auto none = parse(Api::launchBody());
  auto p1 = parse(Api::launchBody(), "p1");
  auto p1_explicit = parse(Api::launchBody("p1"));
  auto p2 = parse(Api::launchBody("p2"));
  CHECK(none->fingerprint != p1->fingerprint);
  CHECK(p1->fingerprint == p1_explicit->fingerprint);
  CHECK(p1->fingerprint != p2->fingerprint);
}

TEST_CASE("instance records: project_id is stored, and old records load as no project",
          "[router]") {
  kiln::state::InstanceRecord rec;
  rec.uuid = kUuid;
  rec.name = "vm";
  rec.project_id = "project-a";
  json stored = kiln::state::toJson(rec);
  CHECK(stored["project_id"] == "project-a");
  CHECK(kiln::state::fromJson(stored)->project_id == "project-a");
  stored.erase("project_id");
  auto old = kiln::state::fromJson(stored);
  REQUIRE(old.ok());
  CHECK(old->project_id.empty());
}
