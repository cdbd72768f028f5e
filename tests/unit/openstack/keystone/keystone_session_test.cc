// KeystoneSession against a scripted Keystone and service (FakeHttpClient): what it sends to
// Keystone, when it renews its token (before expires_at as keystoneauth does, and once on a 401),
// which catalog endpoint it picks, and that neither the password nor a token ever reaches an
// error message or the log.

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "openstack/keystone/keystone_session.h"
#include "tests/fakes/fake_http_client.h"
#include "tests/support/manual_clock.h"
#include "tests/support/stderr_capture.h"

namespace {

using kiln::ErrorCode;
using kiln::openstack::keystone::KeystoneAuthOptions;
using kiln::openstack::keystone::KeystoneSession;
using kiln::openstack::keystone::ServiceRequest;
using kiln::testing::FakeHttpClient;
using kiln::testing::FakeReply;
using kiln::testing::ManualClock;
using kiln::testing::sentHeader;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kPassword = "s3cret-Pa55word";

KeystoneAuthOptions options() {
  KeystoneAuthOptions o;
  o.auth_url = "http://keystone:5000/v3";
  o.username = "kiln";
  o.password = kPassword;
  o.user_domain_name = "Default";
  o.project_name = "service";
  o.project_domain_name = "Default";
  return o;
}

json endpoint(const std::string& interface, const std::string& region, const std::string& url) {
  return {{"id", interface + region},
          {"interface", interface},
          {"region", region},
          {"region_id", region},
          {"url", url}};
}

json catalog() {
  return json::array(
      {{{"type", "identity"},
        {"name", "keystone"},
        {"endpoints", json::array({endpoint("public", "RegionOne", "http://keystone:5000/v3/")})}},
       {{"type", "placement"},
        {"name", "placement"},
        {"endpoints",
         json::array({endpoint("public", "RegionOne", "http://public-one/placement/"),
                      endpoint("internal", "RegionTwo", "http://internal-two/placement"),
                      endpoint("internal", "RegionOne", "http://internal-one/placement"),
                      endpoint("admin", "RegionOne", "http://admin-one/placement")})}}});
}

// Keystone's 201 to a password authentication: the token in X-Subject-Token, the catalog in the
// body.
FakeReply tokenReply(const std::string& token, std::chrono::system_clock::time_point expires,
                     const json& services = catalog()) {
  json body = {{"token",
                {{"methods", {"password"}},
                 {"expires_at", kiln::formatUtc(expires)},
                 {"issued_at", kiln::formatUtc(expires - 1h)},
                 {"project", {{"id", "p1"}, {"name", "service"}}},
                 {"catalog", services}}}};
  FakeReply reply = FakeReply::ok(body.dump(), 201);
  reply.headers = {{"x-subject-token", token}, {"content-type", "application/json"}};
  return reply;
}

ServiceRequest placementGet(const std::string& path = "/resource_providers") {
  ServiceRequest r;
  r.service_type = "placement";
  r.path = path;
  return r;
}

struct Fixture {
  ManualClock clock;
  FakeHttpClient http;
  std::unique_ptr<KeystoneSession> session;

  explicit Fixture(KeystoneAuthOptions o = options()) {
    auto created = KeystoneSession::create(std::move(o), http, clock);
    REQUIRE(created.ok());
    session = std::move(*created);
  }
};

}  // namespace

TEST_CASE("keystone session: options are checked, each refusal names the option") {
  ManualClock clock;
  FakeHttpClient http;
  auto refused = [&](KeystoneAuthOptions o, const std::string& word) {
    auto r = KeystoneSession::create(std::move(o), http, clock);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains(word));
    CHECK_THAT(r.error().message, !Catch::Contains(kPassword));
  };
  KeystoneAuthOptions o = options();
  o.auth_type = "v3token";
  refused(o, "auth_type 'v3token' is not supported");
  o = options();
  o.auth_url = "keystone:5000";
  refused(o, "auth_url");
  o = options();
  o.auth_url = "http://keystone:5000/v2.0/";
  refused(o, "v2.0");
  o = options();
  o.username.clear();
  refused(o, "username");
  o = options();
  o.password.clear();
  refused(o, "password");
  o = options();
  o.project_name.clear();
  refused(o, "project_name");
  o = options();
  o.user_domain_name.clear();
  refused(o, "user_domain_name");
  o = options();
  o.project_domain_name.clear();
  refused(o, "project_domain_id");
  o = options();
  o.valid_interfaces = {"internal", "publicURL"};
  refused(o, "'publicURL' is not a valid value for valid_interfaces");
  o = options();
  o.valid_interfaces.clear();
  refused(o, "valid_interfaces");
  o = options();
  o.endpoint_override = "placement:8778";
  refused(o, "endpoint_override");
  CHECK(http.requests().empty());
}

