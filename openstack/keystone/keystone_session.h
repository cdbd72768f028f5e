#pragma once
// kiln's own identity towards the other OpenStack services, as keystoneauth's Session and Adapter
// give it to nova-compute: a Keystone v3 password authentication scoped to kiln's project, whose
// token and service catalog the session keeps and whose token it renews before it expires, and
// the endpoint of each service found in that catalog. The options are named like nova.conf's
// keystoneauth options of one service section ([placement], [glance], ...), so one session serves
// one such section; another section with other options gets another session.
//
// Renewal follows keystoneauth: a new token is fetched when the one held expires within two
// minutes, and once more when a service answers 401 to it (revoked, or Keystone's keys rotated),
// after which the request is sent again a single time.
//
// Several threads may use one session. One authentication runs at a time: callers that need a
// token while one is being fetched wait for it rather than each asking Keystone. No lock is held
// while a service is being asked.
//
// The password and the tokens are never logged and never put in an error message: Keystone's
// and the transport's texts are scrubbed of them before they are quoted.

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "imagecache/http_client.h"

namespace kiln::openstack::keystone {

// One nova.conf service section's keystoneauth options (loading/conf and loading/adapter), as
// config/ reads them; the session checks them (KeystoneSession::create).
struct KeystoneAuthOptions {
  // The authentication plugin. Only "password" (Keystone v3 password authentication) is
  // supported; anything else is refused by create().
  std::string auth_type = "password";
  // Keystone's public endpoint: http(s)://host[:port][/prefix], with or without the trailing
  // /v3 (kiln speaks v3 only, so no version discovery; a /v2.0 URL is refused).
  std::string auth_url;
  std::string username;
  std::string password;  // a secret: never logged, never quoted
  // The user's domain: user_domain_id wins when both are set; one of them is required.
  std::string user_domain_name;
  std::string user_domain_id;
  // The project the token is scoped to, and its domain (project_domain_id wins when both are
  // set; one of them is required).
  std::string project_name;
  std::string project_domain_name;
  std::string project_domain_id;
  // Only catalog endpoints of this region are used (matched against an endpoint's region_id, or
  // its region when it has none, as keystoneauth does); empty: any region, the first listed wins.
  std::string region_name;
  // Catalog interfaces in order of preference, each public, internal or admin (the values
  // keystoneauth accepts).
  std::vector<std::string> valid_interfaces = {"internal", "public"};
  // When set, the service's URL, used instead of the catalog (the token is still Keystone's).
  std::string endpoint_override;
  // PEM bundle to verify https endpoints, Keystone's and the services'; empty: the system store.
  std::string cafile;
  // The bound on each request, Keystone's and the services', from connect to last byte.
  // keystoneauth's default is no bound at all; kiln's is 30 s, so that a hung service fails the
  // call instead of holding the thread that made it forever. Zero: no bound (only the stall
  // detection of the HTTP client).
  std::chrono::seconds timeout{30};
};

// A request to a service of the catalog. The session adds X-Auth-Token; the other headers
// (Accept, Content-Type, microversions) are the caller's.
struct ServiceRequest {
  std::string service_type;  // the catalog's type: "placement", "image", "network"
  std::string method = "GET";
  std::string path;  // appended to the endpoint: "/resource_providers/...?..."
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                      // sent with POST, PUT and PATCH (even when empty)
  std::size_t max_body_bytes = 4 << 20;  // a longer answer fails with kTooLarge
};

class KeystoneSession {
 public:
  // keystoneauth renews a token that expires within this long (MIN_TOKEN_LIFE_SECONDS).
  static constexpr std::chrono::seconds kRenewBeforeExpiry{120};

  // Checks the options (every refusal names the option); contacts nobody yet.
  static Result<std::unique_ptr<KeystoneSession>> create(KeystoneAuthOptions options,
                                                         imagecache::HttpClient& http,
                                                         const Clock& clock);

  // Sends `request` to its service's endpoint with the token, authenticating first when needed.
  // The answer comes back whatever its status, except that a 401 makes the session fetch a new
  // token and send the request once more: the second answer is returned, whatever it is.
  // Keystone refusing kiln is kUnauthorized; Keystone or the service unreachable kUnavailable;
  // a service missing from the catalog kNotFound.
  Result<imagecache::HttpResult> request(const ServiceRequest& request);

  // The URL (without a trailing slash) that requests for `service_type` go to: the
  // endpoint_override, or the catalog's endpoint of the first interface in valid_interfaces that
  // has one in region_name. Authenticates when no catalog is held yet.
  Result<std::string> endpoint(std::string_view service_type);

  // A token that is valid for at least kRenewBeforeExpiry more (when Keystone issues tokens that
  // live longer than twice that), fetched now when the one held is older.
  Result<std::string> token();

  // Forgets `token` if it is still the one held, so that the next call authenticates again; a
  // token another thread has already replaced is left alone (one 401 renews once, not once per
  // thread that saw it).
  void invalidate(const std::string& token);

  // How many times the session has authenticated to Keystone (for tests and the log).
  std::size_t authentications() const;

 private:
  struct CatalogEndpoint {
    std::string service_type;
    std::string interface;
    std::string region;
    std::string url;
  };
  struct Auth {
    std::string token;
    std::chrono::system_clock::time_point expires_at{};
    std::chrono::system_clock::time_point renew_at{};
    std::vector<CatalogEndpoint> catalog;
  };

  KeystoneSession(KeystoneAuthOptions options, imagecache::HttpClient& http, const Clock& clock);

  // The token and catalog held, valid now; authenticates (holding auth_mutex_) when needed.
  Result<Auth> currentAuth();
  // One password authentication; called with auth_mutex_ held.
  Result<Auth> authenticate();
  Result<std::string> endpointIn(const Auth& auth, std::string_view service_type) const;
  imagecache::HttpRequestSpec specFor(std::string url) const;
  // `text` without the password or any token this session has held, fit to quote. Called with
  // auth_mutex_ held.
  std::string scrub(std::string_view text) const;

  KeystoneAuthOptions options_;
  std::string tokens_url_;  // {auth_url}/v3/auth/tokens
  imagecache::HttpClient& http_;
  const Clock& clock_;

  // Held across a password authentication, so that concurrent callers wait for the one token
  // rather than each fetching their own; guards everything below.
  mutable std::mutex auth_mutex_;
  Auth auth_;
  std::size_t authentications_ = 0;
  // The tokens this session has held, for scrub(): a token replaced a moment ago may still be in
  // flight, and whatever quotes it must not leak it. Bounded (the last few).
  std::vector<std::string> past_tokens_;
};

namespace detail {
// Keystone's expires_at ("2026-11-26T04:30:00.000000Z", "...+00:00") as a time point.
std::optional<std::chrono::system_clock::time_point> parseExpiresAt(std::string_view text);
}  // namespace detail

}  // namespace kiln::openstack::keystone
