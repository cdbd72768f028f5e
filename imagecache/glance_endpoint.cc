#include "imagecache/glance_endpoint.h"

#include <thread>

#include "common/fs.h"
#include "common/strings.h"

namespace kiln::imagecache {
namespace glance {
namespace {

constexpr std::size_t kSnippetMaxChars = 200;

}  // namespace

bool hasControlCharacter(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::string printable(std::string_view s) { return strings::printableExcerpt(s, 140); }

std::string snippet(std::string_view body) {
  if (auto head_end = body.find("</head>"); head_end != std::string_view::npos) {
    body.remove_prefix(head_end + 7);  // the <title> repeats the <h1>
  }
  std::string out;
  bool in_tag = false;
  bool pending_space = false;
  for (char c : body) {
    if (c == '<') {
      in_tag = true;
      continue;
    }
    if (in_tag) {
      if (c == '>') {
        in_tag = false;
        pending_space = true;
      }
      continue;
    }
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      pending_space = true;
      continue;
    }
    if (out.size() >= kSnippetMaxChars) {
      out += "...";
      break;
    }
    if (pending_space && !out.empty()) out += ' ';
    pending_space = false;
    out += c;
  }
  return out;
}

std::string quotedList(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += "'" + item + "'";
  }
  return out;
}

Call Call::read(std::string server, std::string image_id, bool sent_token) {
  Call call;
  call.server = std::move(server);
  call.action = fmt::format("read image '{}'", image_id);
  call.asked = fmt::format("for image '{}'", image_id);
  call.wants_token = call.asked;
  call.image_id = std::move(image_id);
  call.not_found_on_404 = true;
  call.sent_token = sent_token;
  return call;
}

Call Call::change(std::string server, std::string action, std::string image_id, bool sent_token) {
  Call call;
  call.server = std::move(server);
  call.asked = fmt::format("when asked to {}", action);
  call.wants_token = fmt::format("to {}", action);
  call.action = std::move(action);
  call.not_found_on_404 = !image_id.empty();
  call.image_id = std::move(image_id);
  call.sent_token = sent_token;
  call.changes_image = true;
  return call;
}

Failure failureForStatus(long status, std::string_view excerpt, const Call& call) {
  const std::string detail = excerpt.empty() ? std::string() : fmt::format(": {}", excerpt);
  const std::string& server = call.server;
  switch (status) {
    case 401:
      return {Error{ErrorCode::kUnauthorized,
                    call.sent_token
                        ? fmt::format("Glance at '{}' rejected kiln's token {} (HTTP 401); check "
                                      "[glance] token or token_file",
                                      server, call.asked)
                        : fmt::format("Glance at '{}' wants a token {} (HTTP 401); set [glance] "
                                      "token or token_file",
                                      server, call.wants_token)},
              false};
    case 403:
      return {Error{ErrorCode::kForbidden,
                    fmt::format("Glance at '{}' does not let this node {} (HTTP 403){}", server,
                                call.action, detail)},
              false};
    case 404:
      if (!call.not_found_on_404) break;
      return {Error::notFound(
                  fmt::format("Image '{}' was not found in Glance at '{}'", call.image_id, server)),
              false};
    case 400:
      if (!call.changes_image) break;
      return {Error::invalid(fmt::format("Glance at '{}' refused to {} (HTTP 400){}", server,
                                         call.action, detail)),
              false};
    case 409:
      if (!call.changes_image) break;
      return {Error::conflict(fmt::format(
                  "Glance at '{}' refused to {}: the image is not in a state that allows it "
                  "(HTTP 409){}",
                  server, call.action, detail)),
              false};
    case 413:
      if (!call.changes_image) break;
      return {Error{ErrorCode::kTooLarge,
                    fmt::format("Glance at '{}' refused to {}: over its size or quota limits "
                                "(HTTP 413){}",
                                server, call.action, detail)},
              false};
    default:
      break;
  }
  // Overloaded or failing: another server, or the same one later, may answer.
  if (status == 429 || (status >= 500 && status < 600)) {
    return {Error::unavailable(fmt::format("Glance at '{}' answered HTTP {} {}{}", server, status,
                                           call.asked, detail)),
            true};
  }
  return {Error::unavailable(fmt::format("Glance at '{}' answered HTTP {} {}, which kiln does not "
                                         "expect{}",
                                         server, status, call.asked, detail)),
          false};
}

}  // namespace glance

namespace {

constexpr std::size_t kTokenFileMaxBytes = 64 << 10;

}  // namespace

Result<std::unique_ptr<GlanceEndpoint>> GlanceEndpoint::create(GlanceOptions options,
                                                               Sleeper sleep) {
  if (auto v = validateGlanceOptions(options); !v) return std::move(v).error();
  for (auto& server : options.api_servers) {
    while (server.size() > 1 && server.back() == '/') server.pop_back();
  }
  if (!sleep) sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  return std::unique_ptr<GlanceEndpoint>(new GlanceEndpoint(std::move(options), std::move(sleep)));
}

GlanceEndpoint::GlanceEndpoint(GlanceOptions options, Sleeper sleep)
    : options_(std::move(options)), sleep_(std::move(sleep)) {}

Result<HttpRequestSpec> GlanceEndpoint::requestFor(const std::string& url,
                                                   const std::string& token_instead) const {
  HttpRequestSpec spec;
  spec.url = url;
  spec.connect_timeout = options_.connect_timeout;
  spec.low_speed_bytes_per_second = 1;
  spec.low_speed_time = options_.stall_timeout;
  spec.ca_file = options_.ca_file;
  if (!token_instead.empty()) {
    if (glance::hasControlCharacter(token_instead)) {
      return Error{ErrorCode::kUnauthorized, "The caller's token contains a control character"};
    }
    spec.headers.emplace_back("X-Auth-Token", token_instead);
    return spec;
  }
  std::string token = options_.token;
  if (!options_.token_file.empty()) {
    // Read on every request: a token rotated by the operator (or a sidecar) applies at once.
    auto text = fs::readFile(options_.token_file, kTokenFileMaxBytes);
    if (!text) {
      return Error{ErrorCode::kUnauthorized,
                   fmt::format("Cannot read the Glance token file '{}': {}", options_.token_file,
                               text.error().message)};
    }
    std::string_view t = strings::trim(*text);
    if (t.empty()) {
      return Error{ErrorCode::kUnauthorized,
                   fmt::format("The Glance token file '{}' is empty", options_.token_file)};
    }
    if (glance::hasControlCharacter(t)) {
      return Error{
          ErrorCode::kUnauthorized,
          fmt::format("The Glance token file '{}' holds more than one line", options_.token_file)};
    }
    token = std::string(t);
  }
  if (!token.empty()) spec.headers.emplace_back("X-Auth-Token", std::move(token));
  return spec;
}

}  // namespace kiln::imagecache