TEST_CASE("keystone session: a v3 password authentication scoped to the project") {
  for (std::string url : {"http://keystone:5000", "http://keystone:5000/",
                          "http://keystone:5000/v3", "http://keystone:5000/v3/"}) {
    KeystoneAuthOptions o = options();
    o.auth_url = url;
    o.project_domain_name.clear();
    o.project_domain_id = "default";
    o.user_domain_id = "d-1";  // wins over user_domain_name
    Fixture f(o);
    f.http.push(tokenReply("tok-1", f.clock.wallNow() + 1h));
    auto token = f.session->token();
    REQUIRE(token.ok());
    CHECK(*token == "tok-1");
    REQUIRE(f.http.requests().size() == 1);
    CHECK(f.http.requests()[0].url == "http://keystone:5000/v3/auth/tokens");
    CHECK(f.http.sent()[0].method == "POST");
    CHECK(sentHeader(f.http.requests()[0], "Content-Type") == "application/json");
    CHECK_FALSE(sentHeader(f.http.requests()[0], "X-Auth-Token"));
    const json body = json::parse(f.http.sent()[0].body);
    CHECK(
        body ==
        json{{"auth",
              {{"identity",
                {{"methods", {"password"}},
                 {"password",
                  {{"user",
                    {{"name", "kiln"}, {"password", kPassword}, {"domain", {{"id", "d-1"}}}}}}}}},
               {"scope", {{"project", {{"name", "service"}, {"domain", {{"id", "default"}}}}}}}}}});
  }
}

TEST_CASE(
    "keystone session: requests carry the token to the catalog's endpoint; one "
    "authentication serves many") {
  Fixture f;
  f.http.push(tokenReply("tok-1", f.clock.wallNow() + 1h));
  f.http.push(FakeReply::ok("{}"));
  f.http.push(FakeReply::ok("{}", 204));
  auto first = f.session->request(placementGet("/resource_providers?name=x"));
  REQUIRE(first.ok());
  CHECK(first->status == 200);
  ServiceRequest put = placementGet("/resource_providers/u/traits");
  put.method = "PUT";
  put.body = R"({"traits": []})";
  put.headers = {{"OpenStack-API-Version", "placement 1.39"}};
  auto second = f.session->request(put);
  REQUIRE(second.ok());
  CHECK(second->status == 204);
  const auto requests = f.http.requests();
  REQUIRE(requests.size() == 3);
  CHECK(requests[1].url == "http://internal-two/placement/resource_providers?name=x");
  CHECK(sentHeader(requests[1], "X-Auth-Token") == "tok-1");
  CHECK(f.http.sent()[1].method == "GET");
  CHECK(requests[2].url == "http://internal-two/placement/resource_providers/u/traits");
  CHECK(sentHeader(requests[2], "X-Auth-Token") == "tok-1");
  CHECK(sentHeader(requests[2], "OpenStack-API-Version") == "placement 1.39");
  CHECK(f.http.sent()[2].method == "PUT");
  CHECK(f.http.sent()[2].body == R"({"traits": []})");
  CHECK(f.session->authentications() == 1);
  // The timeout bounds every request.
  CHECK(requests[1].total_timeout == 30s);
  CHECK(requests[0].total_timeout == 30s);
}

TEST_CASE("keystone session: the token is renewed two minutes before expires_at, not before") {
  Fixture f;
  const auto start = f.clock.wallNow();
  f.http.push(tokenReply("tok-1", start + 1h));
  REQUIRE(f.session->token().ok());
  f.clock.advance(1h - 121s);
  auto still = f.session->token();
  REQUIRE(still.ok());
  CHECK(*still == "tok-1");
  CHECK(f.http.requests().size() == 1);
  f.clock.advance(2s);  // now 119 s before expiry
  f.http.push(tokenReply("tok-2", start + 2h));
  auto renewed = f.session->token();
  REQUIRE(renewed.ok());
  CHECK(*renewed == "tok-2");
  CHECK(f.session->authentications() == 2);
  CHECK(f.http.requests().size() == 2);
  CHECK(f.http.requests()[1].url == "http://keystone:5000/v3/auth/tokens");
}

