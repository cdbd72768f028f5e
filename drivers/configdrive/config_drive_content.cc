// What the guest reads: meta_data.json as nova's metadata/base.py writes it, and network_data.json
// as nova's virt/netutils.py get_network_metadata() derives it from network_info. Field names,
// ids ("interface0", "network0") and the order of entries follow nova so that cloud-init, and any
// other reader written against nova, sees what it expects.

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/random.h"
#include "drivers/configdrive/config_drive.h"

namespace kiln::drivers::configdrive {
namespace {

using nlohmann::json;

constexpr std::size_t kRandomSeedBytes = 512;  // nova: os.urandom(512)

std::string base64(std::span<const std::uint8_t> bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t n = std::uint32_t{bytes[i]} << 16;
    if (i + 1 < bytes.size()) n |= std::uint32_t{bytes[i + 1]} << 8;
    if (i + 2 < bytes.size()) n |= bytes[i + 2];
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

// The input was validated at the API, but a field that is optional there must not crash us here:
// absent, null or of another type all read as "not given".
const json* member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string stringMember(const json& object, std::string_view key) {
  const json* v = member(object, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

json stringOrNull(const json& object, std::string_view key) {
  const json* v = member(object, key);
  return v != nullptr && v->is_string() ? *v : json(nullptr);
}

const json& arrayMember(const json& object, std::string_view key) {
  static const json kEmpty = json::array();
  const json* v = member(object, key);
  return v != nullptr && v->is_array() ? *v : kEmpty;
}

// nova's model keeps every field it does not name in "meta" (Model._set_meta), so a VIF that went
// through nova has {"meta": {"mtu": 1450}} while a hand-written one may say {"mtu": 1450}; both
// mean the same and meta wins, as it does after nova hydrates the dictionary.
const json* metaMember(const json& object, std::string_view key) {
  if (const json* meta = member(object, "meta")) {
    if (const json* v = member(*meta, key)) return v;
  }
  return member(object, key);
}

// An address as nova's model holds it ({"address": ..., "type": ..., "version": ...}) or, as a
// client may send it, a plain string.
std::string addressOf(const json* ip) {
  if (ip == nullptr) return {};
  if (ip->is_string()) return ip->get<std::string>();
  return stringMember(*ip, "address");
}

struct Cidr {
  int version = 0;  // 4 or 6; 0: the text is not a CIDR
  std::array<std::uint8_t, 16> network{};
  std::array<std::uint8_t, 16> mask{};
};

Cidr parseCidr(const std::string& text) {
  Cidr cidr;
  std::size_t slash = text.find('/');
  std::string address = text.substr(0, slash);
  int family = address.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  int bits = family == AF_INET6 ? 128 : 32;
  std::array<std::uint8_t, 16> raw{};
  if (::inet_pton(family, address.c_str(), raw.data()) != 1) return cidr;
  int prefix = bits;
  if (slash != std::string::npos) {
    try {
      std::size_t used = 0;
      prefix = std::stoi(text.substr(slash + 1), &used);
      if (used != text.size() - slash - 1 || prefix < 0 || prefix > bits) return cidr;
    } catch (const std::exception&) {
      return cidr;
    }
  }
  cidr.version = family == AF_INET6 ? 6 : 4;
  for (int i = 0; i < bits / 8; ++i) {
    int left = prefix - i * 8;
    auto byte_mask = static_cast<std::uint8_t>(left >= 8   ? 0xff
                                               : left <= 0 ? 0
                                                           : (0xff << (8 - left)) & 0xff);
    cidr.mask[i] = byte_mask;
    cidr.network[i] = raw[i] & byte_mask;
  }
  return cidr;
}

int prefixLength(const Cidr& cidr) {
  int n = 0;
  for (std::uint8_t byte : cidr.mask) {
    for (int bit = 7; bit >= 0; --bit) n += (byte >> bit) & 1;
  }
  return n;
}

std::string addressText(int version, const std::array<std::uint8_t, 16>& raw) {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(version == 6 ? AF_INET6 : AF_INET, raw.data(), text, sizeof text);
  return text;
}

// nova's Subnet and IP models fill in "version" from the cidr or the address when it is missing.
int ipVersion(const json& object, const std::string& address) {
  if (const json* v = member(object, "version"); v != nullptr && v->is_number_integer()) {
    return v->get<int>();
  }
  if (address.empty()) return 0;
  return address.find(':') != std::string::npos ? 6 : 4;
}

int subnetVersion(const json& subnet) {
  std::string cidr = stringMember(subnet, "cidr");
  return ipVersion(subnet, cidr.substr(0, cidr.find('/')));
}

// netutils._get_first_network: only the first IPv4 and the first IPv6 subnet of a network count.
const json* firstSubnet(const json& network, int version) {
  for (const json& subnet : arrayMember(network, "subnets")) {
    if (subnetVersion(subnet) == version) return &subnet;
  }
  return nullptr;
}

// The VIF types nova has always shown to guests as they are (model.LEGACY_EXPOSED_VIF_TYPES);
// every other type, "ethernet" among them, is a "phy" link.
bool isLegacyExposedVifType(const std::string& type) {
  for (std::string_view t :
       {"bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif"}) {
    if (type == t) return true;
  }
  return false;
}

json ethLink(const json& vif, const json& network, int ifc_num) {
  std::string id = stringMember(vif, "devname");
  if (id.empty()) id = "interface" + std::to_string(ifc_num);
  std::string type = stringMember(vif, "type");
  const json* mtu = metaMember(network, "mtu");
  return {
      {"id", id},
      {"vif_id", stringOrNull(vif, "id")},
      {"type", isLegacyExposedVifType(type) ? type : "phy"},
      {"mtu", mtu != nullptr ? *mtu : json(nullptr)},
      {"ethernet_mac_address", stringOrNull(vif, "address")},
  };
}

json dnsServices(const json& subnet) {
  json services = json::array();
  for (const json& dns : arrayMember(subnet, "dns")) {
    std::string address = addressOf(&dns);
    if (!address.empty()) services.push_back({{"type", "dns"}, {"address", address}});
  }
  return services;
}

json defaultRoute(int version, const json& subnet) {
  std::string gateway = addressOf(member(subnet, "gateway"));
  if (gateway.empty()) return json::array();
  std::string any = version == 6 ? "::" : "0.0.0.0";
  return json::array({{{"network", any}, {"netmask", any}, {"gateway", gateway}}});
}

// netutils._get_nets. An IPv6 address mode (slaac, dhcpv6-stateful, dhcpv6-stateless) makes a
// static entry of type "ipv6_<mode>"; otherwise a subnet with a DHCP server is "ipv4_dhcp" or
// "ipv6_dhcp" and carries no address; otherwise the first fixed IP is a static "ipv4"/"ipv6".
json subnetNetwork(const json& network, const json& subnet, int version, int net_num,
                   const std::string& link_id) {
  std::string id = "network" + std::to_string(net_num);
  std::string suffix;
  if (const json* mode = metaMember(subnet, "ipv6_address_mode");
      mode != nullptr && mode->is_string()) {
    suffix = "_" + mode->get<std::string>();
  } else if (metaMember(subnet, "dhcp_server") != nullptr) {
    return {
        {"id", id},
        {"type", "ipv" + std::to_string(version) + "_dhcp"},
        {"link", link_id},
        {"network_id", stringOrNull(network, "id")},
    };
  }

  const json& ip = arrayMember(subnet, "ips")[0];
  std::string address = addressOf(&ip);
  Cidr cidr = parseCidr(stringMember(subnet, "cidr"));
  json netmask = nullptr;
  if (cidr.version != 0) {
    // model.get_netmask gives IPv4 addresses a dotted mask and others a prefix length, but
    // _get_nets overrides IPv6 with the subnet's mask in IPv6 notation.
    if (version == 6) {
      netmask = addressText(6, cidr.mask);
    } else if (ipVersion(ip, address) == 4) {
      netmask = addressText(4, cidr.mask);
    } else {
      netmask = prefixLength(cidr);
    }
  }

  json routes = defaultRoute(version, subnet);
  for (const json& route : arrayMember(subnet, "routes")) {
    Cidr destination = parseCidr(stringMember(route, "cidr"));
    std::string gateway = addressOf(member(route, "gateway"));
    if (destination.version == 0 || gateway.empty()) continue;  // nothing a guest could use
    routes.push_back({{"network", addressText(destination.version, destination.network)},
                      {"netmask", addressText(destination.version, destination.mask)},
                      {"gateway", gateway}});
  }

  return {
      {"id", id},
      {"type", "ipv" + std::to_string(version) + suffix},
      {"link", link_id},
      {"ip_address", address},
      {"netmask", netmask},
      {"routes", routes},
      {"network_id", stringOrNull(network, "id")},
      {"services", dnsServices(subnet)},
  };
}

}  // namespace

json metaDataJson(const ConfigDriveInput& input) {
  json metadata = {{"uuid", input.uuid}};
  // nova writes public_keys and keys only when the instance has a key pair.
  if (!input.public_keys.empty()) {
    json public_keys = json::object();
    json keys = json::array();
    for (const auto& [name, key] : input.public_keys) {
      public_keys[name] = key;
      keys.push_back({{"name", name}, {"type", "ssh"}, {"data", key}});
    }
    metadata["public_keys"] = std::move(public_keys);
    metadata["keys"] = std::move(keys);
  }
  metadata["hostname"] = input.hostname;
  metadata["name"] = input.name;
  metadata["launch_index"] = input.launch_index;
  metadata["availability_zone"] =
      input.availability_zone.empty() ? json(nullptr) : json(input.availability_zone);
  // Guests without a hardware RNG seed their pool from this (cloud-init's seed_random module).
  std::array<std::uint8_t, kRandomSeedBytes> seed{};
  randomBytes(seed);
  metadata["random_seed"] = base64(seed);
  metadata["project_id"] = input.project_id;
  // Device role tags; kiln tags no devices yet, and nova writes an empty list then.
  metadata["devices"] = json::array();
  return metadata;
}

json networkDataJson(const json& network_info) {
  // nova returns None for an empty network_info and the metadata writer turns that into {}.
  if (!network_info.is_array() || network_info.empty()) return json::object();

  json links = json::array();
  json networks = json::array();
  json services = json::array();
  int ifc_num = -1;
  int net_num = -1;
  auto addServices = [&services](const json& subnet) {
    for (json& dns : dnsServices(subnet)) {
      if (std::find(services.begin(), services.end(), dns) == services.end()) {
        services.push_back(std::move(dns));
      }
    }
  };

  for (const json& vif : network_info) {
    const json* network = member(vif, "network");
    if (network == nullptr || arrayMember(*network, "subnets").empty()) continue;
    const json* subnet_v4 = firstSubnet(*network, 4);
    const json* subnet_v6 = firstSubnet(*network, 6);
    ++ifc_num;
    if (subnet_v4 == nullptr && subnet_v6 == nullptr) continue;
    json link = ethLink(vif, *network, ifc_num);
    std::string link_id = link["id"].get<std::string>();
    links.push_back(std::move(link));

    // A subnet without a fixed IP gives the guest a link and nothing to configure on it.
    if (subnet_v4 != nullptr && !arrayMember(*subnet_v4, "ips").empty()) {
      networks.push_back(subnetNetwork(*network, *subnet_v4, 4, ++net_num, link_id));
      addServices(*subnet_v4);
    }
    if (subnet_v6 != nullptr && !arrayMember(*subnet_v6, "ips").empty()) {
      networks.push_back(subnetNetwork(*network, *subnet_v6, 6, ++net_num, link_id));
      addServices(*subnet_v6);
    }
  }
  return {{"links", links}, {"networks", networks}, {"services", services}};
}

}  // namespace kiln::drivers::configdrive
