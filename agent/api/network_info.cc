#include "agent/api/network_info.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <cctype>
#include <cstdlib>
#include <set>

#include "agent/api/launch_request.h"

namespace kiln::api {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxIdLength = 64;
constexpr std::size_t kMaxLabelLength = 255;
constexpr std::size_t kMaxSubnets = 8;
constexpr std::size_t kMaxAddressesPerList = 32;

// The address family of a literal IP address: 4, 6, or 0 when it is none.
int ipVersion(const std::string& text) {
  unsigned char buf[16];
  if (inet_pton(AF_INET, text.c_str(), buf) == 1) return 4;
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1) return 6;
  return 0;
}

// "198.51.100.0/24" -> 4; 0 when it is not a CIDR with a prefix in range.
int cidrVersion(const std::string& text) {
  auto slash = text.find('/');
  if (slash == std::string::npos || slash + 1 >= text.size() || text.size() - slash > 4) return 0;
  std::string prefix = text.substr(slash + 1);
  for (char c : prefix) {
    if (std::isdigit(static_cast<unsigned char>(c)) == 0) return 0;
  }
  int version = ipVersion(text.substr(0, slash));
  int bits = std::atoi(prefix.c_str());
  if (version == 4 && bits <= 32) return 4;
  if (version == 6 && bits <= 128) return 6;
  return 0;
}

// Quotes a value the caller sent, bounded and printable, for an error message.
std::string shown(const json& value) {
  std::string text = value.is_string() ? value.get<std::string>() : value.dump();
  if (text.size() > 64) text = text.substr(0, 64) + "...";
  for (char& c : text) {
    if (std::isprint(static_cast<unsigned char>(c)) == 0) c = '?';
  }
  return "'" + text + "'";
}

Result<void> onlyFields(const json& obj, std::string_view where,
                        std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : obj.items()) {
    (void)value;
    bool found = false;
    for (auto k : known) found = found || key == k;
    if (!found) {
      return Error::invalid(fmt::format("{} has an unknown field {}", where, shown(key)));
    }
  }
  return success();
}

// An optional bounded string; absent or null gives "".
Result<std::string> optionalString(const json& obj, const char* key, std::string_view where,
                                   std::size_t max_length) {
  if (!obj.contains(key) || obj[key].is_null()) return std::string();
  const json& v = obj[key];
  if (!v.is_string() || v.get<std::string>().size() > max_length) {
    return Error::invalid(
        fmt::format("{}.{} must be a string of at most {} characters", where, key, max_length));
  }
  std::string text = v.get<std::string>();
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      return Error::invalid(fmt::format("{}.{} must not hold control characters", where, key));
    }
  }
  return text;
}

// An IP object of nova's model ({"address": "...", ...}) or, as some callers send, a bare string.
Result<std::string> ipAddress(const json& value, std::string_view where, int version) {
  const json* address = &value;
  if (value.is_object()) {
    if (!value.contains("address")) return Error::invalid(fmt::format("{} has no address", where));
    address = &value["address"];
  }
  if (!address->is_string() || ipVersion(address->get<std::string>()) == 0) {
    return Error::invalid(
        fmt::format("{} {} is not an IPv4 or IPv6 address", where, shown(*address)));
  }
  std::string text = address->get<std::string>();
  if (version != 0 && ipVersion(text) != version) {
    return Error::invalid(fmt::format("{} {} is not an IPv{} address like its subnet's", where,
                                      shown(text), version));
  }
  return text;
}

