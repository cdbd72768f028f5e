#include "config/config.h"

#include <fmt/format.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

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
  if (s.empty() || s.size() > 255) return false;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

// "127.0.0.1:8790", "[::1]:8790" or "0.0.0.0:80".
Result<void> parseListen(std::string_view key, const std::string& value, ApiSection& api) {
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
      {"images.local_dir",
       [](auto& k, auto& v, KilnConfig& c) -> Result<void> {
         if (auto r = requireAbsolutePath(k, v); !r) return r;
         c.images.local_dir = v;
         return success();
       }},
  };
  return table;
}

}  // namespace

Result<KilnConfig> parseConfig(std::string_view text, std::string_view source_name) {
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
  return cfg;
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
