#include "config/config.h"

#include <sys/stat.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <charconv>
#include <functional>
#include <map>
#include <sstream>
#include <type_traits>

#include "common/fs.h"
#include "common/strings.h"

namespace kiln::config {
namespace po = boost::program_options;

namespace {

// kiln.conf is a few kilobytes; a file past this is the wrong file (a disk image, a log), and it
// is not read to the end.
constexpr std::uint64_t kMaxConfigFileBytes = 1024 * 1024;

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

// A decimal number between `min` and `max` (allocation ratios).
Result<double> parseDouble(std::string_view key, std::string_view value, double min, double max) {
  double parsed = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), parsed);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    return invalidValue(key, value, "must be a number such as 1.5");
  }
  if (!(parsed >= min && parsed <= max)) {
    return invalidValue(key, value, fmt::format("must be between {} and {}", min, max));
  }
  return parsed;
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

// An option's setter: checks the text of its value and stores it, typed, in its field of `cfg`.
// `key` is "section.name", the form invalidValue() turns into "[section] name".
using Setter =
    std::function<Result<void>(const std::string& key, const std::string& value, KilnConfig& cfg)>;
// Whether a value, or one item of a list, is acceptable; the binder given it says why not.
using Accepts = std::function<bool(std::string_view value)>;
// A rule that explains itself: its error names the option `key` and quotes what it refused.
using Check = std::function<Result<void>(std::string_view key, const std::string& value)>;

// Empty ("option =") or accepted by `accepts`: for options where empty means "not set".
Accepts emptyOr(Accepts accepts) {
  return [accepts](std::string_view v) { return v.empty() || accepts(v); };
}

constexpr const char* kNotPrintable = "must be printable ASCII without spaces, at most 255 bytes";

bool isHttpUrl(std::string_view v) { return v.starts_with("http://") || v.starts_with("https://"); }
bool isLibvirtUri(std::string_view v) { return v.find("://") != std::string_view::npos; }
bool isFileScheme(std::string_view v) { return v == "file"; }
bool isInterface(std::string_view v) { return v == "public" || v == "internal" || v == "admin"; }

// "'a' or 'b'", "'a', 'b' or 'c'"; an empty choice is "empty".
std::string choices(const std::vector<std::string>& allowed) {
  std::string out;
  for (std::size_t i = 0; i < allowed.size(); ++i) {
    if (i > 0) out += i + 1 == allowed.size() ? " or " : ", ";
    out += allowed[i].empty() ? std::string("empty") : fmt::format("'{}'", allowed[i]);
  }
  return out;
}

// The typed binders. Each makes the Setter of one option from the field it fills, named by two
// member pointers (&KilnConfig::api, &ApiSection::token_file), and the rule its value follows.
// The field's type picks the parser, and a kind of option always fails with the same words.

// Stores `parse(key, value)`, a Result<T>, in (cfg.*section).*field. (Not called bind: the
// arguments' namespaces would bring std::bind into the overload set.)
template <typename Section, typename T, typename Parse>
Setter bindField(Section KilnConfig::*section, T Section::*field, Parse parse) {
  return [section, field, parse](const std::string& key, const std::string& value,
                                 KilnConfig& cfg) -> Result<void> {
    Result<T> parsed = parse(key, value);
    if (!parsed) return std::move(parsed).error();
    (cfg.*section).*field = std::move(parsed).value();
    return success();
  };
}

// A whole number between `min` and `max`, both included.
template <typename Section, typename Int>
Setter integer(Section KilnConfig::*section, Int Section::*field, std::type_identity_t<Int> min,
               std::type_identity_t<Int> max) {
  return bindField(section, field, [min, max](std::string_view key, const std::string& value) {
    return parseInt<Int>(key, value, min, max);
  });
}