Result<std::vector<std::string>> addressList(const json& subnet, const char* key,
                                             std::string_view where, int version) {
  std::vector<std::string> out;
  if (!subnet.contains(key) || subnet[key].is_null()) return out;
  const json& list = subnet[key];
  if (!list.is_array() || list.size() > kMaxAddressesPerList) {
    return Error::invalid(fmt::format("{}.{} must be a list of at most {} addresses", where, key,
                                      kMaxAddressesPerList));
  }
  for (std::size_t i = 0; i < list.size(); ++i) {
    // DNS servers may be of either family: a v6 subnet can name v4 resolvers.
    auto ip = ipAddress(list[i], fmt::format("{}.{}[{}]", where, key, i),
                        std::string_view(key) == "dns" ? 0 : version);
    if (!ip) return ip.error();
    out.push_back(*ip);
  }
  return out;
}

Result<void> checkSubnet(const json& subnet, std::string_view where,
                         std::vector<std::string>& fixed_ips) {
  if (!subnet.is_object()) return Error::invalid(fmt::format("{} must be an object", where));
  if (!subnet.contains("cidr") || !subnet["cidr"].is_string() ||
      cidrVersion(subnet["cidr"].get<std::string>()) == 0) {
    return Error::invalid(fmt::format("{}.cidr {} must be a CIDR such as '198.51.100.0/24'", where,
                                      shown(subnet.value("cidr", json()))));
  }
  const int version = cidrVersion(subnet["cidr"].get<std::string>());
  if (subnet.contains("gateway") && !subnet["gateway"].is_null()) {
    const json& gw = subnet["gateway"];
    // nova's model: an IP object whose address may be null (a subnet without a gateway).
    if (!(gw.is_object() && (!gw.contains("address") || gw["address"].is_null()))) {
      if (auto ip = ipAddress(gw, fmt::format("{}.gateway", where), version); !ip) {
        return ip.error();
      }
    }
  }
  auto ips = addressList(subnet, "ips", where, version);
  if (!ips) return ips.error();
  fixed_ips.insert(fixed_ips.end(), ips->begin(), ips->end());
  if (auto dns = addressList(subnet, "dns", where, version); !dns) return dns.error();
  if (subnet.contains("routes") && !subnet["routes"].is_null()) {
    const json& routes = subnet["routes"];
    if (!routes.is_array() || routes.size() > kMaxAddressesPerList) {
      return Error::invalid(fmt::format("{}.routes must be a list of at most {} routes", where,
                                        kMaxAddressesPerList));
    }
    for (std::size_t i = 0; i < routes.size(); ++i) {
      std::string at = fmt::format("{}.routes[{}]", where, i);
      const json& route = routes[i];
      if (!route.is_object() || !route.contains("cidr") || !route["cidr"].is_string() ||
          cidrVersion(route["cidr"].get<std::string>()) != version) {
        return Error::invalid(fmt::format("{}.cidr must be an IPv{} CIDR", at, version));
      }
      if (!route.contains("gateway")) return Error::invalid(fmt::format("{} has no gateway", at));
      if (auto ip = ipAddress(route["gateway"], at + ".gateway", version); !ip) return ip.error();
    }
  }
  return success();
}

Result<unsigned> mtuOf(const json& network, std::string_view where) {
  if (!network.contains("meta") || network["meta"].is_null()) return 0U;
  const json& meta = network["meta"];
  if (!meta.is_object())
    return Error::invalid(fmt::format("{}.network.meta must be an object", where));
  if (!meta.contains("mtu") || meta["mtu"].is_null()) return 0U;
  const json& mtu = meta["mtu"];
  if (!mtu.is_number_unsigned() || mtu.get<std::uint64_t>() < kMinMtu ||
      mtu.get<std::uint64_t>() > kMaxMtu) {
    return Error::invalid(fmt::format("{}.network.meta.mtu {} must be an integer from {} to {}",
                                      where, shown(mtu), kMinMtu, kMaxMtu));
  }
  return static_cast<unsigned>(mtu.get<std::uint64_t>());
}

}  // namespace

bool isSafeInterfaceName(std::string_view name) {
  if (name.empty() || name.size() > 15 || name.front() == '-' || name.front() == '.') {
    return false;
  }
  for (unsigned char c : name) {
    if (std::isalnum(c) == 0 && c != '_' && c != '-' && c != '.') return false;
  }
  return true;
}

