// KeystoneAuthenticator against a scripted HttpClient: what kiln asks Keystone, and what it makes
// of each answer. tests/integration/keystone_test.cc runs the same against a real Keystone.
#include "agent/rpc/keystone_authenticator.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "agent/rpc/policy.h"
#include "tests/fakes/fake_http_client.h"
#include "tests/support/manual_clock.h"
#include "tests/support/temp_dir.h"

namespace kiln::rpc {
namespace {

using kiln::testing::FakeHttpClient;
using kiln::testing::FakeReply;
using kiln::testing::ManualClock;
using nlohmann::json;

constexpr const char* kSubject = "gAAAAABcallertoken0123456789";
constexpr const char* kService = "gAAAAABservicetoken0123456789";

// ManualClock's wall time starts at 2023-11-14T22:13:20Z.
std::string tokenBody(const std::string& expires = "2023-11-14T23:13:20.000000Z") {
  json body = {
      {"token",
       {{"expires_at", expires},
        {"roles", {{{"id", "r1"}, {"name", "scheduler"}}, {{"id", "r2"}, {"name", "reader"}}}},
        {"project",
         {{"id", "6f0c2d"},
          {"name", "project-a"},
          {"domain", {{"id", "default"}, {"name", "Default"}}}}}}}};
  return body.dump();
}

// A token with Keystone's admin role (which implies member and reader) and `scope`: its
// "project" or "system" member, or neither (a domain-scoped token).
std::string adminTokenBody(const json& scope) {
  json token = {{"expires_at", "2023-11-14T23:13:20.000000Z"},
                {"roles",
                 {{{"id", "r1"}, {"name", "admin"}},
                  {{"id", "r2"}, {"name", "member"}},
                  {{"id", "r3"}, {"name", "reader"}}}}};
  token.update(scope);
  return json{{"token", token}}.dump();
}

json projectScope(const std::string& id, const std::string& name,
                  const std::string& domain = "Default") {
  return {{"project",
           {{"id", id},
            {"name", name},
            {"domain", {{"id", domain == "Default" ? "default" : domain}, {"name", domain}}}}}};
}

FakeReply serviceTokenReply() {
  FakeReply r = FakeReply::ok(tokenBody("2023-11-15T22:13:20Z"), 201);
  r.headers.emplace_back("x-subject-token", kService);
  return r;
}

KeystoneOptions passwordOptions() {
  KeystoneOptions o;
  o.auth_url = "http://127.0.0.1:5000/v3/";
  o.username = "kiln";
  o.password = "s3cret-password";
  o.project_name = "service";
  o.admin_project_name = "project-a";  // where tokenBody()'s scheduler role counts
  return o;
}

std::string header(const imagecache::HttpRequestSpec& spec, const std::string& name) {
  for (const auto& [k, v] : spec.headers) {
    if (k == name) return v;
  }
  return "";
}

struct Fixture {
  FakeHttpClient http;
  ManualClock clock;
  std::unique_ptr<KeystoneAuthenticator> auth;
  explicit Fixture(KeystoneOptions o = passwordOptions()) {
    auto created = KeystoneAuthenticator::create(std::move(o), http, clock);
    REQUIRE(created.ok());
    auth = std::move(created).value();
  }
};

}  // namespace

TEST_CASE("keystone: options need a URL and a way to get kiln's own token", "[keystone]") {
  FakeHttpClient http;
  ManualClock clock;
  KeystoneOptions o = passwordOptions();
  o.auth_url = "ftp://keystone";
  CHECK_FALSE(KeystoneAuthenticator::create(o, http, clock).ok());
  o = passwordOptions();
  o.password.clear();
  auto r = KeystoneAuthenticator::create(o, http, clock);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("service_token_file"));
  o.service_token_file = "/etc/kiln/keystone-token";
  CHECK(KeystoneAuthenticator::create(o, http, clock).ok());
}

