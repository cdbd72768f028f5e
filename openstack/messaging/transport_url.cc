#include "openstack/messaging/transport_url.h"

#include <fmt/format.h>

#include <charconv>

#include "common/strings.h"

namespace kiln::openstack::messaging {
namespace {

constexpr std::string_view kScheme = "rabbit://";
constexpr std::string_view kKombuScheme = "kombu://";  // oslo's old alias of the rabbit driver

Result<std::string> percentDecode(std::string_view text, std::string_view what) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) {
      return Error::invalid(
          fmt::format("transport_url: the {} has a '%' without two hex digits", what));
    }
    const int hi = strings::hexDigitValue(text[i + 1]);
    const int lo = strings::hexDigitValue(text[i + 2]);
    if (hi < 0 || lo < 0) {
      return Error::invalid(
          fmt::format("transport_url: the {} has a '%' without two hex digits", what));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

Result<BrokerAddress> parseBroker(std::string_view part, bool ssl) {
  BrokerAddress broker;
  broker.port = ssl ? 5671 : 5672;
  // The password may hold '@' only percent-encoded, so the last '@' ends the credentials.
  if (const auto at = part.rfind('@'); at != std::string_view::npos) {
    const std::string_view credentials = part.substr(0, at);
    part.remove_prefix(at + 1);
    const auto colon = credentials.find(':');
    auto user = percentDecode(credentials.substr(0, colon), "user name");
    if (!user) return user.error();
    broker.username = std::move(*user);
    if (colon != std::string_view::npos) {
      auto password = percentDecode(credentials.substr(colon + 1), "password");
      if (!password) return password.error();
      broker.password = std::move(*password);
    }
  }
  std::string_view port_text;
  if (part.starts_with('[')) {
    const auto close = part.find(']');
    if (close == std::string_view::npos) {
      return Error::invalid("transport_url: an IPv6 broker address lacks its closing ']'");
    }
    broker.host = std::string(part.substr(1, close - 1));
    const std::string_view rest = part.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':')) {
        return Error::invalid("transport_url: text after an IPv6 broker address is not ':PORT'");
      }
      port_text = rest.substr(1);
    }
  } else {
    const auto colon = part.find(':');
    broker.host = std::string(part.substr(0, colon));
    if (colon != std::string_view::npos) port_text = part.substr(colon + 1);
  }
  if (broker.host.empty()) return Error::invalid("transport_url: a broker has no host");
  for (char c : broker.host) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' || c == ':';
    if (!allowed) {
      return Error::invalid(
          fmt::format("transport_url: broker host '{}' is not a host name or address",
                      strings::printableExcerpt(broker.host, 64)));
    }
  }
  if (!port_text.empty()) {
    unsigned port = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return Error::invalid(fmt::format("transport_url: broker port '{}' is not a TCP port",
                                        strings::printableExcerpt(port_text, 16)));
    }
    broker.port = static_cast<std::uint16_t>(port);
  }
  return broker;
}

}  // namespace

Result<TransportUrl> parseTransportUrl(std::string_view url) {
  std::string_view rest = url;
  if (rest.starts_with(kScheme)) {
    rest.remove_prefix(kScheme.size());
  } else if (rest.starts_with(kKombuScheme)) {
    rest.remove_prefix(kKombuScheme.size());
  } else {
    const auto scheme_end = url.find("://");
    return Error::invalid(fmt::format(
        "transport_url: driver '{}' is not supported; kiln speaks oslo.messaging's rabbit driver "
        "(rabbit://USER:PASS@HOST:PORT/VHOST)",
        strings::printableExcerpt(url.substr(0, scheme_end), 32)));
  }
  TransportUrl result;
  std::string_view query;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  for (std::string_view option : [&] {
         std::vector<std::string_view> options;
         while (!query.empty()) {
           const auto amp = query.find('&');
           options.push_back(query.substr(0, amp));
           query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
         }
         return options;
       }()) {
    if (option == "ssl=1" || option == "ssl=true" || option == "ssl=True") result.ssl = true;
  }
  std::string_view hosts = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    hosts = rest.substr(0, slash);
    auto vhost = percentDecode(rest.substr(slash + 1), "virtual host");
    if (!vhost) return vhost.error();
    if (!vhost->empty()) result.virtual_host = std::move(*vhost);
  }
  while (!hosts.empty()) {
    const auto comma = hosts.find(',');
    auto broker = parseBroker(hosts.substr(0, comma), result.ssl);
    if (!broker) return broker.error();
    result.brokers.push_back(std::move(*broker));
    hosts = comma == std::string_view::npos ? std::string_view() : hosts.substr(comma + 1);
  }
  if (result.brokers.empty()) return Error::invalid("transport_url names no broker host");
  return result;
}

std::string redactTransportUrl(std::string_view url) {
  std::string out;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "(not a URL)";
  out.append(url.substr(0, scheme_end + 3));
  std::string_view rest = url.substr(scheme_end + 3);
  const auto path = rest.find_first_of("/?");
  std::string_view hosts = rest.substr(0, path);
  const std::string_view tail =
      path == std::string_view::npos ? std::string_view() : rest.substr(path);
  bool first = true;
  while (!hosts.empty() || first) {
    const auto comma = hosts.find(',');
    std::string_view part = hosts.substr(0, comma);
    if (!first) out.push_back(',');
    first = false;
    if (const auto at = part.rfind('@'); at != std::string_view::npos) {
      const std::string_view credentials = part.substr(0, at);
      const auto colon = credentials.find(':');
      out.append(credentials.substr(0, colon));
      if (colon != std::string_view::npos) out.append(":***");
      out.append(part.substr(at));
    } else {
      out.append(part);
    }
    if (comma == std::string_view::npos) break;
    hosts = hosts.substr(comma + 1);
  }
  out.append(tail);
  return out;
}

std::string describeBroker(const BrokerAddress& broker) {
  if (broker.host.find(':') != std::string::npos) {
    return fmt::format("[{}]:{}", broker.host, broker.port);
  }
  return fmt::format("{}:{}", broker.host, broker.port);
}

}  // namespace kiln::openstack::messaging
