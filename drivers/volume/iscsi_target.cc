#include "drivers/volume/iscsi_target.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "common/strings.h"

namespace kiln::drivers::volume {

using nlohmann::json;

namespace {

bool validHost(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':';
    if (!ok) return false;
  }
  return true;
}

Result<unsigned> parseLun(const json& v) {
  if (v.is_number_unsigned() && v.get<std::uint64_t>() <= 16383) return v.get<unsigned>();
  if (v.is_string()) {
    unsigned lun = 0;
    const std::string& s = v.get_ref<const std::string&>();
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), lun);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty() && lun <= 16383) return lun;
  }
  return Error::invalid("target_lun must be an integer between 0 and 16383");
}

Result<std::string> optionalString(const json& data, const char* key) {
  if (!data.contains(key) || data[key].is_null()) return std::string();
  if (!data[key].is_string()) {
    return Error::invalid(fmt::format("connection_info.data.{} must be a string", key));
  }
  return data[key].get<std::string>();
}

}  // namespace

bool isValidIqn(std::string_view iqn) {
  if (iqn.size() < 5 || iqn.size() > 223) return false;
  if (!iqn.starts_with("iqn.") && !iqn.starts_with("eui.") && !iqn.starts_with("naa.")) {
    return false;
  }
  for (char c : iqn) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':';
    if (!ok) return false;
  }
  return true;
}

Result<IscsiPath> parsePortal(std::string_view portal) {
  IscsiPath path;
  std::string_view host = portal;
  std::string_view port;
  if (!portal.empty() && portal.front() == '[') {
    auto close = portal.find(']');
    if (close == std::string_view::npos) {
      return Error::invalid(fmt::format("Portal '{}' is not HOST:PORT", portal.substr(0, 64)));
    }
    host = portal.substr(1, close - 1);
    if (close + 1 < portal.size()) {
      if (portal[close + 1] != ':') {
        return Error::invalid(fmt::format("Portal '{}' is not HOST:PORT", portal.substr(0, 64)));
      }
      port = portal.substr(close + 2);
    }
  } else if (auto colon = portal.rfind(':'); colon != std::string_view::npos) {
    if (portal.find(':') != colon) {
      return Error::invalid(fmt::format("IPv6 portal '{}' needs brackets", portal.substr(0, 64)));
    }
    host = portal.substr(0, colon);
    port = portal.substr(colon + 1);
  }
  if (!validHost(host)) {
    return Error::invalid(fmt::format("Portal '{}' has an invalid host", portal.substr(0, 64)));
  }
  path.host = std::string(host);
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return Error::invalid(fmt::format("Portal '{}' has an invalid port", portal.substr(0, 64)));
    }
    path.port = static_cast<std::uint16_t>(value);
  }
  return path;
}

Result<IscsiTarget> parseIscsiConnectionInfo(const json& info) {
  if (!info.is_object()) return Error::invalid("connection_info must be an object");
  if (!info.contains("driver_volume_type") || info["driver_volume_type"] != "iscsi") {
    return Error::invalid("connection_info.driver_volume_type must be 'iscsi'");
  }
  if (!info.contains("data") || !info["data"].is_object()) {
    return Error::invalid("connection_info.data must be an object");
  }
  const json& data = info["data"];
  IscsiTarget target;

  auto addPath = [&](const json& portal, const json& iqn, const json& lun) -> Result<void> {
    if (!portal.is_string() || !iqn.is_string()) {
      return Error::invalid("target_portal and target_iqn must be strings");
    }
    auto path = parsePortal(portal.get<std::string>());
    if (!path) return path.error();
    if (!isValidIqn(iqn.get<std::string>())) {
      return Error::invalid(
          fmt::format("'{}' is not a valid iSCSI name", iqn.get<std::string>().substr(0, 64)));
    }
    auto l = parseLun(lun);
    if (!l) return l.error();
    path->iqn = iqn.get<std::string>();
    path->lun = *l;
    target.paths.push_back(*path);
    return success();
  };

  if (!data.contains("target_portal") || !data.contains("target_iqn") ||
      !data.contains("target_lun")) {
    return Error::invalid("connection_info.data needs target_portal, target_iqn and target_lun");
  }
  if (auto r = addPath(data["target_portal"], data["target_iqn"], data["target_lun"]); !r) {
    return r.error();
  }
  if (data.contains("target_portals")) {
    const json& portals = data["target_portals"];
    const json& iqns = data.value("target_iqns", json());
    const json& luns = data.value("target_luns", json());
    if (!portals.is_array() || !iqns.is_array() || !luns.is_array() ||
        portals.size() != iqns.size() || portals.size() != luns.size() || portals.size() > 16) {
      return Error::invalid(
          "target_portals, target_iqns and target_luns must be lists of the same length (at "
          "most 16)");
    }
    for (std::size_t i = 0; i < portals.size(); ++i) {
      if (auto r = addPath(portals[i], iqns[i], luns[i]); !r) return r.error();
    }
    // The single-path fields repeat one of the multipath entries; keep each path once.
    std::vector<IscsiPath> unique;
    for (const auto& p : target.paths) {
      bool dup = false;
      for (const auto& u : unique) {
        dup = dup || (u.host == p.host && u.port == p.port && u.iqn == p.iqn && u.lun == p.lun);
      }
      if (!dup) unique.push_back(p);
    }
    target.paths = std::move(unique);
  }

  auto method = optionalString(data, "auth_method");
  auto user = optionalString(data, "auth_username");
  auto pass = optionalString(data, "auth_password");
  if (!method) return method.error();
  if (!user) return user.error();
  if (!pass) return pass.error();
  if (!method->empty() && *method != "CHAP") {
    return Error::invalid(
        fmt::format("auth_method '{}' is not supported (only CHAP)", method->substr(0, 32)));
  }
  if (*method == "CHAP" && (user->empty() || pass->empty())) {
    return Error::invalid("auth_method CHAP needs auth_username and auth_password");
  }
  if (!strings::isVisibleAscii(*user)) {
    return Error::invalid("auth_username must be printable ASCII without spaces");
  }
  // A control character (a newline above all) would end iscsiadm's node record line or
  // libvirt's secret value early and smuggle in what follows. The password is never quoted back.
  if (std::any_of(pass->begin(), pass->end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return Error::invalid("auth_password must not contain control characters");
  }
  target.auth_method = *method;
  if (*method == "CHAP") {
    target.auth_username = *user;
    target.auth_password = *pass;
  }
  auto mode = optionalString(data, "access_mode");
  if (!mode) return mode.error();
  if (!mode->empty() && *mode != "rw" && *mode != "ro") {
    return Error::invalid("access_mode must be 'rw' or 'ro'");
  }
  target.read_only = *mode == "ro";
  return target;
}

}  // namespace kiln::drivers::volume
