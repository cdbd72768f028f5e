// The API's authorization: every route asks the policy about its one operation, with the
// instance's owner as the target. A fake hypervisor at the driver seam; the real router, policy,
// token authenticator, instance manager, store and image cache.
#include "agent/api/api_router.h"

#include <catch2/catch.hpp>

#include <filesystem>
#include <thread>

#include "agent/api/launch_request.h"
#include "agent/api/public_fault.h"
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
constexpr const char* kMemberA = "member-a-token-0123456789";
constexpr const char* kMemberB = "member-b-token-0123456789";

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
  kiln::config::FlavorCatalog flavors{{kiln::config::Flavor{"tiny", 1, 128, 1, 0, {}},
                                       kiln::config::Flavor{"zero", 1, 128, 0, 0, {}}}};
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
            " reader project-a\n" + kReaderB + " reader project-b\n" + kNoRole + " , project-a\n" +
            kMemberA + " member,reader project-a\n" + kMemberB + " member,reader project-b\n",
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
  // A console holds what the guest printed: its project's members read it, readers do not.
  auto console = api.call(kReaderA, "GET", path + "/console");
  CHECK(console.status == 403);
  CHECK(message(console) == "Policy does not allow compute:instances:console to be performed.");
  auto member_console = api.call(kMemberA, "GET", path + "/console");
  CHECK(member_console.status != 403);
  CHECK(member_console.status != 404);
  CHECK(api.call(kMemberB, "GET", path + "/console").status == 404);

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

  // Interface attach and detach are operations of their own.
  auto attach = api.call(kReaderA, "POST", path + "/interfaces", "{}");
  CHECK(attach.status == 403);
  CHECK_THAT(message(attach), Catch::Contains("compute:instances:interfaces:attach"));
  auto detach = api.call(kReaderA, "DELETE", path + "/interfaces/port-1");
  CHECK(detach.status == 403);
  CHECK_THAT(message(detach), Catch::Contains("compute:instances:interfaces:detach"));

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
  CHECK(api.call(kReaderB, "GET", path + "/interfaces").status == 405);
  CHECK(api.call(kReaderB, "POST", path + "/interfaces/port-1").status == 405);
  CHECK(api.call(kReaderB, "DELETE", path + "/interfaces/").status == 404);
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
  kiln::config::FlavorCatalog flavors{{kiln::config::Flavor{"tiny", 1, 128, 1, 0, {}},
                                       kiln::config::Flavor{"zero", 1, 128, 0, 0, {}}}};
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

namespace {

// Members may launch into their own project: what an operator opening the API to tenants writes.
void letMembersLaunch(Api& api) {
  auto custom = kiln::rpc::Policy::parse(
      "\"compute:instances:create\": \"rule:admin_or_scheduler or rule:project_member\"\n",
      "members.yaml");
  REQUIRE(custom.ok());
  api.policy = std::make_shared<const kiln::rpc::Policy>(std::move(custom).value());
}

}  // namespace

TEST_CASE("router: the create policy is judged before the body is read", "[router]") {
  Api api;
  // A caller who may not launch learns nothing from validation: not which flavors exist, not
  // what a field must look like, not even that the body is not JSON.
  for (const std::string& body :
       {Api::launchBody().dump(), std::string("{not json"),
        json{{"uuid", kUuid}, {"name", "x"}, {"flavor", "secret-flavor"}, {"image", {{"id", "i"}}}}
            .dump(),
        json{{"uuid", kUuid}, {"name", "x"}, {"flavor", "tiny"}, {"image", {{"id", "i"}}}}
            .dump()}) {
    INFO(body);
    auto denied = api.call(kReaderA, "POST", "/v1/instances", body);
    CHECK(denied.status == 403);
    CHECK(message(denied) == "Policy does not allow compute:instances:create to be performed.");
  }
  // The scheduler gets the validation answers.
  auto unknown = api.call(
      kScheduler, "POST", "/v1/instances",
      json{{"uuid", kUuid}, {"name", "x"}, {"flavor", "secret-flavor"}, {"image", {{"id", "i"}}}}
          .dump());
  CHECK(unknown.status == 400);
}