bool isUnicastMac(std::string_view mac) {
  if (mac.size() != 17) return false;
  bool all_zero = true;
  for (std::size_t i = 0; i < mac.size(); ++i) {
    if (i % 3 == 2) {
      if (mac[i] != ':') return false;
    } else {
      if (std::isxdigit(static_cast<unsigned char>(mac[i])) == 0) return false;
      all_zero = all_zero && mac[i] == '0';
    }
  }
  // The low bit of the first octet is the group (multicast, broadcast) bit.
  const int first = std::stoi(std::string(mac.substr(0, 2)), nullptr, 16);
  return !all_zero && (first & 1) == 0;
}

Result<VifRequest> parseVif(const json& vif, std::string_view where) {
  if (!vif.is_object()) return Error::invalid(fmt::format("{} must be a VIF object", where));
  // nova's VIF model fields; the ones kiln does not act on are kept in the record as given.
  if (auto r = onlyFields(vif, where,
                          {"id", "address", "type", "devname", "network", "details", "vnic_type",
                           "ovs_interfaceid", "qbh_params", "qbg_params", "active",
                           "preserve_on_delete", "profile", "delegate_create", "meta"});
      !r) {
    return r.error();
  }
  VifRequest out;
  drivers::NicSpec& nic = out.nic;
  if (!vif.contains("id") || !vif["id"].is_string() || vif["id"].get<std::string>().empty() ||
      vif["id"].get<std::string>().size() > kMaxIdLength ||
      !isValidProjectId(vif["id"].get<std::string>())) {
    return Error::invalid(
        fmt::format("{}.id (the port id) is required: 1 to {} letters, digits, '_' or '-'", where,
                    kMaxIdLength));
  }
  nic.port_id = vif["id"].get<std::string>();
  if (!vif.contains("address") || !vif["address"].is_string() ||
      !isUnicastMac(vif["address"].get<std::string>())) {
    return Error::invalid(
        fmt::format("{}.address {} must be a unicast MAC address such as 'fa:16:3e:00:00:01'",
                    where, shown(vif.value("address", json()))));
  }
  nic.mac = vif["address"].get<std::string>();
  for (char& c : nic.mac) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));

  const std::string type =
      vif.value("type", json()).is_string() ? vif["type"].get<std::string>() : std::string();
  if (type == "bridge") {
    nic.type = drivers::NicSpec::Type::kBridge;
  } else if (type == "tap" || type == "ethernet") {
    nic.type = drivers::NicSpec::Type::kTap;
  } else {
    return Error::invalid(fmt::format(
        "{}.type {} is not a VIF type kiln plugs; it plugs 'bridge', 'tap' and 'ethernet'", where,
        shown(vif.value("type", json()))));
  }
  if (vif.contains("vnic_type") && !vif["vnic_type"].is_null() && vif["vnic_type"] != "normal") {
    return Error::invalid(
        fmt::format("{}.vnic_type {} is not supported; kiln plugs 'normal' (virtio) ports only",
                    where, shown(vif["vnic_type"])));
  }
  // nova names the tap "tap" + the port id's first 11 characters (nova/network/model.py).
  if (!vif.contains("devname") || vif["devname"].is_null()) {
    nic.devname = "tap" + nic.port_id.substr(0, 11);
  } else if (vif["devname"].is_string()) {
    nic.devname = vif["devname"].get<std::string>();
  }
  if (!isSafeInterfaceName(nic.devname)) {
    return Error::invalid(fmt::format(
        "{}.devname {} must be 1 to 15 letters, digits, '_', '-' or '.', not starting with '-' or "
        "'.'",
        where, shown(vif.value("devname", json()))));
  }

  if (!vif.contains("network") || !vif["network"].is_object()) {
    return Error::invalid(fmt::format("{}.network is required and must be an object", where));
  }
  const json& network = vif["network"];
  std::string at = fmt::format("{}.network", where);
  if (auto r = onlyFields(
          network, at,
          {"id", "bridge", "label", "subnets", "meta", "bridge_interface", "injected", "tenant_id",
           "should_create_bridge", "should_create_vlan", "vlan", "multi_host"});
      !r) {
    return r.error();
  }
  for (const char* key : {"id", "label"}) {
    if (auto s = optionalString(network, key, at,
                                key == std::string("id") ? kMaxIdLength : kMaxLabelLength);
        !s) {
      return s.error();
    }
  }
  if (network.contains("bridge") && !network["bridge"].is_null()) {
    if (!network["bridge"].is_string() ||
        !isSafeInterfaceName(network["bridge"].get<std::string>())) {
      return Error::invalid(fmt::format(
          "{}.bridge {} must be 1 to 15 letters, digits, '_', '-' or '.', not starting with '-' "
          "or '.'",
          at, shown(network["bridge"])));
    }
    nic.bridge = network["bridge"].get<std::string>();
  }
  if (nic.type == drivers::NicSpec::Type::kBridge && nic.bridge.empty()) {
    return Error::invalid(fmt::format("{}.bridge is required for a VIF of type 'bridge'", at));
  }
  if (nic.type == drivers::NicSpec::Type::kBridge && nic.bridge == nic.devname) {
    return Error::invalid(
        fmt::format("{} names '{}' as both its tap and its bridge", where, nic.devname));
  }
  auto mtu = mtuOf(network, where);
  if (!mtu) return mtu.error();
  nic.mtu = *mtu;
  if (network.contains("subnets") && !network["subnets"].is_null()) {
    const json& subnets = network["subnets"];
    if (!subnets.is_array() || subnets.size() > kMaxSubnets) {
      return Error::invalid(
          fmt::format("{}.subnets must be a list of at most {} subnets", at, kMaxSubnets));
    }
    for (std::size_t i = 0; i < subnets.size(); ++i) {
      if (auto r = checkSubnet(subnets[i], fmt::format("{}.subnets[{}]", at, i), nic.fixed_ips);
          !r) {
        return r.error();
      }
    }
  }

  // details.port_filter, nova's meaning (VIF_DETAILS_PORT_FILTER): true when Neutron's L2 agent
  // filters the port itself, so kiln adds nothing; absent or false, kiln filters.
  if (vif.contains("details") && !vif["details"].is_null()) {
    const json& details = vif["details"];
    if (!details.is_object()) {
      return Error::invalid(fmt::format("{}.details must be an object", where));
    }
    if (details.contains("port_filter")) {
      if (!details["port_filter"].is_boolean()) {
        return Error::invalid(fmt::format("{}.details.port_filter must be true or false", where));
      }
      nic.filter = !details["port_filter"].get<bool>();
    }
  }
  out.vif = vif;
  return out;
}

Result<std::vector<VifRequest>> parseNetworkInfo(const json& network_info) {
  std::vector<VifRequest> out;
  if (network_info.is_null()) return out;
  if (!network_info.is_array() || network_info.size() > kMaxInterfaces) {
    return Error::invalid(
        fmt::format("network_info must be a list of at most {} VIFs", kMaxInterfaces));
  }
  std::set<std::string> ports, macs, devnames;
  for (std::size_t i = 0; i < network_info.size(); ++i) {
    auto vif = parseVif(network_info[i], fmt::format("network_info[{}]", i));
    if (!vif) return vif.error();
    const drivers::NicSpec& nic = vif->nic;
    if (!ports.insert(nic.port_id).second || !macs.insert(nic.mac).second ||
        !devnames.insert(nic.devname).second) {
      return Error::invalid(fmt::format(
          "network_info[{}] repeats the port id, MAC address or devname of an earlier VIF", i));
    }
    out.push_back(std::move(vif).value());
  }
  return out;
}

}  // namespace kiln::api