// A number; for std::optional fields, empty leaves it unset.
template <typename Section>
Setter decimal(Section KilnConfig::*section, double Section::*field, double min, double max) {
  return bindField(section, field, [min, max](std::string_view key, const std::string& value) {
    return parseDouble(key, value, min, max);
  });
}
template <typename Section>
Setter decimal(Section KilnConfig::*section, std::optional<double> Section::*field, double min,
               double max) {
  return bindField(
      section, field,
      [min, max](std::string_view key, const std::string& value) -> Result<std::optional<double>> {
        if (value.empty()) return std::optional<double>();
        auto parsed = parseDouble(key, value, min, max);
        if (!parsed) return parsed.error();
        return std::optional<double>(*parsed);
      });
}

template <typename Section>
Setter boolean(Section KilnConfig::*section, bool Section::*field) {
  return bindField(section, field, parseBool);
}

// Text as written, when `check` passes it (any text without a check).
template <typename Section>
Setter text(Section KilnConfig::*section, std::string Section::*field, Check check = nullptr) {
  return bindField(section, field,
                   [check](std::string_view key, const std::string& value) -> Result<std::string> {
                     if (check) {
                       if (auto r = check(key, value); !r) return std::move(r).error();
                     }
                     return value;
                   });
}

// Text that `accepts`; anything else "must be ..." as `why` says.
template <typename Section>
Setter text(Section KilnConfig::*section, std::string Section::*field, Accepts accepts,
            std::string why) {
  return text(section, field,
              [accepts, why](std::string_view key, const std::string& value) -> Result<void> {
                if (!accepts(value)) return invalidValue(key, value, why);
                return success();
              });
}

template <typename Section>
Setter absolutePath(Section KilnConfig::*section, std::string Section::*field) {
  return text(section, field, requireAbsolutePath);
}

// An absolute path, or empty for "not set".
template <typename Section>
Setter absolutePathOrEmpty(Section KilnConfig::*section, std::string Section::*field) {
  return text(section, field, [](std::string_view key, const std::string& value) {
    return value.empty() ? success() : requireAbsolutePath(key, value);
  });
}

// Exactly one of `allowed` ("" among them: may be left empty). The message lists the choices,
// unless `why` words it otherwise.
template <typename Section>
Setter oneOf(Section KilnConfig::*section, std::string Section::*field,
             std::vector<std::string> allowed, std::string why = {}) {
  if (why.empty()) why = fmt::format("must be {}", choices(allowed));
  return text(
      section, field,
      [allowed](std::string_view v) {
        return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
      },
      std::move(why));
}

// A nova.conf list (parseList) whose every item `accepts`; a bad item is reported with the whole
// value and `why`.
template <typename Section>
Setter list(Section KilnConfig::*section, std::vector<std::string> Section::*field, Accepts accepts,
            std::string why) {
  return bindField(section, field,
                   [accepts, why](std::string_view key,
                                  const std::string& value) -> Result<std::vector<std::string>> {
                     std::vector<std::string> items = parseList(value);
                     for (const auto& item : items) {
                       if (!accepts(item)) return invalidValue(key, value, why);
                     }
                     return items;
                   });
}

// A nova.conf list whose every item passes `check`, which quotes the bad item itself.
template <typename Section>
Setter list(Section KilnConfig::*section, std::vector<std::string> Section::*field, Check check) {
  return bindField(
      section, field,
      [check](std::string_view key, const std::string& value) -> Result<std::vector<std::string>> {
        std::vector<std::string> items = parseList(value);
        for (const auto& item : items) {
          if (auto r = check(key, item); !r) return std::move(r).error();
        }
        return items;
      });
}

// The options whose text needs more than a binder.

// sockaddr_un holds 108 bytes with the terminating NUL; empty: no unix socket listener.
Result<void> checkUnixSocketPath(std::string_view key, const std::string& value) {
  if (value.empty()) return success();
  if (auto r = requireAbsolutePath(key, value); !r) return r;
  if (value.size() > 107) return invalidValue(key, value, "must be at most 107 bytes long");
  return success();
}

// Never quotes the value: it is a secret.
Result<void> checkSecret(std::string_view key, const std::string& value) {
  if (value.find('\0') != std::string::npos) {
    return Error::invalid(fmt::format("{} contains a NUL byte", displayName(key)));
  }
  return success();
}

