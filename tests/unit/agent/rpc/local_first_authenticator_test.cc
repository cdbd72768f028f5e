// [keystone] accept_token_file: the token file's callers are answered without asking the other
// authenticator (Keystone), which only sees the tokens the file does not hold.
#include "agent/rpc/local_first_authenticator.h"

#include <atomic>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

namespace kiln::rpc {
namespace {

constexpr const char* kLocalToken = "local-token-0123456789abcdef";
constexpr const char* kRemoteToken = "gAAAAABremote-token-0123456789";

// Stands in for Keystone: knows one token, counts what it is asked.
class CountingAuthenticator final : public Authenticator {
 public:
  explicit CountingAuthenticator(ErrorCode refusal = ErrorCode::kUnauthorized)
      : refusal_(refusal) {}
  Result<Caller> authenticate(const HttpRequest& request) const override {
    ++asked;
    auto token = presentedToken(request);
    if (!token) return token.error();
    if (*token == kRemoteToken) return Caller{{"reader"}, "remote-project", "remote"};
    return Error{refusal_, "Keystone says no"};
  }
  mutable std::atomic<int> asked{0};

 private:
  ErrorCode refusal_;
};

std::shared_ptr<const TokenAuthenticator> localTokens() {
  auto parsed =
      TokenAuthenticator::parse(std::string(kLocalToken) + " admin,scheduler p-local\n", "tokens");
  REQUIRE(parsed.ok());
  return std::make_shared<const TokenAuthenticator>(std::move(parsed).value());
}

HttpRequest withToken(const std::string& token) {
  HttpRequest request;
  request.x_auth_token = token;
  return request;
}

TEST_CASE("LocalFirstAuthenticator answers file tokens itself and asks Keystone for the rest",
          "[rpc][auth]") {
  auto keystone = std::make_shared<CountingAuthenticator>();
  LocalFirstAuthenticator auth(localTokens(), keystone);
  CHECK(auth.localTokens() == 1);

  auto local = auth.authenticate(withToken(kLocalToken));
  REQUIRE(local.ok());
  CHECK(local->project_id == "p-local");
  CHECK(local->roles == std::vector<std::string>{"admin", "scheduler"});
  HttpRequest bearer;
  bearer.authorization = std::string("Bearer ") + kLocalToken;
  CHECK(auth.authenticate(bearer).ok());
  CHECK(keystone->asked == 0);  // no network for the file's callers

  auto remote = auth.authenticate(withToken(kRemoteToken));
  REQUIRE(remote.ok());
  CHECK(remote->project_id == "remote-project");
  CHECK(keystone->asked == 1);

  auto unknown = auth.authenticate(withToken("neither-token-0123456789abcdef"));
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().code == ErrorCode::kUnauthorized);
  CHECK(keystone->asked == 2);

  // A request with no token, or two different ones, never reaches Keystone.
  CHECK(auth.authenticate(HttpRequest{}).error().code == ErrorCode::kUnauthorized);
  HttpRequest two = withToken(kLocalToken);
  two.authorization = std::string("Bearer ") + kRemoteToken;
  CHECK(auth.authenticate(two).error().code == ErrorCode::kUnauthorized);
  CHECK(keystone->asked == 2);
}

TEST_CASE("LocalFirstAuthenticator: file tokens work while Keystone is down", "[rpc][auth]") {
  auto down = std::make_shared<CountingAuthenticator>(ErrorCode::kUnavailable);
  LocalFirstAuthenticator auth(localTokens(), down);
  CHECK(auth.authenticate(withToken(kLocalToken)).ok());
  // Keystone's own answer for other tokens: 503, since their tokens may be fine.
  CHECK(auth.authenticate(withToken("other-token-0123456789abcdef")).error().code ==
        ErrorCode::kUnavailable);

  SECTION("and without a token file every token goes to Keystone") {
    LocalFirstAuthenticator keystone_only(nullptr, down);
    CHECK(keystone_only.localTokens() == 0);
    CHECK(keystone_only.authenticate(withToken(kLocalToken)).error().code ==
          ErrorCode::kUnavailable);
  }
}

}  // namespace
}  // namespace kiln::rpc