TEST_CASE("keystone session: a token that lives less than four minutes is renewed half-way") {
  Fixture f;
  f.http.push(tokenReply("short", f.clock.wallNow() + 100s));
  REQUIRE(f.session->token().ok());
  f.clock.advance(49s);
  CHECK(*f.session->token() == "short");
  f.clock.advance(2s);
  f.http.push(tokenReply("next", f.clock.wallNow() + 100s));
  CHECK(*f.session->token() == "next");
}

TEST_CASE("keystone session: a token that expired when issued is a clock problem, not a loop") {
  Fixture f;
  f.http.push(tokenReply("stale", f.clock.wallNow() - 1s));
  auto token = f.session->token();
  REQUIRE_FALSE(token.ok());
  CHECK(token.error().code == ErrorCode::kUnavailable);
  CHECK_THAT(token.error().message, Catch::Contains("clock"));
  CHECK_THAT(token.error().message, !Catch::Contains("stale"));
}

TEST_CASE("keystone session: a 401 from the service renews the token once and resends") {
  Fixture f;
  f.http.push(tokenReply("tok-1", f.clock.wallNow() + 1h));
  f.http.push(FakeReply::ok(R"({"error": {"code": 401, "message": "Unauthorized"}})", 401));
  f.http.push(tokenReply("tok-2", f.clock.wallNow() + 1h));
  f.http.push(FakeReply::ok(R"({"resource_providers": []})"));
  auto reply = f.session->request(placementGet());
  REQUIRE(reply.ok());
  CHECK(reply->status == 200);
  const auto requests = f.http.requests();
  REQUIRE(requests.size() == 4);
  CHECK(sentHeader(requests[1], "X-Auth-Token") == "tok-1");
  CHECK(requests[2].url == "http://keystone:5000/v3/auth/tokens");
  CHECK(sentHeader(requests[3], "X-Auth-Token") == "tok-2");
  CHECK(f.session->authentications() == 2);

  SECTION("a second 401 is the answer: no third token, no loop") {
    f.http.push(FakeReply::ok("", 401));
    f.http.push(tokenReply("tok-3", f.clock.wallNow() + 1h));
    f.http.push(FakeReply::ok("", 401));
    auto again = f.session->request(placementGet());
    REQUIRE(again.ok());
    CHECK(again->status == 401);
    CHECK(f.session->authentications() == 3);
    CHECK(f.http.pending() == 0);
  }
}

TEST_CASE("keystone session: invalidate() drops only the token still held") {
  Fixture f;
  f.http.push(tokenReply("tok-1", f.clock.wallNow() + 1h));
  REQUIRE(f.session->token().ok());
  f.session->invalidate("tok-1");
  f.http.push(tokenReply("tok-2", f.clock.wallNow() + 1h));
  CHECK(*f.session->token() == "tok-2");
  // Another thread's 401 on the old token arrives late: tok-2 stays.
  f.session->invalidate("tok-1");
  CHECK(*f.session->token() == "tok-2");
  CHECK(f.session->authentications() == 2);
}