// Never quotes the value: the URL holds the broker's password.
Result<void> checkTransportUrl(std::string_view key, const std::string& value) {
  if (value.empty()) return success();
  if (!value.starts_with("rabbit://") && !value.starts_with("kombu://")) {
    return Error::invalid(fmt::format(
        "{} must be a rabbit:// URL (oslo.messaging's RabbitMQ driver, the one kiln speaks)",
        displayName(key)));
  }
  return checkSecret(key, value);
}

Result<void> setUnixSocketMode(const std::string& key, const std::string& value, KilnConfig& cfg) {
  unsigned mode = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), mode, 8);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || mode > 0777) {
    return invalidValue(key, value, "must be an octal file mode such as 0660");
  }
  cfg.api.unix_socket_mode = mode;
  return success();
}

// -1 (never), 0 (every 60 s) or seconds between runs of the cache manager.
Result<void> setManagerInterval(const std::string& key, const std::string& value, KilnConfig& cfg) {
  if (value == "-1") {
    cfg.image_cache.manager_interval = -1;
    return success();
  }
  auto n = parseInt<unsigned>(key, value, 0, 7 * 86400);
  if (!n) return invalidValue(key, value, "must be -1 (never), 0 (every 60 s) or seconds");
  cfg.image_cache.manager_interval = static_cast<int>(*n);
  return success();
}