TEST_CASE("router: inline flavors and root_gb 0 are operations of their own", "[router]") {
  Api api;
  letMembersLaunch(api);
  auto body = [](json flavor, const char* uuid) {
    return json{{"uuid", uuid}, {"name", "m"}, {"flavor", flavor}, {"image", {{"id", "img"}}}}
        .dump();
  };
  const json inline_flavor = {{"vcpus", 2}, {"memory_mb", 256}, {"root_gb", 1}};
  auto inline_denied = api.call(kMemberA, "POST", "/v1/instances", body(inline_flavor, kUuid));
  CHECK(inline_denied.status == 403);
  CHECK_THAT(message(inline_denied), Catch::Contains("compute:instances:create:inline_flavor"));
  auto zero_denied = api.call(kMemberA, "POST", "/v1/instances", body("zero", kUuid));
  CHECK(zero_denied.status == 403);
  CHECK_THAT(message(zero_denied), Catch::Contains("compute:instances:create:zero_disk_flavor"));
  CHECK_FALSE(api.manager->get(kUuid).ok());  // nothing was made
  // A catalog flavor with a root disk is what members may launch; the scheduler may do all three.
  CHECK(api.call(kMemberA, "POST", "/v1/instances", body("tiny", kUuid)).status == 202);
  CHECK(api.call(kScheduler, "POST", "/v1/instances",
                 body("zero", "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"))
            .status == 202);
  CHECK(api.call(kScheduler, "POST", "/v1/instances",
                 body(inline_flavor, "2e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"))
            .status == 202);
  api.waitSettled();
}

TEST_CASE("router: a uuid another project holds is a 404 on launch, never a 409", "[router]") {
  Api api;
  letMembersLaunch(api);
  REQUIRE(api.call(kMemberA, "POST", "/v1/instances", Api::launchBody().dump()).status == 202);
  api.waitSettled();
  // Project B cannot tell that the uuid is in use from any other uuid it may not launch.
  auto foreign = api.call(kMemberB, "POST", "/v1/instances", Api::launchBody().dump());
  CHECK(foreign.status == 404);
  CHECK(message(foreign) ==
        fmt::format("Instance '{}' does not exist and cannot be launched", kUuid));
  // Its owner is told the truth: the same uuid with another body is a conflict.
  json changed = Api::launchBody();
  changed["name"] = "other";
  CHECK(api.call(kMemberA, "POST", "/v1/instances", changed.dump()).status == 409);
}

TEST_CASE("router: a fault is shown to readers without host paths or tool output", "[router]") {
  Api api;
  api.driver.fail_spawn = kiln::Error::internal(
      "qemu-img convert -O raw /var/lib/kiln/_base/5d1e.part /var/lib/kiln/_base/5d1e.converted "
      "failed (exit 1): qemu-img: Could not open '/srv/tenant-b/secret.img': Permission denied");
  REQUIRE(
      api.call(kScheduler, "POST", "/v1/instances", Api::launchBody("project-a").dump()).status ==
      202);
  api.executor.runUntilIdle();
  const std::string path = std::string("/v1/instances/") + kUuid;
  auto full = json::parse(api.call(kScheduler, "GET", path).body);
  REQUIRE(full["state"] == "error");
  CHECK_THAT(full["fault"]["message"].get<std::string>(), Catch::Contains("/srv/tenant-b"));
  for (const char* token : {kReaderA, kMemberA}) {
    auto shown = api.call(token, "GET", path);
    REQUIRE(shown.status == 200);
    const std::string fault = json::parse(shown.body)["fault"]["message"];
    INFO(fault);
    CHECK(fault.find("/var/lib/kiln") == std::string::npos);
    CHECK(fault.find("/srv") == std::string::npos);
    CHECK(fault.find("Permission denied") == std::string::npos);
    CHECK_THAT(fault, Catch::Contains("failed (exit 1)"));
    CHECK_THAT(fault, Catch::Contains("<host path>"));
    // The list shows the same.
    auto listed = json::parse(api.call(token, "GET", "/v1/instances").body);
    CHECK(listed["instances"][0]["fault"]["message"] == fault);
  }
}