TEST_CASE("keystone session: endpoints by interface preference, then region") {
  SECTION("internal first by default, in any region when none is named") {
    Fixture f;
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h));
    // RegionTwo's internal endpoint is listed before RegionOne's: without a region, the first.
    CHECK(*f.session->endpoint("placement") == "http://internal-two/placement");
  }
  SECTION("region_name chooses among the endpoints of the preferred interface") {
    KeystoneAuthOptions o = options();
    o.region_name = "RegionOne";
    Fixture f(o);
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h));
    CHECK(*f.session->endpoint("placement") == "http://internal-one/placement");
  }
  SECTION("the order of valid_interfaces is the preference") {
    KeystoneAuthOptions o = options();
    o.valid_interfaces = {"public", "internal"};
    Fixture f(o);
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h));
    CHECK(*f.session->endpoint("placement") == "http://public-one/placement");
  }
  SECTION("a later interface serves when the first has no endpoint in the region") {
    KeystoneAuthOptions o = options();
    o.valid_interfaces = {"admin", "public"};
    o.region_name = "RegionTwo";
    Fixture f(o);
    json services = catalog();
    services[1]["endpoints"].push_back(endpoint("public", "RegionTwo", "http://public-two"));
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h, services));
    CHECK(*f.session->endpoint("placement") == "http://public-two");
  }
  SECTION("an endpoint with only 'region' (no region_id) still matches") {
    KeystoneAuthOptions o = options();
    o.region_name = "Old";
    Fixture f(o);
    json services = json::array({{{"type", "placement"},
                                  {"endpoints", json::array({{{"interface", "internal"},
                                                              {"region", "Old"},
                                                              {"url", "http://old/"}}})}}});
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h, services));
    CHECK(*f.session->endpoint("placement") == "http://old");
  }
  SECTION("nothing fits: kNotFound, saying what the catalog has") {
    KeystoneAuthOptions o = options();
    o.region_name = "RegionThree";
    Fixture f(o);
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h));
    auto e = f.session->endpoint("placement");
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == ErrorCode::kNotFound);
    CHECK_THAT(e.error().message, Catch::Contains("'placement'"));
    CHECK_THAT(e.error().message, Catch::Contains("internal or public in region 'RegionThree'"));
    CHECK_THAT(e.error().message, Catch::Contains("internal in region 'RegionTwo'"));
    auto missing = f.session->endpoint("volumev3");
    REQUIRE_FALSE(missing.ok());
    CHECK_THAT(missing.error().message, Catch::Contains("it lists none"));
    // A request for it fails the same way, and sends nothing.
    ServiceRequest r;
    r.service_type = "volumev3";
    CHECK(f.session->request(r).error().code == ErrorCode::kNotFound);
    CHECK(f.http.requests().size() == 1);
  }
  SECTION("endpoint_override wins over the catalog, and the token still comes from Keystone") {
    KeystoneAuthOptions o = options();
    o.endpoint_override = "http://127.0.0.1:8778/";
    Fixture f(o);
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h, json::array()));
    f.http.push(FakeReply::ok("{}"));
    auto reply = f.session->request(placementGet("/traits"));
    REQUIRE(reply.ok());
    CHECK(f.http.requests()[1].url == "http://127.0.0.1:8778/traits");
    CHECK(sentHeader(f.http.requests()[1], "X-Auth-Token") == "t");
  }
}

TEST_CASE("keystone session: Keystone's refusals and failures, with the right codes") {
  SECTION("wrong credentials: kUnauthorized, naming the user and project") {
    Fixture f;
    f.http.push(FakeReply::ok(
        R"({"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}})",
        401));
    auto token = f.session->token();
    REQUIRE_FALSE(token.ok());
    CHECK(token.error().code == ErrorCode::kUnauthorized);
    CHECK_THAT(token.error().message, Catch::Contains("user 'kiln' (domain 'Default')"));
    CHECK_THAT(token.error().message, Catch::Contains("project 'service'"));
    CHECK_THAT(token.error().message, Catch::Contains("requires authentication"));
  }
  SECTION("Keystone down: kUnavailable; a failure is not cached, the next call tries again") {
    Fixture f;
    f.http.push(FakeReply::refused("http://keystone:5000/v3/auth/tokens"));
    auto token = f.session->token();
    REQUIRE_FALSE(token.ok());
    CHECK(token.error().code == ErrorCode::kUnavailable);
    CHECK_THAT(token.error().message, Catch::Contains("cannot be reached"));
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h));
    CHECK(f.session->token().ok());
  }
  SECTION("a 201 without X-Subject-Token or expires_at") {
    Fixture f;
    FakeReply reply = tokenReply("t", f.clock.wallNow() + 1h);
    reply.headers.clear();
    f.http.push(reply);
    CHECK(f.session->token().error().code == ErrorCode::kUnavailable);
    f.http.push(FakeReply::ok(R"({"token": {}})", 201));
    CHECK(f.session->token().error().code == ErrorCode::kUnavailable);
  }
  SECTION("the service down: kUnavailable naming the service and its URL") {
    Fixture f;
    f.http.push(tokenReply("t", f.clock.wallNow() + 1h));
    f.http.push(FakeReply::refused("http://internal-two/placement/resource_providers"));
    auto reply = f.session->request(placementGet());
    REQUIRE_FALSE(reply.ok());
    CHECK(reply.error().code == ErrorCode::kUnavailable);
    CHECK_THAT(reply.error().message,
               Catch::StartsWith("The placement service at 'http://internal-two/placement'"));
  }
}