// Every option kilnd reads. A new option is one line here, a field with its default in
// config.h and its documentation in config/kiln.conf (a test checks that kiln.conf has it).
// The OpenStack front's options: nova.conf's [DEFAULT] names, [oslo_messaging_rabbit] and
// [placement] (keystoneauth's names).
std::map<std::string, Setter> openStackOptions() {
  return {
      // The OpenStack front: nova.conf's [DEFAULT] names.
      {"DEFAULT.transport_url",
       text(&KilnConfig::defaults, &DefaultSection::transport_url, checkTransportUrl)},
      {"DEFAULT.control_exchange", text(&KilnConfig::defaults, &DefaultSection::control_exchange,
                                        printableToken, kNotPrintable)},
      {"DEFAULT.my_ip", text(&KilnConfig::defaults, &DefaultSection::my_ip, emptyOr(printableToken),
                             "must be an IP address")},
      {"DEFAULT.report_interval",
       integer(&KilnConfig::defaults, &DefaultSection::report_interval, 1, 3600)},
      {"DEFAULT.rpc_response_timeout",
       integer(&KilnConfig::defaults, &DefaultSection::rpc_response_timeout, 1, 3600)},
      {"DEFAULT.executor_thread_pool_size",
       integer(&KilnConfig::defaults, &DefaultSection::executor_thread_pool_size, 1, 256)},
      {"DEFAULT.cpu_allocation_ratio",
       decimal(&KilnConfig::defaults, &DefaultSection::cpu_allocation_ratio, 0.0, 1000.0)},
      {"DEFAULT.ram_allocation_ratio",
       decimal(&KilnConfig::defaults, &DefaultSection::ram_allocation_ratio, 0.0, 1000.0)},
      {"DEFAULT.disk_allocation_ratio",
       decimal(&KilnConfig::defaults, &DefaultSection::disk_allocation_ratio, 0.0, 1000.0)},
      {"DEFAULT.initial_cpu_allocation_ratio",
       decimal(&KilnConfig::defaults, &DefaultSection::initial_cpu_allocation_ratio, 0.0, 1000.0)},
      {"DEFAULT.initial_ram_allocation_ratio",
       decimal(&KilnConfig::defaults, &DefaultSection::initial_ram_allocation_ratio, 0.0, 1000.0)},
      {"DEFAULT.initial_disk_allocation_ratio",
       decimal(&KilnConfig::defaults, &DefaultSection::initial_disk_allocation_ratio, 0.0, 1000.0)},
      {"DEFAULT.reserved_host_cpus",
       integer(&KilnConfig::defaults, &DefaultSection::reserved_host_cpus, 0, 4096)},
      {"DEFAULT.reserved_host_memory_mb",
       integer(&KilnConfig::defaults, &DefaultSection::reserved_host_memory_mb, 0, 1ULL << 32)},
      // [oslo_messaging_rabbit], oslo.messaging's names (its typos included).
      {"oslo_messaging_rabbit.amqp_durable_queues",
       boolean(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::amqp_durable_queues)},
      {"oslo_messaging_rabbit.amqp_auto_delete",
       boolean(&KilnConfig::oslo_messaging_rabbit, &OsloMessagingRabbitSection::amqp_auto_delete)},
      {"oslo_messaging_rabbit.rabbit_ha_queues",
       boolean(&KilnConfig::oslo_messaging_rabbit, &OsloMessagingRabbitSection::rabbit_ha_queues)},
      {"oslo_messaging_rabbit.rabbit_quorum_queue",
       boolean(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_quorum_queue)},
      {"oslo_messaging_rabbit.rabbit_quorum_delivery_limit",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_quorum_delivery_limit, 0, 1000000)},
      {"oslo_messaging_rabbit.rabbit_quroum_max_memory_length",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_quorum_max_memory_length, 0, 1U << 30)},
      {"oslo_messaging_rabbit.rabbit_quroum_max_memory_bytes",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_quorum_max_memory_bytes, 0, 1U << 31)},
      {"oslo_messaging_rabbit.rabbit_transient_queues_ttl",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_transient_queues_ttl, 1, 30U * 86400)},
      {"oslo_messaging_rabbit.heartbeat_timeout_threshold",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::heartbeat_timeout_threshold, 0, 3600)},
      {"oslo_messaging_rabbit.heartbeat_rate",
       integer(&KilnConfig::oslo_messaging_rabbit, &OsloMessagingRabbitSection::heartbeat_rate, 1,
               100)},
      {"oslo_messaging_rabbit.rabbit_retry_interval",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_retry_interval, 1, 3600)},
      {"oslo_messaging_rabbit.rabbit_retry_backoff",
       integer(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::rabbit_retry_backoff, 0, 3600)},
      {"oslo_messaging_rabbit.rabbit_interval_max",
       integer(&KilnConfig::oslo_messaging_rabbit, &OsloMessagingRabbitSection::rabbit_interval_max,
               1, 3600)},
      {"oslo_messaging_rabbit.rabbit_login_method",
       oneOf(&KilnConfig::oslo_messaging_rabbit, &OsloMessagingRabbitSection::rabbit_login_method,
             {"AMQPLAIN", "PLAIN"})},
      {"oslo_messaging_rabbit.ssl",
       boolean(&KilnConfig::oslo_messaging_rabbit, &OsloMessagingRabbitSection::ssl)},
      {"oslo_messaging_rabbit.ssl_ca_file",
       absolutePathOrEmpty(&KilnConfig::oslo_messaging_rabbit,
                           &OsloMessagingRabbitSection::ssl_ca_file)},
      {"oslo_messaging_rabbit.ssl_cert_file",
       absolutePathOrEmpty(&KilnConfig::oslo_messaging_rabbit,
                           &OsloMessagingRabbitSection::ssl_cert_file)},
      {"oslo_messaging_rabbit.ssl_key_file",
       absolutePathOrEmpty(&KilnConfig::oslo_messaging_rabbit,
                           &OsloMessagingRabbitSection::ssl_key_file)},
      {"oslo_messaging_rabbit.ssl_enforce_hostname_verification",
       boolean(&KilnConfig::oslo_messaging_rabbit,
               &OsloMessagingRabbitSection::ssl_enforce_hostname_verification)},
      // [placement]: keystoneauth's names.
      {"placement.auth_type", oneOf(&KilnConfig::placement, &KeystoneAuthSection::auth_type,
                                    {"", "password"}, "must be 'password' (the plugin kiln has)")},
      {"placement.auth_url", text(&KilnConfig::placement, &KeystoneAuthSection::auth_url,
                                  emptyOr(isHttpUrl), "must be an http:// or https:// URL")},
      {"placement.username", text(&KilnConfig::placement, &KeystoneAuthSection::username)},
      {"placement.password",
       text(&KilnConfig::placement, &KeystoneAuthSection::password, checkSecret)},
      {"placement.user_domain_name",
       text(&KilnConfig::placement, &KeystoneAuthSection::user_domain_name)},
      {"placement.user_domain_id",
       text(&KilnConfig::placement, &KeystoneAuthSection::user_domain_id)},
      {"placement.project_name", text(&KilnConfig::placement, &KeystoneAuthSection::project_name)},
      {"placement.project_domain_name",
       text(&KilnConfig::placement, &KeystoneAuthSection::project_domain_name)},
      {"placement.project_domain_id",
       text(&KilnConfig::placement, &KeystoneAuthSection::project_domain_id)},
      {"placement.region_name", text(&KilnConfig::placement, &KeystoneAuthSection::region_name)},
      {"placement.valid_interfaces",
       list(&KilnConfig::placement, &KeystoneAuthSection::valid_interfaces, isInterface,
            "each interface must be public, internal or admin")},
      {"placement.endpoint_override",
       text(&KilnConfig::placement, &KeystoneAuthSection::endpoint_override, emptyOr(isHttpUrl),
            "must be an http:// or https:// URL")},
      {"placement.cafile",
       absolutePathOrEmpty(&KilnConfig::placement, &KeystoneAuthSection::cafile)},
      {"placement.timeout",
       integer(&KilnConfig::placement, &KeystoneAuthSection::timeout, 1, 3600)},
  };
}

