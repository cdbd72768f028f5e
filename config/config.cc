#include "config/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <charconv>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "common/strings.h"

namespace kiln::config {
namespace po = boost::program_options;

namespace {

// "libvirt.virt_type" -> "[libvirt] virt_type", the form operators know from nova.conf.
std::string displayName(std::string_view key) {
  auto dot = key.find('.');
  if (dot == std::string_view::npos) return std::string(key);
  return fmt::format("[{}] {}", key.substr(0, dot), key.substr(dot + 1));
}

Error invalidValue(std::string_view key, std::string_view value, std::string_view why) {
  return Error::invalid(fmt::format("Invalid value '{}' for {}: {}", value, displayName(key), why));
}

template <typename Int>
Result<Int> parseInt(std::string_view key, std::string_view value, Int min, Int max) {
  std::uint64_t parsed = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
  if (ec != std::errc() || end != value.data() + value.size() || value.empty()) {
    return invalidValue(key, value, "must be a whole number");
  }
  if (parsed < static_cast<std::uint64_t>(min) || parsed > static_cast<std::uint64_t>(max)) {
    return invalidValue(key, value, fmt::format("must be between {} and {}", min, max));
  }
  return static_cast<Int>(parsed);
}

Result<void> requireAbsolutePath(std::string_view key, const std::string& value) {
  if (value.empty() || value.front() != '/')
    return invalidValue(key, value, "must be an absolute path");
  if (value.find('\0') != std::string::npos) return invalidValue(key, value, "contains a NUL byte");
  return success();
}

bool printableToken(std::string_view s) {
  return !s.empty() && s.size() <= 255 && strings::isVisibleAscii(s);
}

// "127.0.0.1:8790", "[::1]:8790" or "0.0.0.0:80"; empty turns the TCP listener off.
Result<void> parseListen(std::string_view key, const std::string& value, ApiSection& api) {
  if (value.empty()) {
    api.listen_host.clear();
    return success();
  }
  std::string host;
  std::string_view port_text;
  if (!value.empty() && value.front() == '[') {
    auto close = value.find(']');
    if (close == std::string::npos || close + 1 >= value.size() || value[close + 1] != ':') {
      return invalidValue(key, value, "must be HOST:PORT, with an IPv6 host in brackets");
    }
    host = value.substr(1, close - 1);
    port_text = std::string_view(value).substr(close + 2);
  } else {
    auto colon = value.rfind(':');
    if (colon == std::string::npos || value.find(':') != colon) {
      return invalidValue(key, value, "must be HOST:PORT, with an IPv6 host in brackets");
    }
    host = value.substr(0, colon);
    port_text = std::string_view(value).substr(colon + 1);
  }
  if (host.empty()) return invalidValue(key, value, "the host part is empty");
  auto port = parseInt<std::uint16_t>(key, port_text, 1, 65535);
  if (!port) return port.error();
  api.listen_host = host;
  api.listen_port = *port;
  return success();
}

Result<bool> parseBool(std::string_view key, const std::string& value) {
  const std::string v = strings::asciiLower(value);
  if (v == "true" || v == "yes" || v == "on" || v == "1") return true;
  if (v == "false" || v == "no" || v == "off" || v == "0") return false;
  return invalidValue(key, value, "must be true or false");
}

// nova.conf lists: comma-separated, blanks around items ignored, empty items dropped.
std::vector<std::string> parseList(const std::string& value) {
  std::vector<std::string> items;
  std::string item;
  auto flush = [&] {
    if (auto trimmed = strings::trim(item, " \t"); !trimmed.empty()) items.emplace_back(trimmed);
    item.clear();
  };
  for (char c : value) {
    if (c == ',') {
      flush();
    } else {
      item += c;
    }
  }
  flush();
  return items;
}

using Setter =
    std::function<Result<void>(const std::string& key, const std::string& value, KilnConfig& cfg)>;

const std::map<std::string, Setter>& optionTable() {
  static const std::map<std::string, Setter> table = {
      {"DEFAULT.state_path",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.defaults.state_path = v;
         return success();
       }},
      {"DEFAULT.host",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty() && !printableToken(v)) {
           return invalidValue(k, v, "must be printable ASCII without spaces, at most 255 bytes");
         }
         c.defaults.host = v;
         return success();
       }},
      {"DEFAULT.availability_zone",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!printableToken(v)) {
           return invalidValue(k, v, "must be printable ASCII without spaces, at most 255 bytes");
         }
         c.defaults.availability_zone = v;
         return success();
       }},
      {"DEFAULT.flavors_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.defaults.flavors_file = v;
         return success();
       }},
      {"DEFAULT.log_level",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (v != "debug" && v != "info" && v != "warning" && v != "error") {
           return invalidValue(k, v, "must be one of debug, info, warning, error");
         }
         c.defaults.log_level = v;
         return success();
       }},
      {"DEFAULT.launch_workers",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 64);
         if (!n) return n.error();
         c.defaults.launch_workers = *n;
         return success();
       }},
      {"api.listen",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> { return parseListen(k, v, c.api); }},
      {"api.token_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.api.token_file = v;
         return success();
       }},
      {"api.max_body_bytes",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<std::uint64_t>(k, v, 1024, 64ULL * 1024 * 1024);
         if (!n) return n.error();
         c.api.max_body_bytes = *n;
         return success();
       }},
      {"api.max_header_bytes",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<std::uint64_t>(k, v, 1024, 1024 * 1024);
         if (!n) return n.error();
         c.api.max_header_bytes = *n;
         return success();
       }},
      {"api.client_timeout",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 3600);
         if (!n) return n.error();
         c.api.client_timeout = *n;
         return success();
       }},
      {"api.max_connections",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 65536);
         if (!n) return n.error();
         c.api.max_connections = *n;
         return success();
       }},
      {"api.max_connections_per_peer",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 65536);
         if (!n) return n.error();
         c.api.max_connections_per_peer = *n;
         return success();
       }},
      {"api.cert_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.api.cert_file = v;
         return success();
       }},
      {"api.key_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.api.key_file = v;
         return success();
       }},
      {"api.ca_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.api.ca_file = v;
         return success();
       }},
      {"api.allow_insecure_http",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto b = parseBool(k, v);
         if (!b) return b.error();
         c.api.allow_insecure_http = *b;
         return success();
       }},
      {"api.listen_unix_socket",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
           // sockaddr_un holds 108 bytes with the terminating NUL.
           if (v.size() > 107) return invalidValue(k, v, "must be at most 107 bytes long");
         }
         c.api.listen_unix_socket = v;
         return success();
       }},
      {"api.unix_socket_mode",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         unsigned mode = 0;
         auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), mode, 8);
         if (v.empty() || ec != std::errc() || end != v.data() + v.size() || mode > 0777) {
           return invalidValue(k, v, "must be an octal file mode such as 0660");
         }
         c.api.unix_socket_mode = mode;
         return success();
       }},
      {"api.unix_socket_group",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty() && !printableToken(v)) return invalidValue(k, v, "must be a group name");
         c.api.unix_socket_group = v;
         return success();
       }},
      {"libvirt.uri",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (v.empty() || v.find("://") == std::string::npos) {
           return invalidValue(k, v, "must be a libvirt URI such as qemu:///system");
         }
         c.libvirt.uri = v;
         return success();
       }},
      {"libvirt.virt_type",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (v != "kvm" && v != "qemu") return invalidValue(k, v, "must be 'kvm' or 'qemu'");
         c.libvirt.virt_type = v;
         return success();
       }},
      {"libvirt.hw_machine_type",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!printableToken(v))
           return invalidValue(k, v, "must be a machine type such as 'pc' or 'q35'");
         c.libvirt.hw_machine_type = v;
         return success();
       }},
      {"libvirt.cpu_mode",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty() && v != "host-model" && v != "host-passthrough" && v != "none") {
           return invalidValue(k, v, "must be empty, 'host-model', 'host-passthrough' or 'none'");
         }
         c.libvirt.cpu_mode = v;
         return success();
       }},
      {"libvirt.keepalive_interval",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 300);
         if (!n) return n.error();
         c.libvirt.keepalive_interval = *n;
         return success();
       }},
      {"libvirt.keepalive_count",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 100);
         if (!n) return n.error();
         c.libvirt.keepalive_count = *n;
         return success();
       }},
      {"DEFAULT.force_raw_images",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto b = parseBool(k, v);
         if (!b) return b.error();
         c.defaults.force_raw_images = *b;
         return success();
       }},
      {"DEFAULT.use_cow_images",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto b = parseBool(k, v);
         if (!b) return b.error();
         c.defaults.use_cow_images = *b;
         return success();
       }},
      {"DEFAULT.shutdown_timeout",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 0, 3600);
         if (!n) return n.error();
         c.defaults.shutdown_timeout = *n;
         return success();
       }},
      {"libvirt.uefi_loader",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.libvirt.uefi_loader = v;
         return success();
       }},
      {"libvirt.uefi_nvram_template",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.libvirt.uefi_nvram_template = v;
         return success();
       }},
      {"libvirt.wait_soft_reboot_seconds",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 0, 3600);
         if (!n) return n.error();
         c.libvirt.wait_soft_reboot_seconds = *n;
         return success();
       }},
      {"DEFAULT.my_block_storage_ip",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty() && !printableToken(v)) return invalidValue(k, v, "must be an IP address");
         c.defaults.my_block_storage_ip = v;
         return success();
       }},
      {"libvirt.iscsi_connector",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (v != "native" && v != "kernel")
           return invalidValue(k, v, "must be 'native' or 'kernel'");
         c.libvirt.iscsi_connector = v;
         return success();
       }},
      {"libvirt.volume_device_dir",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.libvirt.volume_device_dir = v;
         return success();
       }},
      {"libvirt.ephemeral_clear",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (v != "none" && v != "discard" && v != "zero")
           return invalidValue(k, v, "must be 'none', 'discard' or 'zero'");
         c.libvirt.ephemeral_clear = v;
         return success();
       }},
      {"ephemeral_storage_encryption.enabled",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto b = parseBool(k, v);
         if (!b) return b.error();
         c.ephemeral_storage_encryption.enabled = *b;
         return success();
       }},
      {"ephemeral_storage_encryption.cipher",
       [](auto&, auto& v, KilnConfig& c) -> Result<void> {
         // Checked with key_size once both are known.
         c.ephemeral_storage_encryption.cipher = v;
         return success();
       }},
      {"ephemeral_storage_encryption.key_size",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 128, 512);
         if (!n) return n.error();
         c.ephemeral_storage_encryption.key_size = *n;
         return success();
       }},
      {"glance.api_servers",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto servers = parseList(v);
         for (const auto& s : servers) {
           if (!s.starts_with("http://") && !s.starts_with("https://")) {
             return invalidValue(k, v, "each server must be an http:// or https:// URL");
           }
         }
         c.glance.api_servers = servers;
         return success();
       }},
      {"glance.num_retries",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 0, 100);
         if (!n) return n.error();
         c.glance.num_retries = *n;
         return success();
       }},
      {"glance.connect_timeout",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 3600);
         if (!n) return n.error();
         c.glance.connect_timeout = *n;
         return success();
       }},
      {"glance.transfer_timeout",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 86400);
         if (!n) return n.error();
         c.glance.transfer_timeout = *n;
         return success();
       }},
      {"glance.token",
       [](auto&, auto& v, KilnConfig& c) -> Result<void> {
         c.glance.token = v;
         return success();
       }},
      {"glance.token_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.glance.token_file = v;
         return success();
       }},
      {"glance.cafile",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.glance.cafile = v;
         return success();
       }},
      {"glance.allowed_direct_url_schemes",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto schemes = parseList(v);
         for (const auto& s : schemes) {
           if (s != "file")
             return invalidValue(k, v, "the only scheme kiln reads directly is 'file'");
         }
         c.glance.allowed_direct_url_schemes = schemes;
         return success();
       }},
      {"image_file_url.filesystems",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto dirs = parseList(v);
         for (const auto& d : dirs) {
           if (auto r = requireAbsolutePath(k, d); !r) return r;
         }
         c.image_file_url.filesystems = dirs;
         return success();
       }},
      {"image_cache.manager_interval",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (v == "-1") {
           c.image_cache.manager_interval = -1;
           return success();
         }
         auto n = parseInt<unsigned>(k, v, 0, 7 * 86400);
         if (!n) return invalidValue(k, v, "must be -1 (never), 0 (every 60 s) or seconds");
         c.image_cache.manager_interval = static_cast<int>(*n);
         return success();
       }},
      {"image_cache.remove_unused_base_images",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto b = parseBool(k, v);
         if (!b) return b.error();
         c.image_cache.remove_unused_base_images = *b;
         return success();
       }},
      {"image_cache.remove_unused_original_minimum_age_seconds",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<std::uint64_t>(k, v, 0, 10ULL * 365 * 86400);
         if (!n) return n.error();
         c.image_cache.remove_unused_original_minimum_age_seconds = *n;
         return success();
       }},
      {"image_cache.max_concurrent_downloads",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 64);
         if (!n) return n.error();
         c.image_cache.max_concurrent_downloads = *n;
         return success();
       }},
      {"api.policy_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.api.policy_file = v;
         return success();
       }},
      {"keystone.auth_url",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty() && !v.starts_with("http://") && !v.starts_with("https://")) {
           return invalidValue(k, v, "must be an http:// or https:// URL");
         }
         c.keystone.auth_url = v;
         return success();
       }},
      {"keystone.username",
       [](auto&, auto& v, KilnConfig& c) -> Result<void> {
         c.keystone.username = v;
         return success();
       }},
      {"keystone.password",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         // Never quote the value: it is a secret.
         if (v.find('\0') != std::string::npos) {
           return Error::invalid(fmt::format("{} contains a NUL byte", displayName(k)));
         }
         c.keystone.password = v;
         return success();
       }},
      {"keystone.user_domain_name",
       [](auto&, auto& v, KilnConfig& c) -> Result<void> {
         c.keystone.user_domain_name = v;
         return success();
       }},
      {"keystone.project_name",
       [](auto&, auto& v, KilnConfig& c) -> Result<void> {
         c.keystone.project_name = v;
         return success();
       }},
      {"keystone.project_domain_name",
       [](auto&, auto& v, KilnConfig& c) -> Result<void> {
         c.keystone.project_domain_name = v;
         return success();
       }},
      {"keystone.service_token_file",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.keystone.service_token_file = v;
         return success();
       }},
      {"keystone.cafile",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (!v.empty()) {
           if (auto r = requireAbsolutePath(k, v); !r) return r;
         }
         c.keystone.cafile = v;
         return success();
       }},
      {"keystone.cache_seconds",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 0, 3600);
         if (!n) return n.error();
         c.keystone.cache_seconds = *n;
         return success();
       }},
      {"keystone.timeout",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         auto n = parseInt<unsigned>(k, v, 1, 300);
         if (!n) return n.error();
         c.keystone.timeout = *n;
         return success();
       }},
      {"images.local_dir",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.images.local_dir = v;
         return success();
       }},
  };
  return table;
}