TEST_CASE("keystone: password auth, then validation with both tokens", "[keystone]") {
  Fixture f;
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(tokenBody()));
  HttpRequest req;
  req.x_auth_token = kSubject;
  auto caller = f.auth->authenticate(req);
  REQUIRE(caller.ok());
  CHECK(caller->roles == std::vector<std::string>{"scheduler", "reader"});
  CHECK(caller->project_id == "6f0c2d");
  CHECK(caller->token_id.size() == 8);

  auto requests = f.http.requests();
  auto sent = f.http.sent();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].url == "http://127.0.0.1:5000/v3/auth/tokens?nocatalog");
  CHECK(sent[0].method == "POST");
  json auth = json::parse(sent[0].body);
  CHECK(auth["auth"]["identity"]["methods"] == json::array({"password"}));
  CHECK(auth["auth"]["identity"]["password"]["user"]["name"] == "kiln");
  CHECK(auth["auth"]["identity"]["password"]["user"]["domain"]["name"] == "Default");
  CHECK(auth["auth"]["scope"]["project"]["name"] == "service");
  CHECK(sent[1].method == "GET");
  CHECK(header(requests[1], "X-Auth-Token") == kService);
  CHECK(header(requests[1], "X-Subject-Token") == kSubject);
}

TEST_CASE("keystone: validated tokens are cached, briefly and never past expiry", "[keystone]") {
  KeystoneOptions o = passwordOptions();
  o.cache_seconds = std::chrono::seconds(60);
  Fixture f(o);
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(tokenBody()));
  REQUIRE(f.auth->validate(kSubject).ok());
  REQUIRE(f.auth->validate(kSubject).ok());  // from the cache
  CHECK(f.http.requests().size() == 2);
  f.clock.advance(std::chrono::seconds(61));
  f.http.push(FakeReply::ok(tokenBody("2023-11-14T22:15:00Z")));  // expires in 39 s
  REQUIRE(f.auth->validate(kSubject).ok());
  CHECK(f.http.requests().size() == 3);       // the service token was reused
  f.clock.advance(std::chrono::seconds(40));  // past the caller token's expiry, within 60 s
  f.http.push(FakeReply::ok("", 404));
  auto gone = f.auth->validate(kSubject);
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code == ErrorCode::kUnauthorized);
  CHECK(f.http.requests().size() == 4);
}

TEST_CASE("keystone: refusals are 401 and never cached, outages are 503", "[keystone]") {
  Fixture f;
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok("{\"error\": {\"code\": 404}}", 404));
  auto refused = f.auth->validate(kSubject);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::kUnauthorized);
  CHECK(refused.error().message.find(kSubject) == std::string::npos);
  // The same token later valid (e.g. Keystone caught up): asked again, not answered from a cache.
  f.http.push(FakeReply::ok(tokenBody()));
  CHECK(f.auth->validate(kSubject).ok());

  Fixture down;
  down.http.push(FakeReply::refused("http://127.0.0.1:5000/v3/auth/tokens"));
  auto unreachable = down.auth->validate(kSubject);
  REQUIRE_FALSE(unreachable.ok());
  CHECK(unreachable.error().code == ErrorCode::kUnavailable);
  down.http.push(serviceTokenReply());
  down.http.push(FakeReply::ok("<html>oops</html>", 500));
  auto failing = down.auth->validate(kSubject);
  REQUIRE_FALSE(failing.ok());
  CHECK(failing.error().code == ErrorCode::kUnavailable);
  CHECK(down.auth->cachedTokens() == 0);
}

TEST_CASE("keystone: kiln's own token is renewed once when Keystone refuses it", "[keystone]") {
  Fixture f;
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok("", 401));  // the service token was revoked
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(tokenBody()));
  CHECK(f.auth->validate(kSubject).ok());
  CHECK(f.http.requests().size() == 4);

  // Refused twice: kiln's fault, not the caller's.
  Fixture g;
  g.http.push(serviceTokenReply());
  g.http.push(FakeReply::ok("", 401));
  g.http.push(serviceTokenReply());
  g.http.push(FakeReply::ok("", 403));
  auto r = g.auth->validate(kSubject);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnavailable);

  // Wrong service password: 503, and the password is in no message.
  Fixture h;
  h.http.push(FakeReply::ok("{\"error\": {\"code\": 401}}", 401));
  auto bad = h.auth->validate(kSubject);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == ErrorCode::kUnavailable);
  CHECK(bad.error().message.find("s3cret") == std::string::npos);
}

TEST_CASE("keystone: a service token file is read at each validation", "[keystone]") {
  kiln::testing::TempDir dir;
  KeystoneOptions o;
  o.auth_url = "https://keystone.example:5000";
  o.service_token_file = dir.path() + "/token";
  o.cache_seconds = std::chrono::seconds(0);
  std::ofstream(o.service_token_file) << "first-service-token\n";
  Fixture f(o);
  f.http.push(FakeReply::ok(tokenBody()));
  REQUIRE(f.auth->validate(kSubject).ok());
  std::ofstream(o.service_token_file) << "second-service-token\n";
  f.http.push(FakeReply::ok(tokenBody()));
  REQUIRE(f.auth->validate(kSubject).ok());
  auto requests = f.http.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].url == "https://keystone.example:5000/v3/auth/tokens?nocatalog");
  CHECK(header(requests[0], "X-Auth-Token") == "first-service-token");
  CHECK(header(requests[1], "X-Auth-Token") == "second-service-token");
}