TEST_CASE("publicFaultMessage keeps the reason and drops paths and tool output", "[router]") {
  using kiln::api::publicFaultMessage;
  CHECK(publicFaultMessage("Cannot create '/var/lib/kiln/instances/u/disk': No space left") ==
        "Cannot create '<host path>': No space left");
  CHECK(
      publicFaultMessage("iscsiadm --login failed (exit 24): iscsiadm: initiator reported error") ==
      "iscsiadm --login failed (exit 24)");
  CHECK(publicFaultMessage("Image 'abc' is not in the image service (http://glance:9292/v2/x)") ==
        "Image 'abc' is not in the image service (http://glance:9292/v2/x)");
  CHECK(publicFaultMessage("/dev/sdb vanished") == "<host path> vanished");
  CHECK(publicFaultMessage("The instance crashed: its QEMU process ended unexpectedly") ==
        "The instance crashed: its QEMU process ended unexpectedly");
}

TEST_CASE("router: failed pre-caches are remembered, but only the latest 64", "[router]") {
  Api api;
  auto settled = [&] {
    for (int i = 0; i < 600; ++i) {
      auto list = json::parse(api.call(kScheduler, "GET", "/v1/images").body)["images"];
      if (std::none_of(list.begin(), list.end(),
                       [](const json& e) { return e["status"] == "caching"; })) {
        return list;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("pre-caching never settled");
    return json();
  };
  // Ids nobody has: each one fails, and a client sending thousands must not grow kilnd.
  for (int i = 0; i < 100; ++i) {
    const std::string path = fmt::format("/v1/images/missing-{:03}", i);
    auto put = api.call(kScheduler, "PUT", path);
    while (put.status == 503) {  // the queue is bounded too: the answer is "retry later"
      CHECK_THAT(message(put), Catch::Contains("retry later"));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      put = api.call(kScheduler, "PUT", path);
    }
    REQUIRE(put.status == 202);
  }
  json list = settled();
  std::size_t failed = 0;
  for (const auto& e : list) failed += e["status"] == "error";
  CHECK(failed == 64);
  CHECK(api.call(kScheduler, "GET", "/v1/images/missing-099").status == 200);
  CHECK(api.call(kScheduler, "GET", "/v1/images/missing-000").status == 404);
  // Evicting a failure forgets it.
  CHECK(api.call(kScheduler, "DELETE", "/v1/images/missing-099").status == 204);
  CHECK(api.call(kScheduler, "GET", "/v1/images/missing-099").status == 404);
}

TEST_CASE("router: a bad VIF is a 400 naming the field, and a host without plumbing says so",
          "[router][network]") {
  Api api;
  REQUIRE(api.call(kScheduler, "POST", "/v1/instances", Api::launchBody().dump()).status == 202);
  api.waitSettled();
  const std::string path = std::string("/v1/instances/") + kUuid;
  auto bad = api.call(kScheduler, "POST", path + "/interfaces",
                      R"({"id": "p1", "address": "01:00:5e:00:00:01", "type": "bridge",
                          "network": {"bridge": "br0"}})");
  CHECK(bad.status == 400);
  CHECK_THAT(message(bad), Catch::Contains("interface.address"));
  // The router's manager was made without host network plumbing.
  auto good = api.call(kScheduler, "POST", path + "/interfaces",
                       R"({"id": "p1", "address": "fa:16:3e:00:00:01", "type": "bridge",
                           "network": {"bridge": "br0"}})");
  CHECK(good.status == 400);
  CHECK_THAT(message(good), Catch::Contains("network plumbing"));
  auto bad_port = api.call(kScheduler, "DELETE", path + "/interfaces/bad%20port");
  CHECK(bad_port.status == 400);
  auto missing = api.call(kScheduler, "DELETE", path + "/interfaces/p1");
  CHECK(missing.status == 404);
}