const std::map<std::string, Setter>& optionTable() {
  static const std::map<std::string, Setter> table = [] {
    std::map<std::string, Setter> options = {
        {"DEFAULT.state_path", absolutePath(&KilnConfig::defaults, &DefaultSection::state_path)},
        {"DEFAULT.host", text(&KilnConfig::defaults, &DefaultSection::host, emptyOr(printableToken),
                              kNotPrintable)},
        {"DEFAULT.availability_zone",
         text(&KilnConfig::defaults, &DefaultSection::availability_zone, printableToken,
              kNotPrintable)},
        {"DEFAULT.flavors_file",
         absolutePath(&KilnConfig::defaults, &DefaultSection::flavors_file)},
        {"DEFAULT.log_level", oneOf(&KilnConfig::defaults, &DefaultSection::log_level,
                                    {"debug", "info", "warning", "error"},
                                    "must be one of debug, info, warning, error")},
        {"DEFAULT.launch_workers",
         integer(&KilnConfig::defaults, &DefaultSection::launch_workers, 1, 64)},
        {"api.listen", [](auto& k, auto& v, KilnConfig& c) { return parseListen(k, v, c.api); }},
        {"api.token_file", absolutePath(&KilnConfig::api, &ApiSection::token_file)},
        {"api.max_body_bytes",
         integer(&KilnConfig::api, &ApiSection::max_body_bytes, 1024, 64ULL * 1024 * 1024)},
        {"api.max_header_bytes",
         integer(&KilnConfig::api, &ApiSection::max_header_bytes, 1024, 1024 * 1024)},
        {"api.client_timeout", integer(&KilnConfig::api, &ApiSection::client_timeout, 1, 3600)},
        {"api.header_timeout", integer(&KilnConfig::api, &ApiSection::header_timeout, 1, 3600)},
        {"api.max_connections", integer(&KilnConfig::api, &ApiSection::max_connections, 1, 65536)},
        {"api.max_connections_per_peer",
         integer(&KilnConfig::api, &ApiSection::max_connections_per_peer, 1, 65536)},
        {"api.cert_file", absolutePathOrEmpty(&KilnConfig::api, &ApiSection::cert_file)},
        {"api.key_file", absolutePathOrEmpty(&KilnConfig::api, &ApiSection::key_file)},
        {"api.ca_file", absolutePathOrEmpty(&KilnConfig::api, &ApiSection::ca_file)},
        {"api.allow_insecure_http", boolean(&KilnConfig::api, &ApiSection::allow_insecure_http)},
        {"api.listen_unix_socket",
         text(&KilnConfig::api, &ApiSection::listen_unix_socket, checkUnixSocketPath)},
        {"api.unix_socket_mode", setUnixSocketMode},
        {"api.unix_socket_group", text(&KilnConfig::api, &ApiSection::unix_socket_group,
                                       emptyOr(printableToken), "must be a group name")},
        {"libvirt.uri", text(&KilnConfig::libvirt, &LibvirtSection::uri, isLibvirtUri,
                             "must be a libvirt URI such as qemu:///system")},
        {"libvirt.virt_type",
         oneOf(&KilnConfig::libvirt, &LibvirtSection::virt_type, {"kvm", "qemu"})},
        {"libvirt.hw_machine_type",
         text(&KilnConfig::libvirt, &LibvirtSection::hw_machine_type, printableToken,
              "must be a machine type such as 'pc' or 'q35'")},
        {"libvirt.cpu_mode", oneOf(&KilnConfig::libvirt, &LibvirtSection::cpu_mode,
                                   {"", "host-model", "host-passthrough", "none"})},
        {"libvirt.keepalive_interval",
         integer(&KilnConfig::libvirt, &LibvirtSection::keepalive_interval, 1, 300)},
        {"libvirt.keepalive_count",
         integer(&KilnConfig::libvirt, &LibvirtSection::keepalive_count, 1, 100)},
        {"DEFAULT.force_raw_images",
         boolean(&KilnConfig::defaults, &DefaultSection::force_raw_images)},
        {"DEFAULT.use_cow_images", boolean(&KilnConfig::defaults, &DefaultSection::use_cow_images)},
        {"DEFAULT.force_config_drive",
         boolean(&KilnConfig::defaults, &DefaultSection::force_config_drive)},
        {"DEFAULT.interface_detach_timeout",
         integer(&KilnConfig::defaults, &DefaultSection::interface_detach_timeout, 1, 3600)},
        {"DEFAULT.orphan_action", oneOf(&KilnConfig::defaults, &DefaultSection::orphan_action,
                                        {"report", "quarantine", "delete"})},
        {"DEFAULT.orphan_grace_period",
         integer(&KilnConfig::defaults, &DefaultSection::orphan_grace_period, 0, 30U * 86400)},
        {"DEFAULT.reserved_host_disk_mb",
         integer(&KilnConfig::defaults, &DefaultSection::reserved_host_disk_mb, 0, 1ULL << 30)},
        {"image_cache.max_image_size_gb",
         integer(&KilnConfig::image_cache, &ImageCacheSection::max_image_size_gb, 1, 1ULL << 20)},
        {"DEFAULT.instance_job_timeout",
         integer(&KilnConfig::defaults, &DefaultSection::instance_job_timeout, 1, 3600)},
        {"libvirt.qemu_group", text(&KilnConfig::libvirt, &LibvirtSection::qemu_group,
                                    printableToken, "must be a group name")},
        {"DEFAULT.shutdown_timeout",
         integer(&KilnConfig::defaults, &DefaultSection::shutdown_timeout, 0, 3600)},
        {"libvirt.uefi_loader",
         absolutePathOrEmpty(&KilnConfig::libvirt, &LibvirtSection::uefi_loader)},
        {"libvirt.uefi_nvram_template",
         absolutePathOrEmpty(&KilnConfig::libvirt, &LibvirtSection::uefi_nvram_template)},
        {"libvirt.wait_soft_reboot_seconds",
         integer(&KilnConfig::libvirt, &LibvirtSection::wait_soft_reboot_seconds, 0, 3600)},
        {"DEFAULT.my_block_storage_ip",
         text(&KilnConfig::defaults, &DefaultSection::my_block_storage_ip, emptyOr(printableToken),
              "must be an IP address")},
        {"libvirt.iscsi_connector",
         oneOf(&KilnConfig::libvirt, &LibvirtSection::iscsi_connector, {"native", "kernel"})},
        {"libvirt.volume_device_dir",
         absolutePath(&KilnConfig::libvirt, &LibvirtSection::volume_device_dir)},
        {"libvirt.iscsi_node_dir",
         absolutePath(&KilnConfig::libvirt, &LibvirtSection::iscsi_node_dir)},
        {"libvirt.ephemeral_clear", oneOf(&KilnConfig::libvirt, &LibvirtSection::ephemeral_clear,
                                          {"none", "discard", "zero"})},
        {"ephemeral_storage_encryption.enabled",
         boolean(&KilnConfig::ephemeral_storage_encryption,
                 &EphemeralStorageEncryptionSection::enabled)},
        // Checked with key_size once both are known (luksCipherFor).
        {"ephemeral_storage_encryption.cipher", text(&KilnConfig::ephemeral_storage_encryption,
                                                     &EphemeralStorageEncryptionSection::cipher)},
        {"ephemeral_storage_encryption.key_size",
         integer(&KilnConfig::ephemeral_storage_encryption,
                 &EphemeralStorageEncryptionSection::key_size, 128, 512)},
        {"glance.api_servers", list(&KilnConfig::glance, &GlanceSection::api_servers, isHttpUrl,
                                    "each server must be an http:// or https:// URL")},
        {"glance.num_retries", integer(&KilnConfig::glance, &GlanceSection::num_retries, 0, 100)},
        {"glance.connect_timeout",
         integer(&KilnConfig::glance, &GlanceSection::connect_timeout, 1, 3600)},
        {"glance.transfer_timeout",
         integer(&KilnConfig::glance, &GlanceSection::transfer_timeout, 1, 86400)},
        {"glance.token", text(&KilnConfig::glance, &GlanceSection::token)},
        {"glance.token_file", absolutePathOrEmpty(&KilnConfig::glance, &GlanceSection::token_file)},
        {"glance.cafile", absolutePathOrEmpty(&KilnConfig::glance, &GlanceSection::cafile)},
        {"glance.allowed_direct_url_schemes",
         list(&KilnConfig::glance, &GlanceSection::allowed_direct_url_schemes, isFileScheme,
              "the only scheme kiln reads directly is 'file'")},
        {"image_file_url.filesystems",
         list(&KilnConfig::image_file_url, &ImageFileUrlSection::filesystems, requireAbsolutePath)},
        {"image_cache.manager_interval", setManagerInterval},
        {"image_cache.remove_unused_base_images",
         boolean(&KilnConfig::image_cache, &ImageCacheSection::remove_unused_base_images)},
        {"image_cache.remove_unused_original_minimum_age_seconds",
         integer(&KilnConfig::image_cache,
                 &ImageCacheSection::remove_unused_original_minimum_age_seconds, 0,
                 10ULL * 365 * 86400)},
        {"image_cache.max_concurrent_downloads",
         integer(&KilnConfig::image_cache, &ImageCacheSection::max_concurrent_downloads, 1, 64)},
        {"api.policy_file", absolutePath(&KilnConfig::api, &ApiSection::policy_file)},
        {"api.workers", integer(&KilnConfig::api, &ApiSection::workers, 1, 256)},
        {"api.max_queued_requests",
         integer(&KilnConfig::api, &ApiSection::max_queued_requests, 0, 65536)},
        {"keystone.auth_url", text(&KilnConfig::keystone, &KeystoneSection::auth_url,
                                   emptyOr(isHttpUrl), "must be an http:// or https:// URL")},
        {"keystone.username", text(&KilnConfig::keystone, &KeystoneSection::username)},
        {"keystone.password", text(&KilnConfig::keystone, &KeystoneSection::password, checkSecret)},
        {"keystone.user_domain_name",
         text(&KilnConfig::keystone, &KeystoneSection::user_domain_name)},
        {"keystone.project_name", text(&KilnConfig::keystone, &KeystoneSection::project_name)},
        {"keystone.project_domain_name",
         text(&KilnConfig::keystone, &KeystoneSection::project_domain_name)},
        {"keystone.service_token_file",
         absolutePathOrEmpty(&KilnConfig::keystone, &KeystoneSection::service_token_file)},
        {"keystone.cafile", absolutePathOrEmpty(&KilnConfig::keystone, &KeystoneSection::cafile)},
        {"keystone.cache_seconds",
         integer(&KilnConfig::keystone, &KeystoneSection::cache_seconds, 0, 3600)},
        {"keystone.timeout", integer(&KilnConfig::keystone, &KeystoneSection::timeout, 1, 300)},
        {"keystone.accept_token_file",
         boolean(&KilnConfig::keystone, &KeystoneSection::accept_token_file)},
        {"keystone.admin_project_name",
         text(&KilnConfig::keystone, &KeystoneSection::admin_project_name)},
        {"keystone.admin_project_domain_name",
         text(&KilnConfig::keystone, &KeystoneSection::admin_project_domain_name)},
        {"keystone.system_scope",
         oneOf(&KilnConfig::keystone, &KeystoneSection::system_scope, {"", "all"},
               "must be 'all' (Keystone's one system scope) or empty")},
        {"images.local_dir", absolutePath(&KilnConfig::images, &ImagesSection::local_dir)},
    };
    options.merge(openStackOptions());
    return options;
  }();
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
  if (cfg.keystone.accept_token_file && cfg.keystone.auth_url.empty()) {
    cfg.warnings.push_back(fmt::format(
        "[keystone] accept_token_file in '{}' has no effect without [keystone] auth_url: [api] "
        "token_file decides alone",
        source_name));
  }
  if (!cfg.defaults.transport_url.empty() && cfg.placement.auth_type.empty()) {
    return Error::invalid(fmt::format(
        "[DEFAULT] transport_url in '{}' makes kilnd a nova-compute, which reports to Placement: "
        "set "
        "[placement] auth_type = password and its credentials (auth_url, username, password, "
        "project_name, ...)",
        source_name));
  }
  if (cfg.placement.auth_type == "password" &&
      (cfg.placement.auth_url.empty() || cfg.placement.username.empty() ||
       cfg.placement.password.empty() || cfg.placement.project_name.empty())) {
    return Error::invalid(fmt::format(
        "[placement] auth_type = password in '{}' needs auth_url, username, password and "
        "project_name",
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
  auto text = fs::readFile(path, kMaxConfigFileBytes);
  if (!text) {
    switch (text.error().code) {
      case ErrorCode::kNotFound:
        return Error::invalid(fmt::format("Configuration file '{}' does not exist", path));
      case ErrorCode::kTooLarge:
        return Error::invalid(fmt::format(
            "Configuration file '{}' is larger than {} bytes, too large to be a kiln.conf", path,
            kMaxConfigFileBytes));
      default:
        return Error::invalid(
            fmt::format("Cannot read configuration file: {}", text.error().message));
    }
  }
  auto cfg = parseConfig(*text, path);
  if (!cfg) return cfg;
  if (auto guarded = checkFileMode(path, secretOptionsIn(*cfg), "configuration file"); !guarded) {
    return guarded.error();
  }
  return cfg;
}

std::vector<std::string> secretOptionsIn(const KilnConfig& cfg) {
  std::vector<std::string> held;
  if (!cfg.keystone.password.empty()) held.push_back("[keystone] password");
  if (!cfg.glance.token.empty()) held.push_back("[glance] token");
  if (!cfg.defaults.transport_url.empty()) held.push_back("[DEFAULT] transport_url");
  if (!cfg.placement.password.empty()) held.push_back("[placement] password");
  return held;
}

Result<void> checkFileMode(const std::string& path, const std::vector<std::string>& secrets,
                           std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Error::invalid(fmt::format("Cannot stat {} '{}': {}", what, path, fs::errnoText(errno)));
  }
  // Whoever may write it decides what kilnd (root) does: the same as a root-owned file.
  if ((st.st_mode & 022) != 0) {
    return Error::invalid(fmt::format(
        "The {} '{}' has mode {:04o}; it must not be writable by group or others (chmod go-w)",
        what, path, st.st_mode & 07777));
  }
  if (!secrets.empty() && (st.st_mode & 077) != 0) {
    return Error::invalid(fmt::format(
        "The {} '{}' holds {} but has mode {:04o}; it must not be accessible by group or "
        "others (chmod 600), as the token file",
        what, path, fmt::join(secrets, " and "), st.st_mode & 07777));
  }
  return success();
}

}  // namespace kiln::config