// Boost's reader is only given text it accepts: on a line it cannot read it builds its message by
// substituting the line into a template until no placeholder is left, which never ends when the
// line itself holds "%invalid_line%" (found by config_fuzz); and it reads before the start of an
// empty section name "[]". The rules are Boost's: '#' starts a comment, blanks are " \t\r\n", and a
// line is blank, a [section] or name = value.
Result<void> checkLines(std::string_view text, std::string_view source_name) {
  constexpr std::string_view kBlanks = " \t\r\n";
  std::size_t number = 0;
  for (std::size_t start = 0; start <= text.size();) {
    std::size_t end = std::min(text.find('\n', start), text.size());
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++number;
    line = line.substr(0, line.find('#'));
    line = strings::trim(line, kBlanks);
    if (line.empty()) continue;
    bool section = line.front() == '[' && line.back() == ']';
    if (section ? line.size() > 2 : line.find('=') != std::string_view::npos) continue;
    std::string shown(line.substr(0, 80));
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    }
    return Error::invalid(fmt::format(
        "Cannot parse configuration '{}': line {} is not a [section], an option = value or a "
        "comment: '{}'",
        source_name, number, shown));
  }
  return success();
}

}  // namespace

Result<KilnConfig> parseConfig(std::string_view text, std::string_view source_name) {
  if (auto lines = checkLines(text, source_name); !lines) return std::move(lines).error();
  KilnConfig cfg;
  po::options_description known;
  std::istringstream in{std::string(text)};
  po::parsed_options parsed(&known);
  try {
    parsed = po::parse_config_file(in, known, /*allow_unregistered=*/true);
  } catch (const po::error& e) {
    return Error::invalid(
        fmt::format("Cannot parse configuration '{}': {}", source_name, e.what()));
  }
  const auto& table = optionTable();
  std::map<std::string, std::string> seen;
  for (const auto& opt : parsed.options) {
    std::string value = opt.value.empty() ? "" : opt.value.front();
    auto it = table.find(opt.string_key);
    if (it == table.end()) {
      cfg.warnings.push_back(fmt::format("Unknown option {} in '{}' is ignored",
                                         displayName(opt.string_key), source_name));
      continue;
    }
    if (seen.count(opt.string_key) != 0) {
      return Error::invalid(fmt::format("Option {} is set more than once in '{}'",
                                        displayName(opt.string_key), source_name));
    }
    seen[opt.string_key] = value;
    if (auto r = it->second(opt.string_key, value, cfg); !r) return std::move(r).error();
  }
  if (cfg.api.listen_host.empty() && cfg.api.listen_unix_socket.empty()) {
    return Error::invalid(
        fmt::format("The API has nothing to listen on in '{}': [api] listen is empty and [api] "
                    "listen_unix_socket is not set",
                    source_name));
  }
  if (cfg.api.cert_file.empty() != cfg.api.key_file.empty()) {
    return Error::invalid(fmt::format(
        "[api] cert_file and [api] key_file must be set together in '{}'", source_name));
  }
  if (!cfg.api.ca_file.empty() && cfg.api.cert_file.empty()) {
    return Error::invalid(fmt::format(
        "[api] ca_file (client certificates) needs [api] cert_file and key_file in '{}'",
        source_name));
  }
  auto& encryption = cfg.ephemeral_storage_encryption;
  auto luks = luksCipherFor(encryption.cipher, encryption.key_size);
  if (!luks) return luks.error();
  encryption.luks = *luks;
  return cfg;
}