TEST_CASE("keystone: the token may come as X-Auth-Token or Bearer, not two different ones",
          "[keystone]") {
  Fixture f;
  HttpRequest none;
  auto missing = f.auth->authenticate(none);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == ErrorCode::kUnauthorized);
  HttpRequest both;
  both.x_auth_token = kSubject;
  both.authorization = "Bearer other-token-0123456789";
  auto conflicting = f.auth->authenticate(both);
  REQUIRE_FALSE(conflicting.ok());
  CHECK_THAT(conflicting.error().message, Catch::Contains("different tokens"));
  CHECK(f.http.requests().empty());
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(tokenBody()));
  HttpRequest bearer;
  bearer.authorization = std::string("Bearer ") + kSubject;
  CHECK(f.auth->authenticate(bearer).ok());
}

TEST_CASE("keystone: admin and scheduler count only in the admin project or on the system",
          "[keystone]") {
  using detail::scopeGrantsPrivilegedRoles;
  using detail::TokenScope;
  KeystoneOptions o;
  o.admin_project_name = "admin";
  const TokenScope admin_project{"admin", "Default", {}};
  const TokenScope other_project{"project-b", "Default", {}};
  const TokenScope admin_elsewhere{"admin", "tenant-domain", {}};  // same name, other domain
  const TokenScope system_all{"", "", {"all"}};
  const TokenScope domain_scoped{};
  CHECK(scopeGrantsPrivilegedRoles(admin_project, o));
  CHECK_FALSE(scopeGrantsPrivilegedRoles(other_project, o));
  CHECK_FALSE(scopeGrantsPrivilegedRoles(admin_elsewhere, o));
  CHECK(scopeGrantsPrivilegedRoles(system_all, o));  // system_scope defaults to all
  CHECK_FALSE(scopeGrantsPrivilegedRoles(domain_scoped, o));

  o.system_scope.clear();
  CHECK_FALSE(scopeGrantsPrivilegedRoles(system_all, o));
  CHECK(scopeGrantsPrivilegedRoles(admin_project, o));

  o.admin_project_name.clear();  // no project grants them, whatever its name
  CHECK_FALSE(scopeGrantsPrivilegedRoles(admin_project, o));
  CHECK_FALSE(scopeGrantsPrivilegedRoles(TokenScope{"", "Default", {}}, o));

  o.admin_project_domain_name = "tenant-domain";
  o.admin_project_name = "admin";
  CHECK(scopeGrantsPrivilegedRoles(admin_elsewhere, o));
  CHECK_FALSE(scopeGrantsPrivilegedRoles(admin_project, o));
}

TEST_CASE("keystone: a token's project and system scope as Keystone writes them", "[keystone]") {
  auto project =
      detail::tokenScope(json::parse(adminTokenBody(projectScope("p1", "admin")))["token"]);
  CHECK(project.project_name == "admin");
  CHECK(project.project_domain_name == "Default");
  CHECK(project.system.empty());
  auto system =
      detail::tokenScope(json::parse(adminTokenBody({{"system", {{"all", true}}}}))["token"]);
  CHECK(system.project_name.empty());
  CHECK(system.system == std::vector<std::string>{"all"});
  auto not_all = detail::tokenScope(json{{"system", {{"all", false}}}});
  CHECK(not_all.system.empty());
  auto junk = detail::tokenScope(json{{"project", "admin"}, {"system", json::array({"all"})}});
  CHECK(junk.project_name.empty());
  CHECK(junk.system.empty());

  std::vector<std::string> roles{"Admin", "member", "SCHEDULER", "reader", "ops"};
  CHECK(detail::dropPrivilegedRoles(roles) == std::vector<std::string>{"Admin", "SCHEDULER"});
  CHECK(roles == std::vector<std::string>{"member", "reader", "ops"});
}