TEST_CASE("keystone session: no password and no token in any error message or log line") {
  kiln::testing::StderrCapture log;
  std::vector<std::string> messages;
  const std::string token_text = "gAAAAABsecret-token-value";
  {
    Fixture f;
    // Keystone (or a proxy in front of it) quotes the request back.
    f.http.push(FakeReply::ok(std::string("bad request: password=") + kPassword, 401));
    messages.push_back(f.session->token().error().message);
    f.http.push(FakeReply::ok(std::string("oops ") + kPassword, 500));
    messages.push_back(f.session->token().error().message);
    kiln::Error transport =
        kiln::Error::unavailable(std::string("proxy said: password ") + kPassword);
    FakeReply broken;
    broken.error = transport;
    f.http.push(broken);
    messages.push_back(f.session->token().error().message);

    // A token, then a service whose transport error quotes it, then a 401 on it.
    f.http.push(tokenReply(token_text, f.clock.wallNow() + 1h));
    FakeReply quoting;
    quoting.error = kiln::Error::unavailable("header X-Auth-Token: " + token_text + " refused");
    f.http.push(quoting);
    messages.push_back(f.session->request(placementGet()).error().message);
    f.http.push(FakeReply::ok("", 401));
    f.http.push(tokenReply("second-" + token_text, f.clock.wallNow() + 1h));
    FakeReply quoting_old;  // quotes the token replaced a moment ago
    quoting_old.error = kiln::Error::unavailable("stale " + token_text);
    f.http.push(quoting_old);
    messages.push_back(f.session->request(placementGet()).error().message);
    f.clock.advance(2h);
    f.http.push(FakeReply::ok("unauthorized: " + token_text, 401));
    messages.push_back(f.session->token().error().message);
  }
  for (const std::string& message : messages) {
    INFO(message);
    CHECK_FALSE(message.empty());
    CHECK_THAT(message, !Catch::Contains(kPassword));
    CHECK_THAT(message, !Catch::Contains(token_text));
  }
  CHECK_THAT(messages[0], Catch::Contains("password=***"));
  const std::string logged = log.text();
  CHECK_THAT(logged, Catch::Contains("Authenticated to Keystone"));
  CHECK_THAT(logged, Catch::Contains("refused kiln's Keystone token"));
  CHECK_THAT(logged, !Catch::Contains(kPassword));
  CHECK_THAT(logged, !Catch::Contains(token_text));
}

TEST_CASE("keystone session: threads share one session and one authentication") {
  Fixture f;
  constexpr int kThreads = 8;
  f.http.push(tokenReply("shared", f.clock.wallNow() + 1h));
  for (int i = 0; i < kThreads; ++i) f.http.push(FakeReply::ok("{}"));
  std::vector<std::thread> threads;
  std::vector<int> statuses(kThreads, 0);
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto reply = f.session->request(placementGet());
      statuses[i] = reply.ok() ? static_cast<int>(reply->status) : -1;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(statuses == std::vector<int>(kThreads, 200));
  CHECK(f.session->authentications() == 1);
  const auto requests = f.http.requests();
  REQUIRE(requests.size() == kThreads + 1);
  CHECK(requests[0].url == "http://keystone:5000/v3/auth/tokens");
  for (int i = 1; i <= kThreads; ++i) CHECK(sentHeader(requests[i], "X-Auth-Token") == "shared");
}

TEST_CASE("keystone session: expires_at in the forms Keystone writes") {
  using kiln::openstack::keystone::detail::parseExpiresAt;
  const auto t = std::chrono::system_clock::from_time_t(1'764'131'400);  // 2025-11-26T04:30:00Z
  CHECK(parseExpiresAt("2025-11-26T04:30:00.000000Z") == t);
  CHECK(parseExpiresAt("2025-11-26T04:30:00Z") == t);
  CHECK(parseExpiresAt("2025-11-26T04:30:00+00:00") == t);
  CHECK(parseExpiresAt("2025-11-26T04:30:00") == t);
  CHECK_FALSE(parseExpiresAt("2025-11-26 04:30:00Z"));
  CHECK_FALSE(parseExpiresAt("2025-13-26T04:30:00Z"));
  CHECK_FALSE(parseExpiresAt("2025-11-26T04:30:00+02:00"));
  CHECK_FALSE(parseExpiresAt(""));
}