Result<LuksCipher> luksCipherFor(const std::string& cipher, unsigned key_size) {
  auto bad = [&](std::string_view why) {
    return invalidValue("ephemeral_storage_encryption.cipher", cipher, why);
  };
  // <cipher>-<chain mode>-<iv generator>[:<hash>], dm-crypt's notation.
  auto first = cipher.find('-');
  auto second = first == std::string::npos ? first : cipher.find('-', first + 1);
  if (second == std::string::npos) {
    return bad("must be <cipher>-<mode>-<iv generator> such as 'aes-xts-plain64'");
  }
  std::string alg = cipher.substr(0, first);
  std::string mode = cipher.substr(first + 1, second - first - 1);
  std::string ivgen = cipher.substr(second + 1);
  std::string hash;
  if (auto colon = ivgen.find(':'); colon != std::string::npos) {
    hash = ivgen.substr(colon + 1);
    ivgen = ivgen.substr(0, colon);
  }
  if (alg != "aes" && alg != "serpent" && alg != "twofish") {
    return bad("the cipher must be aes, serpent or twofish");
  }
  if (mode != "xts" && mode != "cbc") return bad("the mode must be xts or cbc");
  if (ivgen == "essiv") {
    if (hash.empty()) hash = "sha256";
    if (hash != "sha1" && hash != "sha256" && hash != "sha512") {
      return bad("essiv needs a hash of sha1, sha256 or sha512");
    }
  } else if (ivgen == "plain" || ivgen == "plain64") {
    if (!hash.empty()) return bad("only essiv takes a hash");
  } else {
    return bad("the IV generator must be plain, plain64 or essiv");
  }
  // XTS uses two keys of half the size each.
  unsigned cipher_bits = mode == "xts" ? key_size / 2 : key_size;
  if ((mode == "xts" && key_size % 2 != 0) ||
      (cipher_bits != 128 && cipher_bits != 192 && cipher_bits != 256)) {
    return invalidValue(
        "ephemeral_storage_encryption.key_size", std::to_string(key_size),
        fmt::format("{} needs {}", cipher, mode == "xts" ? "256, 384 or 512" : "128, 192 or 256"));
  }
  LuksCipher luks;
  luks.cipher_alg = fmt::format("{}-{}", alg, cipher_bits);
  luks.cipher_mode = mode;
  luks.ivgen_alg = ivgen;
  luks.ivgen_hash_alg = hash;
  return luks;
}

std::vector<std::string> knownOptions() {
  std::vector<std::string> names;
  for (const auto& [key, setter] : optionTable()) names.push_back(key);
  return names;
}

Result<KilnConfig> loadConfigFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) return Error::invalid(fmt::format("Cannot read configuration file '{}'", path));
  std::stringstream buf;
  buf << file.rdbuf();
  return parseConfig(buf.str(), path);
}

}  // namespace kiln::config