TEST_CASE("keystone: another project's admin is a member of its own project", "[keystone]") {
  KeystoneOptions o = passwordOptions();
  o.admin_project_name = "admin";
  o.cache_seconds = std::chrono::seconds(0);
  Fixture f(o);
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(adminTokenBody(projectScope("b0b", "project-b"))));
  auto tenant_admin = f.auth->validate(kSubject);
  REQUIRE(tenant_admin.ok());
  CHECK(tenant_admin->roles == std::vector<std::string>{"member", "reader"});
  CHECK(tenant_admin->project_id == "b0b");
  // With the shipped policy: its own project's instances are readable, nothing else is allowed.
  const Policy& policy = Policy::defaults();
  CHECK(policy.allows("compute:instances:show", *tenant_admin, {{"project_id", "b0b"}}));
  CHECK_FALSE(policy.allows("compute:instances:show", *tenant_admin, {{"project_id", "a11"}}));
  CHECK_FALSE(policy.allows("compute:instances:delete", *tenant_admin, {{"project_id", "b0b"}}));
  CHECK_FALSE(policy.allows("compute:host:show", *tenant_admin, {{"project_id", "b0b"}}));

  // A project named like the admin project in another domain is another project.
  f.http.push(FakeReply::ok(adminTokenBody(projectScope("c0c", "admin", "tenant-domain"))));
  auto lookalike = f.auth->validate(kSubject);
  REQUIRE(lookalike.ok());
  CHECK(lookalike->roles == std::vector<std::string>{"member", "reader"});

  f.http.push(FakeReply::ok(adminTokenBody(projectScope("ad0", "admin"))));
  auto cloud_admin = f.auth->validate(kSubject);
  REQUIRE(cloud_admin.ok());
  CHECK(cloud_admin->roles == std::vector<std::string>{"admin", "member", "reader"});
  CHECK(policy.allows("compute:instances:delete", *cloud_admin, {{"project_id", "b0b"}}));

  f.http.push(FakeReply::ok(adminTokenBody({{"system", {{"all", true}}}})));
  auto system_admin = f.auth->validate(kSubject);
  REQUIRE(system_admin.ok());
  CHECK(system_admin->roles == std::vector<std::string>{"admin", "member", "reader"});
  CHECK(system_admin->project_id.empty());

  // A domain-scoped token (no project, no system) is no admin either.
  f.http.push(
      FakeReply::ok(adminTokenBody({{"domain", {{"id", "default"}, {"name", "Default"}}}})));
  auto domain_admin = f.auth->validate(kSubject);
  REQUIRE(domain_admin.ok());
  CHECK(domain_admin->roles == std::vector<std::string>{"member", "reader"});
}

TEST_CASE("keystone: an empty system_scope makes system-scoped tokens no admins", "[keystone]") {
  KeystoneOptions o = passwordOptions();
  o.system_scope.clear();
  Fixture f(o);
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(adminTokenBody({{"system", {{"all", true}}}})));
  auto system_admin = f.auth->validate(kSubject);
  REQUIRE(system_admin.ok());
  CHECK(system_admin->roles == std::vector<std::string>{"member", "reader"});
}

TEST_CASE("keystone: expires_at forms", "[keystone]") {
  using detail::parseKeystoneTime;
  auto t = parseKeystoneTime("2023-11-14T22:13:20.000000Z");
  REQUIRE(t);
  CHECK(std::chrono::system_clock::to_time_t(*t) == 1'700'000'000);
  CHECK(parseKeystoneTime("2023-11-14T22:13:20Z"));
  CHECK(parseKeystoneTime("2023-11-14T22:13:20+00:00"));
  CHECK_FALSE(parseKeystoneTime("2023-11-14 22:13:20"));
  CHECK_FALSE(parseKeystoneTime("tomorrow"));
  CHECK_FALSE(parseKeystoneTime("2023-11-14T22:13:20+02:00"));
}

}  // namespace kiln::rpc

namespace kiln::rpc {

TEST_CASE("keystone: the caller carries its own token, fresh or cached, for Glance", "[keystone]") {
  Fixture f;
  f.http.push(serviceTokenReply());
  f.http.push(FakeReply::ok(tokenBody()));
  auto fresh = f.auth->validate(kSubject);
  REQUIRE(fresh.ok());
  CHECK(fresh->keystone_token == kSubject);
  auto cached = f.auth->validate(kSubject);  // from the cache
  REQUIRE(cached.ok());
  CHECK(cached->keystone_token == kSubject);
  CHECK(f.http.requests().size() == 2);
}

}  // namespace kiln::rpc
