#pragma once
// Callers' tokens validated by OpenStack Identity (Keystone v3), as keystonemiddleware does for
// nova: GET {auth_url}/v3/auth/tokens with kiln's own service token in X-Auth-Token and the
// caller's in X-Subject-Token. The caller's roles are token.roles[].name, its project
// token.project.id.
//
// The admin and scheduler roles act on every project, so they count only on a token that
// Keystone scoped to the admin project ([keystone] admin_project_name in
// admin_project_domain_name) or to the system ([keystone] system_scope, "all"); on any other
// token they are dropped. Keystone lets each project's own admins grant its admin role, so
// without this an admin of one tenant's project would be an admin of every instance here. Such
// a caller keeps its other roles (Keystone's admin implies member and reader) and is a plain
// member of its own project.
//
// kiln's service token comes from password authentication ([keystone] username, password,
// user_domain_name, project_name, project_domain_name) and is renewed before it expires or when
// Keystone refuses it; or it is read from service_token_file at each validation, so another tool
// can rotate it.
//
// Validated tokens are cached for cache_seconds, never past their expires_at, under the SHA-256
// of the token (no token is kept in clear). The Caller returned carries the token
// (Caller::keystone_token), for the one request, so that kiln can ask Glance with it. Failures are
// never cached. When Keystone cannot be reached or refuses kiln itself, callers get kUnavailable
// (503), not kUnauthorized: their token may be fine. A validation blocks the calling thread (an API
// worker, never an I/O thread: agent/api/api_dispatcher.h) for at most `timeout`.

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/rpc/authenticator.h"
#include "agent/rpc/token_auth.h"
#include "common/clock.h"
#include "imagecache/http_client.h"

namespace kiln::rpc {

struct KeystoneOptions {
  std::string auth_url;  // http(s)://host:port[/identity][/v3]
  std::string username;
  std::string password;
  std::string user_domain_name = "Default";
  std::string project_name;
  std::string project_domain_name = "Default";
  std::string service_token_file;  // instead of username/password
  std::string cafile;
  std::chrono::seconds cache_seconds{60};
  std::chrono::seconds timeout{10};
  // Where the admin and scheduler roles count (see above). Empty admin_project_name: in no
  // project; empty system_scope: not on system-scoped tokens.
  std::string admin_project_name;
  std::string admin_project_domain_name = "Default";
  std::string system_scope = "all";
};

class KeystoneAuthenticator final : public Authenticator {
 public:
  // Checks the options (an auth URL, and either service_token_file or username, password and
  // project_name); contacts nobody yet.
  static Result<std::unique_ptr<KeystoneAuthenticator>> create(KeystoneOptions options,
                                                               imagecache::HttpClient& http,
                                                               const Clock& clock);

  Result<Caller> authenticate(const HttpRequest& request) const override;
  Result<Caller> validate(std::string_view token) const;

  std::size_t cachedTokens() const;

 private:
  KeystoneAuthenticator(KeystoneOptions options, imagecache::HttpClient& http, const Clock& clock);

  struct Cached {
    Caller caller;
    std::chrono::system_clock::time_point until;
  };

  Result<std::string> serviceToken(bool renew) const;
  Result<std::string> passwordAuth() const;
  imagecache::HttpRequestSpec request(const std::string& url) const;

  KeystoneOptions options_;
  std::string tokens_url_;  // {auth_url}/v3/auth/tokens
  imagecache::HttpClient& http_;
  const Clock& clock_;

  mutable std::mutex service_mutex_;  // guards the service token and its renewal
  mutable std::string service_token_;
  mutable std::chrono::system_clock::time_point service_token_until_{};
  mutable std::mutex cache_mutex_;
  mutable std::map<detail::TokenDigest, Cached> cache_;
};

namespace detail {
// What a validated token is scoped to: a project (with its domain), the system, or neither (a
// domain-scoped or unscoped token).
struct TokenScope {
  std::string project_name;
  std::string project_domain_name;
  std::vector<std::string> system;  // the system scopes the token holds ("all")
};

// The token's "project" and "system" members, as Keystone v3 writes them.
TokenScope tokenScope(const nlohmann::json& token);

// Whether a token of `scope` may use its admin and scheduler roles under `options`.
bool scopeGrantsPrivilegedRoles(const TokenScope& scope, const KeystoneOptions& options);

// Removes the roles that act on every project (admin, scheduler, in any case) from `roles`;
// returns the ones it removed.
std::vector<std::string> dropPrivilegedRoles(std::vector<std::string>& roles);

// Keystone's expires_at ("2026-11-26T04:30:00.000000Z", "...+00:00"), as a time point.
std::optional<std::chrono::system_clock::time_point> parseKeystoneTime(std::string_view text);
}  // namespace detail

}  // namespace kiln::rpc
