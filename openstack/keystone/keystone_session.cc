#include "openstack/keystone/keystone_session.h"

#include <time.h>

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/strings.h"

namespace kiln::openstack::keystone {

using nlohmann::json;

namespace {

constexpr std::array<std::string_view, 3> kInterfaces = {"public", "internal", "admin"};
// A token with its catalog is a few kB; a catalog of a large cloud some tens.
constexpr std::size_t kTokenAnswerMaxBytes = 1 << 20;
// Replaced tokens kept for scrubbing: enough for the ones that may still be in flight.
constexpr std::size_t kPastTokensKept = 4;
constexpr std::size_t kQuotedChars = 300;

bool isHttpUrl(std::string_view url) {
  return url.starts_with("http://") || url.starts_with("https://");
}

std::string withoutTrailingSlashes(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// `text` with every occurrence of each secret replaced, then made safe to quote.
std::string scrubbed(std::string_view text, const std::vector<std::string>& secrets) {
  std::string out(text);
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    for (std::size_t pos = out.find(secret); pos != std::string::npos;
         pos = out.find(secret, pos + 3)) {
      out.replace(pos, secret.size(), "***");
    }
  }
  return strings::printableExcerpt(out, kQuotedChars);
}

// Keystone's own words from an error answer ({"error": {"message": ...}}), else the body.
std::string keystoneMessage(const std::string& body) {
  json doc = json::parse(body, nullptr, false);
  if (doc.is_object() && doc.contains("error") && doc["error"].is_object() &&
      doc["error"].contains("message") && doc["error"]["message"].is_string()) {
    return doc["error"]["message"].get<std::string>();
  }
  return body;
}

// {"id": ...} when an id is given, else {"name": ...}: Keystone takes either.
json domainRef(const std::string& id, const std::string& name) {
  if (!id.empty()) return {{"id", id}};
  return {{"name", name}};
}

std::string describeDomain(const std::string& id, const std::string& name) {
  return id.empty() ? fmt::format("domain '{}'", name) : fmt::format("domain id '{}'", id);
}

const std::string* stringMember(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return nullptr;
  return it->get_ptr<const std::string*>();
}

}  // namespace

namespace detail {

std::optional<std::chrono::system_clock::time_point> parseExpiresAt(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS, an optional fraction, then Z, +00:00 or nothing: Keystone writes UTC.
  if (text.size() < 19 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':') {
    return std::nullopt;
  }
  auto digits = [&](std::size_t pos, std::size_t len) -> std::optional<int> {
    int value = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (text[i] < '0' || text[i] > '9') return std::nullopt;
      value = value * 10 + (text[i] - '0');
    }
    return value;
  };
  const auto year = digits(0, 4), month = digits(5, 2), day = digits(8, 2), hour = digits(11, 2),
             minute = digits(14, 2), second = digits(17, 2);
  if (!year || !month || !day || !hour || !minute || !second) return std::nullopt;
  if (*month < 1 || *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 ||
      *second > 60) {
    return std::nullopt;
  }
  std::string_view rest = text.substr(19);
  if (rest.starts_with('.')) {
    rest.remove_prefix(1);
    while (!rest.empty() && rest.front() >= '0' && rest.front() <= '9') rest.remove_prefix(1);
  }
  if (!rest.empty() && rest != "Z" && rest != "+00:00") return std::nullopt;
  struct tm tm {};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *month - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *minute;
  tm.tm_sec = *second;
  const time_t t = timegm(&tm);
  if (t == static_cast<time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace detail

KeystoneSession::KeystoneSession(KeystoneAuthOptions options, imagecache::HttpClient& http,
                                 const Clock& clock)
    : options_(std::move(options)), http_(http), clock_(clock) {
  std::string base = withoutTrailingSlashes(options_.auth_url);
  if (base.ends_with("/v3")) base.resize(base.size() - 3);
  tokens_url_ = base + "/v3/auth/tokens";
  options_.endpoint_override = withoutTrailingSlashes(options_.endpoint_override);
}

Result<std::unique_ptr<KeystoneSession>> KeystoneSession::create(KeystoneAuthOptions options,
                                                                 imagecache::HttpClient& http,
                                                                 const Clock& clock) {
  if (options.auth_type != "password") {
    return Error::invalid(fmt::format(
        "auth_type '{}' is not supported: kiln authenticates to Keystone with auth_type = "
        "password only",
        strings::printableExcerpt(options.auth_type, 64)));
  }
  if (!isHttpUrl(options.auth_url)) {
    return Error::invalid(fmt::format("auth_url '{}' must be an http:// or https:// URL",
                                      strings::printableExcerpt(options.auth_url, 200)));
  }
  if (withoutTrailingSlashes(options.auth_url).ends_with("/v2.0")) {
    return Error::invalid(
        fmt::format("auth_url '{}' names Keystone's v2.0 API; kiln speaks Identity v3 only",
                    strings::printableExcerpt(options.auth_url, 200)));
  }
  for (const auto& [name, value] :
       {std::pair<std::string_view, const std::string&>{"username", options.username},
        {"password", options.password},
        {"project_name", options.project_name}}) {
    if (value.empty()) {
      return Error::invalid(fmt::format("{} is not set; auth_type = password needs it", name));
    }
  }
  if (options.user_domain_id.empty() && options.user_domain_name.empty()) {
    return Error::invalid(
        "Neither user_domain_name nor user_domain_id is set; Keystone needs the user's domain");
  }
  if (options.project_domain_id.empty() && options.project_domain_name.empty()) {
    return Error::invalid(
        "Neither project_domain_name nor project_domain_id is set; Keystone needs the project's "
        "domain");
  }
  if (options.valid_interfaces.empty()) {
    return Error::invalid(
        "valid_interfaces is empty; name at least one of public, internal, admin");
  }
  for (const std::string& interface : options.valid_interfaces) {
    if (std::find(kInterfaces.begin(), kInterfaces.end(), interface) == kInterfaces.end()) {
      return Error::invalid(
          fmt::format("'{}' is not a valid value for valid_interfaces; valid values are public, "
                      "internal or admin",
                      strings::printableExcerpt(interface, 64)));
    }
  }
  if (!options.endpoint_override.empty() && !isHttpUrl(options.endpoint_override)) {
    return Error::invalid(fmt::format("endpoint_override '{}' must be an http:// or https:// URL",
                                      strings::printableExcerpt(options.endpoint_override, 200)));
  }
  if (options.timeout.count() < 0) {
    return Error::invalid(fmt::format("timeout {} is negative", options.timeout.count()));
  }
  return std::unique_ptr<KeystoneSession>(new KeystoneSession(std::move(options), http, clock));
}

imagecache::HttpRequestSpec KeystoneSession::specFor(std::string url) const {
  imagecache::HttpRequestSpec spec;
  spec.url = std::move(url);
  if (options_.timeout.count() > 0) {
    spec.connect_timeout =
        std::min<std::chrono::milliseconds>(spec.connect_timeout, options_.timeout);
    spec.total_timeout = options_.timeout;
  }
  spec.ca_file = options_.cafile;
  return spec;
}

std::string KeystoneSession::scrub(std::string_view text) const {
  std::vector<std::string> secrets = past_tokens_;
  secrets.push_back(options_.password);
  secrets.push_back(auth_.token);
  return scrubbed(text, secrets);
}

// Called with auth_mutex_ held.
Result<KeystoneSession::Auth> KeystoneSession::authenticate() {
  json user = {{"name", options_.username}, {"password", options_.password}};
  user["domain"] = domainRef(options_.user_domain_id, options_.user_domain_name);
  json body;
  body["auth"]["identity"]["methods"] = json::array({"password"});
  body["auth"]["identity"]["password"]["user"] = std::move(user);
  body["auth"]["scope"]["project"] = {
      {"name", options_.project_name},
      {"domain", domainRef(options_.project_domain_id, options_.project_domain_name)}};

  const std::string who = fmt::format(
      "user '{}' ({}), project '{}' ({})", options_.username,
      describeDomain(options_.user_domain_id, options_.user_domain_name), options_.project_name,
      describeDomain(options_.project_domain_id, options_.project_domain_name));
  auto spec = specFor(tokens_url_);
  spec.max_body_bytes = kTokenAnswerMaxBytes;
  spec.headers.emplace_back("Content-Type", "application/json");
  spec.headers.emplace_back("Accept", "application/json");
  auto reply = http_.send(spec, "POST", body.dump());
  if (!reply) {
    return Error{
        reply.error().code == ErrorCode::kTooLarge ? ErrorCode::kUnavailable : reply.error().code,
        fmt::format("Keystone at '{}' cannot be reached: {}", tokens_url_,
                    scrub(reply.error().message))};
  }
  if (reply->status == 401 || reply->status == 403) {
    return Error{ErrorCode::kUnauthorized,
                 fmt::format("Keystone at '{}' refused kiln's credentials for {}: HTTP {}: {}",
                             tokens_url_, who, reply->status, scrub(keystoneMessage(reply->body)))};
  }
  if (reply->status != 201) {
    return Error::unavailable(
        fmt::format("Keystone at '{}' answered HTTP {} to the password authentication of {}: {}",
                    tokens_url_, reply->status, who, scrub(keystoneMessage(reply->body))));
  }

  Auth auth;
  if (auto token = reply->header("x-subject-token"); token && strings::isVisibleAscii(*token)) {
    auth.token = *token;
  }
  json doc = json::parse(reply->body, nullptr, false);
  const json* token_doc = doc.is_object() && doc.contains("token") ? &doc["token"] : nullptr;
  std::optional<std::chrono::system_clock::time_point> expires;
  if (token_doc != nullptr) {
    if (const std::string* text = stringMember(*token_doc, "expires_at")) {
      expires = detail::parseExpiresAt(*text);
    }
  }
  if (auth.token.empty() || !expires) {
    return Error::unavailable(fmt::format(
        "Keystone at '{}' answered the password authentication of {} without a token or its "
        "expiry",
        tokens_url_, who));
  }
  const auto now = clock_.wallNow();
  if (*expires <= now) {
    return Error::unavailable(fmt::format(
        "Keystone at '{}' issued a token that expired already ({}; it is {} here): is this "
        "host's clock right?",
        tokens_url_, formatUtc(*expires), formatUtc(now)));
  }
  auth.expires_at = *expires;
  // A token that lives less than twice the margin is renewed half-way instead, not at each use.
  const auto lifetime = *expires - now;
  auth.renew_at =
      *expires - std::min<std::chrono::system_clock::duration>(kRenewBeforeExpiry, lifetime / 2);

  if (token_doc->contains("catalog") && (*token_doc)["catalog"].is_array()) {
    for (const json& service : (*token_doc)["catalog"]) {
      const std::string* type = stringMember(service, "type");
      if (type == nullptr || !service.contains("endpoints") || !service["endpoints"].is_array()) {
        continue;
      }
      for (const json& endpoint : service["endpoints"]) {
        const std::string* interface = stringMember(endpoint, "interface");
        const std::string* url = stringMember(endpoint, "url");
        if (interface == nullptr || url == nullptr) continue;
        const std::string* region = stringMember(endpoint, "region_id");
        if (region == nullptr || region->empty()) region = stringMember(endpoint, "region");
        auth.catalog.push_back(
            {*type, *interface, region != nullptr ? *region : "", withoutTrailingSlashes(*url)});
      }
    }
  }
  log::info(
      "Authenticated to Keystone at '{}' as {}; the token is valid until {}, the catalog "
      "lists {} endpoint(s)",
      tokens_url_, who, formatUtc(*expires), auth.catalog.size());
  return auth;
}

Result<KeystoneSession::Auth> KeystoneSession::currentAuth() {
  std::lock_guard lock(auth_mutex_);
  if (!auth_.token.empty() && clock_.wallNow() < auth_.renew_at) return auth_;
  auto fresh = authenticate();
  if (!fresh) return fresh.error();
  ++authentications_;
  if (!auth_.token.empty()) {
    past_tokens_.push_back(std::move(auth_.token));
    if (past_tokens_.size() > kPastTokensKept) past_tokens_.erase(past_tokens_.begin());
  }
  auth_ = std::move(*fresh);
  return auth_;
}

Result<std::string> KeystoneSession::token() {
  auto auth = currentAuth();
  if (!auth) return auth.error();
  return std::move(auth->token);
}

void KeystoneSession::invalidate(const std::string& token) {
  std::lock_guard lock(auth_mutex_);
  if (!token.empty() && auth_.token == token) auth_.renew_at = {};
}

std::size_t KeystoneSession::authentications() const {
  std::lock_guard lock(auth_mutex_);
  return authentications_;
}

Result<std::string> KeystoneSession::endpointIn(const Auth& auth,
                                                std::string_view service_type) const {
  if (!options_.endpoint_override.empty()) return options_.endpoint_override;
  for (const std::string& interface : options_.valid_interfaces) {
    for (const CatalogEndpoint& endpoint : auth.catalog) {
      if (endpoint.service_type == service_type && endpoint.interface == interface &&
          (options_.region_name.empty() || endpoint.region == options_.region_name)) {
        return endpoint.url;
      }
    }
  }
  std::vector<std::string> listed;
  for (const CatalogEndpoint& endpoint : auth.catalog) {
    if (endpoint.service_type == service_type) {
      listed.push_back(fmt::format("{} in region '{}'", endpoint.interface, endpoint.region));
    }
  }
  const std::string where =
      options_.region_name.empty() ? "" : fmt::format(" in region '{}'", options_.region_name);
  return Error::notFound(fmt::format(
      "Keystone's catalog has no '{}' endpoint with interface {}{} (it lists {}); set "
      "valid_interfaces, region_name or endpoint_override",
      strings::printableExcerpt(service_type, 64), fmt::join(options_.valid_interfaces, " or "),
      where, listed.empty() ? std::string("none") : fmt::format("{}", fmt::join(listed, ", "))));
}

Result<std::string> KeystoneSession::endpoint(std::string_view service_type) {
  auto auth = currentAuth();
  if (!auth) return auth.error();
  return endpointIn(*auth, service_type);
}

Result<imagecache::HttpResult> KeystoneSession::request(const ServiceRequest& request) {
  for (int attempt = 0;; ++attempt) {
    auto auth = currentAuth();
    if (!auth) return auth.error();
    auto base = endpointIn(*auth, request.service_type);
    if (!base) return base.error();
    auto spec = specFor(*base + request.path);
    spec.max_body_bytes = request.max_body_bytes;
    spec.headers = request.headers;
    spec.headers.emplace_back("X-Auth-Token", auth->token);
    auto reply =
        request.method == "GET" ? http_.get(spec) : http_.send(spec, request.method, request.body);
    if (!reply) {
      std::string message;
      {
        std::lock_guard lock(auth_mutex_);
        message = scrub(reply.error().message);
      }
      return Error{
          reply.error().code,
          fmt::format("The {} service at '{}' cannot be reached: {}",
                      strings::printableExcerpt(request.service_type, 64), *base, message)};
    }
    if (reply->status == 401 && attempt == 0) {
      // Revoked, or signed with a key Keystone has rotated out: one new token, one more try.
      log::info("The {} service refused kiln's Keystone token (HTTP 401); fetching a new one",
                strings::printableExcerpt(request.service_type, 64));
      invalidate(auth->token);
      continue;
    }
    return reply;
  }
}

}  // namespace kiln::openstack::keystone
