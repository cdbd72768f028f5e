#include "agent/rpc/http_messages.h"
#include "common/strings.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>
#include <boost/beast/http/field.hpp>

namespace kiln::rpc::httpd {

namespace http = boost::beast::http;

std::string_view toStd(boost::beast::string_view s) { return {s.data(), s.size()}; }

}  // namespace kiln::rpc::httpd

namespace kiln::rpc {

std::string printableForLog(std::string_view s) {
  constexpr std::size_t kMaxLogged = 256;
  std::string out;
  for (char c : s.substr(0, kMaxLogged)) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7f || c == '\\') {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  if (s.size() > kMaxLogged) out += "...";
  return out;
}

}  // namespace kiln::rpc

namespace kiln::rpc::httpd {

std::optional<std::string> percentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int high = strings::hexDigitValue(s[i + 1]);
    int low = strings::hexDigitValue(s[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

bool isSafeHeaderValue(std::string_view value) {
  return std::none_of(value.begin(), value.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return (byte < 0x20 && c != '\t') || byte == 0x7f;
  });
}

Result<HttpRequest> toHttpRequest(BeastRequest& message) {
  std::string_view target = toStd(message.target());
  std::size_t question = target.find('?');
  std::string_view raw_path = target.substr(0, question);
  if (raw_path.empty() || raw_path.front() != '/') {
    return Error::invalid("The request target must be a path starting with '/'");
  }
  std::optional<std::string> path = percentDecode(raw_path);
  if (!path) return Error::invalid("The request path has an invalid percent escape");
  if (path->find('\0') != std::string::npos) {
    return Error::invalid("The request path contains a NUL byte");
  }
  // Two Authorization (or X-Auth-Token) headers could be read differently by a proxy and by us;
  // refuse the doubt.
  if (message.count(http::field::authorization) > 1) {
    return Error::invalid("The request has more than one Authorization header");
  }
  if (message.count("X-Auth-Token") > 1) {
    return Error::invalid("The request has more than one X-Auth-Token header");
  }
  HttpRequest request;
  request.method = std::string(toStd(message.method_string()));
  request.path = std::move(*path);
  if (question != std::string_view::npos) request.query = std::string(target.substr(question + 1));
  request.body = std::move(message.body());
  request.authorization = std::string(toStd(message[http::field::authorization]));
  request.x_auth_token = std::string(toStd(message["X-Auth-Token"]));
  request.content_type = std::string(toStd(message[http::field::content_type]));
  return request;
}

namespace {

// RFC 9110's token: what a header name may consist of.
bool isToken(std::string_view name) {
  constexpr std::string_view kPunctuation = "!#$%&'*+-.^_`|~";
  return !name.empty() && std::all_of(name.begin(), name.end(), [&](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           kPunctuation.find(c) != std::string_view::npos;
  });
}

// The server frames every message itself (toBeastResponse): a handler's copy of these could
// contradict it, and a second Content-Length is a request-smuggling gift to a proxy.
bool isServerOwned(std::string_view name) {
  for (std::string_view owned :
       {"content-type", "content-length", "transfer-encoding", "connection"}) {
    if (strings::equalsIgnoringCase(name, owned)) return true;
  }
  return false;
}

}  // namespace

bool isSendable(const HttpResponse& response) {
  if (response.status < 200 || response.status > 599) return false;
  if (!isSafeHeaderValue(response.content_type)) return false;
  return std::all_of(response.headers.begin(), response.headers.end(), [](const auto& header) {
    return isToken(header.first) && !isServerOwned(header.first) &&
           isSafeHeaderValue(header.second);
  });
}

BeastResponse toBeastResponse(HttpResponse response, bool keep_alive, bool head, unsigned version) {
  BeastResponse out;
  out.version(version);
  out.result(response.status);
  out.set(http::field::server, "kiln");
  if (!response.content_type.empty()) out.set(http::field::content_type, response.content_type);
  for (auto& [name, value] : response.headers) out.insert(name, value);
  bool no_content = response.status == 204 || response.status == 304;
  if (!no_content) out.body() = std::move(response.body);
  out.keep_alive(keep_alive);
  out.prepare_payload();
  if (response.status == 204) out.erase(http::field::content_length);
  if (head) out.body().clear();
  return out;
}

}  // namespace kiln::rpc::httpd
