#include "agent/rpc/keystone_authenticator.h"

#include <time.h>

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/strings.h"

namespace kiln::rpc {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxCachedTokens = 10000;
constexpr std::size_t kMaxTokenBytes = 8192;
// A service token is renewed this long before Keystone says it expires.
constexpr auto kServiceTokenMargin = std::chrono::seconds(60);

Error unauthorized(std::string message) { return {ErrorCode::kUnauthorized, std::move(message)}; }

// Keystone's text made safe to quote: short, printable ASCII.
std::string excerpt(std::string_view body) {
  std::string out;
  for (char c : body.substr(0, 200)) {
    out += (c >= 0x20 && c < 0x7f) ? c : ' ';
  }
  return out;
}

// For the log: what a token is scoped to.
std::string describe(const detail::TokenScope& scope) {
  if (!scope.project_name.empty()) {
    return fmt::format("project '{}' in domain '{}'", excerpt(scope.project_name),
                       excerpt(scope.project_domain_name));
  }
  if (!scope.system.empty()) return fmt::format("system '{}'", excerpt(scope.system.front()));
  return "no project and not the system";
}

}  // namespace

namespace detail {

TokenScope tokenScope(const json& token) {
  TokenScope scope;
  auto name = [](const json& object) {
    return object.is_object() && object.contains("name") && object["name"].is_string()
               ? object["name"].get<std::string>()
               : std::string();
  };
  if (token.contains("project") && token["project"].is_object()) {
    const json& project = token["project"];
    scope.project_name = name(project);
    if (project.contains("domain")) scope.project_domain_name = name(project["domain"]);
  }
  if (token.contains("system") && token["system"].is_object()) {
    for (const auto& [key, value] : token["system"].items()) {
      if (value.is_boolean() && value.get<bool>()) scope.system.push_back(key);
    }
  }
  return scope;
}

bool scopeGrantsPrivilegedRoles(const TokenScope& scope, const KeystoneOptions& options) {
  if (!options.admin_project_name.empty() && scope.project_name == options.admin_project_name &&
      scope.project_domain_name == options.admin_project_domain_name) {
    return true;
  }
  return !options.system_scope.empty() && std::find(scope.system.begin(), scope.system.end(),
                                                    options.system_scope) != scope.system.end();
}

std::vector<std::string> dropPrivilegedRoles(std::vector<std::string>& roles) {
  std::vector<std::string> dropped;
  std::erase_if(roles, [&](const std::string& role) {
    bool privileged = strings::equalsIgnoringCase(role, "admin") ||
                      strings::equalsIgnoringCase(role, "scheduler");
    if (privileged) dropped.push_back(role);
    return privileged;
  });
  return dropped;
}

std::optional<std::chrono::system_clock::time_point> parseKeystoneTime(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS, then an optional fraction, then Z or +00:00 (Keystone writes UTC).
  if (text.size() < 19 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':') {
    return std::nullopt;
  }
  auto number = [&](std::size_t pos, std::size_t len) -> std::optional<int> {
    int value = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      value = value * 10 + (text[i] - '0');
    }
    return value;
  };
  auto year = number(0, 4), month = number(5, 2), day = number(8, 2), hour = number(11, 2),
       minute = number(14, 2), second = number(17, 2);
  if (!year || !month || !day || !hour || !minute || !second) return std::nullopt;
  std::string_view rest = text.substr(19);
  if (!rest.empty() && rest.front() == '.') {
    rest.remove_prefix(1);
    while (!rest.empty() && rest.front() >= '0' && rest.front() <= '9') rest.remove_prefix(1);
  }
  if (rest != "Z" && rest != "+00:00" && !rest.empty()) return std::nullopt;
  struct tm tm {};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *month - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *minute;
  tm.tm_sec = *second;
  time_t t = timegm(&tm);
  if (t == static_cast<time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace detail

KeystoneAuthenticator::KeystoneAuthenticator(KeystoneOptions options, imagecache::HttpClient& http,
                                             const Clock& clock)
    : options_(std::move(options)), http_(http), clock_(clock) {
  std::string base = options_.auth_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (base.ends_with("/v3")) base.resize(base.size() - 3);
  tokens_url_ = base + "/v3/auth/tokens";
}

Result<std::unique_ptr<KeystoneAuthenticator>> KeystoneAuthenticator::create(
    KeystoneOptions options, imagecache::HttpClient& http, const Clock& clock) {
  if (!options.auth_url.starts_with("http://") && !options.auth_url.starts_with("https://")) {
    return Error::invalid(fmt::format("[keystone] auth_url '{}' must be an http:// or https:// URL",
                                      options.auth_url));
  }
  if (options.service_token_file.empty() &&
      (options.username.empty() || options.password.empty() || options.project_name.empty())) {
    return Error::invalid(
        "[keystone] auth_url is set, so kiln needs its own service token: set "
        "service_token_file, or username, password and project_name");
  }
  return std::unique_ptr<KeystoneAuthenticator>(
      new KeystoneAuthenticator(std::move(options), http, clock));
}

imagecache::HttpRequestSpec KeystoneAuthenticator::request(const std::string& url) const {
  imagecache::HttpRequestSpec spec;
  spec.url = url;
  spec.connect_timeout = options_.timeout;
  spec.total_timeout = options_.timeout;
  spec.ca_file = options_.cafile;
  spec.max_body_bytes = 1 << 20;  // a token with its catalog is a few kB
  return spec;
}

Result<std::string> KeystoneAuthenticator::passwordAuth() const {
  json body = {{"auth",
                {{"identity",
                  {{"methods", {"password"}},
                   {"password",
                    {{"user",
                      {{"name", options_.username},
                       {"domain", {{"name", options_.user_domain_name}}},
                       {"password", options_.password}}}}}}},
                 {"scope",
                  {{"project",
                    {{"name", options_.project_name},
                     {"domain", {{"name", options_.project_domain_name}}}}}}}}}};
  auto spec = request(tokens_url_ + "?nocatalog");
  spec.headers.emplace_back("Content-Type", "application/json");
  auto reply = http_.send(spec, "POST", body.dump());
  if (!reply) {
    return Error::unavailable(
        fmt::format("Keystone at '{}' cannot be reached: {}", tokens_url_, reply.error().message));
  }
  if (reply->status != 201) {
    return Error::unavailable(fmt::format(
        "Keystone refused kiln's service credentials (user '{}', project '{}'): HTTP {} {}",
        options_.username, options_.project_name, reply->status, excerpt(reply->body)));
  }
  auto token = reply->header("x-subject-token");
  json doc = json::parse(reply->body, nullptr, false);
  std::optional<std::chrono::system_clock::time_point> expires;
  if (!doc.is_discarded() && doc.is_object() && doc.contains("token") && doc["token"].is_object() &&
      doc["token"].contains("expires_at") && doc["token"]["expires_at"].is_string()) {
    expires = detail::parseKeystoneTime(doc["token"]["expires_at"].get<std::string>());
  }
  if (!token || token->empty() || !expires) {
    return Error::unavailable(
        "Keystone's answer to kiln's password authentication has no token or expiry");
  }
  service_token_ = *token;
  service_token_until_ = *expires - kServiceTokenMargin;
  log::info("Obtained a Keystone service token for user '{}' (valid until {})", options_.username,
            formatUtc(*expires));
  return *token;
}

// Called with service_mutex_ held.
Result<std::string> KeystoneAuthenticator::serviceToken(bool renew) const {
  if (!options_.service_token_file.empty()) {
    // Bounded like every other file kilnd reads: a token is a few hundred bytes.
    auto text = fs::readFile(options_.service_token_file, 64 * 1024);
    std::string token = text ? std::string(strings::trim(*text, " \t\r\n")) : std::string();
    if (token.empty()) {
      return Error::unavailable(
          fmt::format("Cannot read kiln's service token from '{}'", options_.service_token_file));
    }
    return token;
  }
  if (!renew && !service_token_.empty() && clock_.wallNow() < service_token_until_) {
    return service_token_;
  }
  service_token_.clear();
  return passwordAuth();
}

Result<Caller> KeystoneAuthenticator::authenticate(const HttpRequest& request) const {
  auto token = presentedToken(request);
  if (!token) return token.error();
  return validate(*token);
}

Result<Caller> KeystoneAuthenticator::validate(std::string_view token) const {
  if (token.size() > kMaxTokenBytes || !strings::isVisibleAscii(token)) {
    return unauthorized("The token is not valid");
  }
  const detail::TokenDigest digest = detail::sha256(token);
  // The cache lock is never held across a call to Keystone: a cached caller is answered while
  // another caller's validation waits on the network.
  const auto now = clock_.wallNow();
  {
    std::lock_guard lock(cache_mutex_);
    if (auto hit = cache_.find(digest); hit != cache_.end()) {
      if (now < hit->second.until) {
        Caller caller = hit->second.caller;
        caller.keystone_token = std::string(token);
        return caller;
      }
      cache_.erase(hit);
    }
  }

  for (int attempt = 0; attempt < 2; ++attempt) {
    Result<std::string> service = [&] {
      // Renewal is single: concurrent validations wait for the one password authentication.
      std::lock_guard lock(service_mutex_);
      return serviceToken(/*renew=*/attempt > 0);
    }();
    if (!service) {
      log::warn("{}", service.error().message);
      return service.error();
    }
    auto spec = request(tokens_url_ + "?nocatalog");
    spec.headers.emplace_back("X-Auth-Token", *service);
    spec.headers.emplace_back("X-Subject-Token", std::string(token));
    auto reply = http_.get(spec);
    if (!reply) {
      log::warn("Keystone at '{}' cannot be reached: {}", tokens_url_, reply.error().message);
      return Error::unavailable("The identity service (Keystone) cannot be reached; try again");
    }
    if (reply->status == 404) {
      return unauthorized("The token is not valid (unknown to Keystone, revoked or expired)");
    }
    if (reply->status == 401 && attempt == 0 && options_.service_token_file.empty()) {
      continue;  // kiln's own token expired early or was revoked: renew it once
    }
    if (reply->status == 401 || reply->status == 403) {
      log::error(
          "Keystone refuses kiln's service token for token validation (HTTP {}); the service "
          "user needs the service or admin role",
          reply->status);
      return Error::unavailable("The identity service (Keystone) refuses kiln; see kilnd's log");
    }
    if (reply->status != 200 && reply->status != 203) {
      log::warn("Keystone answered HTTP {} to a token validation: {}", reply->status,
                excerpt(reply->body));
      return Error::unavailable("The identity service (Keystone) failed; try again");
    }
    json doc = json::parse(reply->body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("token") ||
        !doc["token"].is_object()) {
      return Error::unavailable("Keystone's token validation answer is not a token document");
    }
    const json& t = doc["token"];
    std::optional<std::chrono::system_clock::time_point> expires;
    if (t.contains("expires_at") && t["expires_at"].is_string()) {
      expires = detail::parseKeystoneTime(t["expires_at"].get<std::string>());
    }
    if (!expires) return Error::unavailable("Keystone's token validation answer has no expiry");
    if (*expires <= now) return unauthorized("The token is not valid (expired)");
    Caller caller;
    if (t.contains("roles") && t["roles"].is_array()) {
      for (const auto& role : t["roles"]) {
        if (role.is_object() && role.contains("name") && role["name"].is_string()) {
          caller.roles.push_back(role["name"].get<std::string>());
        }
      }
    }
    if (t.contains("project") && t["project"].is_object() && t["project"].contains("id") &&
        t["project"]["id"].is_string()) {
      caller.project_id = t["project"]["id"].get<std::string>();
    }
    caller.token_id = detail::tokenId(digest);
    const detail::TokenScope scope = detail::tokenScope(t);
    if (!detail::scopeGrantsPrivilegedRoles(scope, options_)) {
      std::vector<std::string> dropped = detail::dropPrivilegedRoles(caller.roles);
      if (!dropped.empty()) {
        log::info(
            "Keystone token {}: role {} does not count here: the token is scoped to {}, not to "
            "[keystone] admin_project_name or system_scope",
            caller.token_id, fmt::join(dropped, ","), describe(scope));
      }
    }
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kMaxCachedTokens) {
      std::erase_if(cache_, [&](const auto& entry) { return entry.second.until <= now; });
      if (cache_.size() >= kMaxCachedTokens) cache_.clear();
    }
    cache_[digest] = {caller, std::min(now + options_.cache_seconds, *expires)};
    caller.keystone_token = std::string(token);  // on the answer only: the cache keeps no token
    return caller;
  }
  return Error::unavailable("The identity service (Keystone) refuses kiln; see kilnd's log");
}

std::size_t KeystoneAuthenticator::cachedTokens() const {
  std::lock_guard lock(cache_mutex_);
  return cache_.size();
}

}  // namespace kiln::rpc
