// LinuxHostNetwork against the real kernel, in a network namespace of its own. Needs root
// (CAP_NET_ADMIN, /dev/net/tun, nf_tables); without it every case says so and passes.
//
// Isolation: the first case to run calls unshare(CLONE_NEWNET) on the main thread, which is the
// thread Catch runs every case on, and the thread whose namespace netlink sockets, libnftables,
// /proc/sys/net and forked `ip`/`nft` children use. The namespace is private to this process
// and vanishes with it, so nothing made here can reach the host's network or outlive the test.
// CTest runs each case in a process of its own, so each starts from an empty namespace too.
// Addresses: 198.51.100.0/24, 203.0.113.0/24 (documentation ranges) and fe80::/64; no routes.

#include "drivers/network/linux_host_network.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>

#include "common/unique_fd.h"
#include "drivers/network/tun_device.h"

using namespace kiln::drivers::network;
using kiln::ErrorCode;
using kiln::drivers::NicSpec;
using nlohmann::json;

namespace {

constexpr const char* kUuid = "2f0c8e4a-4d3e-4b8a-9c55-0d1e2f3a4b5c";
constexpr const char* kOtherUuid = "9a9a9a9a-0000-4000-8000-000000000001";

// Once per process, on the main thread; false (and the cases skip) when not root.
bool inPrivateNetns() {
  static const bool entered = [] {
    if (::geteuid() != 0) return false;
    if (::unshare(CLONE_NEWNET) != 0) {
      std::perror("unshare(CLONE_NEWNET)");
      return false;
    }
    return true;
  }();
  return entered;
}

#define REQUIRE_PRIVATE_NETNS()                                        \
  do {                                                                 \
    if (!inPrivateNetns()) {                                           \
      WARN("Skipped: needs root to make a private network namespace"); \
      return;                                                          \
    }                                                                  \
  } while (false)

std::string capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

int run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// `ip -j -d link show dev <name>`'s object; null when there is no such device.
json linkInfo(const std::string& name) {
  std::string out = capture("ip -j -d link show dev " + name);
  json j = json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.is_array() || j.empty()) return nullptr;
  return j[0];
}

bool hasFlag(const json& link, const char* flag) {
  const json& flags = link["flags"];
  return std::find(flags.begin(), flags.end(), flag) != flags.end();
}

bool chainExists(const std::string& devname) {
  return run("nft -j list chain netdev kiln vif-" + devname) == 0;
}

NicSpec bridgedNic(const std::string& devname, const std::string& bridge) {
  NicSpec nic;
  nic.port_id = "7d9c2a1e-1111-2222-3333-444455556666";
  nic.mac = "fa:16:3e:0a:bc:01";
  nic.type = NicSpec::Type::kBridge;
  nic.devname = devname;
  nic.bridge = bridge;
  nic.mtu = 1400;
  nic.fixed_ips = {"198.51.100.10"};
  return nic;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

double plugMs(LinuxHostNetwork& net, const NicSpec& nic) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = net.plug(kUuid, nic);
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0);
  INFO((r.ok() ? std::string() : r.error().message));
  REQUIRE(r.ok());
  return ms.count();
}

}  // namespace

TEST_CASE("plug makes a marked and filtered tap in a bridge it creates and unplug removes the tap",
          "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  NicSpec nic = bridgedNic("tapk1", "kbr0");
  double first_ms = plugMs(net, nic);

  json tap = linkInfo("tapk1");
  REQUIRE(tap.is_object());
  CHECK(hasFlag(tap, "UP"));
  CHECK(tap["mtu"] == 1400);
  CHECK(tap["master"] == "kbr0");
  CHECK(tap["ifalias"] == std::string("kiln:") + kUuid + ":" + nic.port_id);
  CHECK(tap["address"] == "fe:16:3e:0a:bc:01");
  CHECK(tap["linkinfo"]["info_kind"] == "tun");
  CHECK(tap["linkinfo"]["info_data"]["type"] == "tap");
  CHECK(tap["linkinfo"]["info_data"]["multi_queue"] == false);
  CHECK(tap["linkinfo"]["info_data"]["persist"] == true);

  json bridge = linkInfo("kbr0");
  REQUIRE(bridge.is_object());
  CHECK(bridge["linkinfo"]["info_kind"] == "bridge");
  CHECK(hasFlag(bridge, "UP"));
  CHECK(bridge["mtu"] == 1400);
  CHECK(bridge["linkinfo"]["info_data"]["forward_delay"] == 0);
  CHECK(bridge["linkinfo"]["info_data"]["stp_state"] == 0);
  CHECK(readFile("/proc/sys/net/ipv6/conf/kbr0/disable_ipv6") == "1");

  CHECK(chainExists("tapk1"));
  auto filters = net.listFilters();
  REQUIRE(filters.ok());
  CHECK(*filters == std::vector<std::string>{"tapk1"});
  auto taps = net.listKilnTaps();
  REQUIRE(taps.ok());
  REQUIRE(taps->size() == 1);
  CHECK((*taps)[0].devname == "tapk1");
  CHECK((*taps)[0].instance_uuid == kUuid);
  CHECK((*taps)[0].port_id == nic.port_id);

  // Idempotent: the same tap (same ifindex), everything re-applied.
  int ifindex = tap["ifindex"];
  double again_ms = plugMs(net, nic);
  CHECK(linkInfo("tapk1")["ifindex"] == ifindex);
  CHECK(chainExists("tapk1"));

  // A second NIC on the bridge that now exists.
  NicSpec second = bridgedNic("tapk2", "kbr0");
  second.port_id = "port-2";
  second.mac = "fa:16:3e:0a:bc:02";
  double second_ms = plugMs(net, second);
  CHECK(linkInfo("tapk2")["master"] == "kbr0");
  std::printf(
      "plug timings: first NIC (tap + bridge + filter) %.2f ms, re-plug %.2f ms, "
      "second NIC on the existing bridge %.2f ms\n",
      first_ms, again_ms, second_ms);

  REQUIRE(net.unplug(kUuid, nic).ok());
  CHECK(linkInfo("tapk1").is_null());
  CHECK_FALSE(chainExists("tapk1"));
  CHECK(linkInfo("kbr0").is_object());  // bridges are never removed
  CHECK(linkInfo("tapk2")["master"] == "kbr0");
  CHECK(net.unplug(kUuid, nic).ok());  // missing is fine
  REQUIRE(net.unplug(kUuid, second).ok());
  CHECK(net.listKilnTaps()->empty());
  CHECK(net.listFilters()->empty());
}

TEST_CASE("A device of the tap's name that is not kiln's for this port is a conflict and untouched",
          "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  REQUIRE(run("ip link add kfor0 type veth peer name kfor0p") == 0);
  NicSpec nic = bridgedNic("kfor0", "kbr1");
  auto r = net.plug(kUuid, nic);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kConflict);
  CHECK(r.error().message ==
        "The network device 'kfor0' exists and is not kiln's tap for instance '" +
            std::string(kUuid) + "' port '" + nic.port_id + "' (its alias is '')");
  json foreign = linkInfo("kfor0");
  CHECK(foreign["linkinfo"]["info_kind"] == "veth");
  CHECK_FALSE(foreign.contains("master"));
  CHECK_FALSE(foreign.contains("ifalias"));
  CHECK_FALSE(hasFlag(foreign, "UP"));
  CHECK_FALSE(chainExists("kfor0"));
  CHECK(linkInfo("kbr1").is_null());   // refused before any bridge was made
  CHECK(net.unplug(kUuid, nic).ok());  // not kiln's: left alone
  CHECK(linkInfo("kfor0").is_object());
  CHECK(net.removeTap("kfor0", kUuid).error().code == ErrorCode::kConflict);

  // kiln's tap, but for another instance (or another port): also a conflict.
  NicSpec mine = bridgedNic("tapk3", "kbr1");
  REQUIRE(net.plug(kUuid, mine).ok());
  CHECK(net.plug(kOtherUuid, mine).error().code == ErrorCode::kConflict);
  NicSpec other_port = mine;
  other_port.port_id = "another-port";
  CHECK(net.plug(kUuid, other_port).error().code == ErrorCode::kConflict);
  CHECK(net.unplug(kOtherUuid, mine).ok());
  CHECK(linkInfo("tapk3").is_object());
  CHECK(chainExists("tapk3"));
  CHECK(net.removeTap("tapk3", kOtherUuid).error().code == ErrorCode::kConflict);
  CHECK(net.removeTap("tapk3", kUuid).ok());
  CHECK(linkInfo("tapk3").is_null());
  CHECK(net.removeFilter("tapk3").ok());
}

TEST_CASE("A bridge name held by another kind of device is a conflict and the tap is rolled back",
          "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  REQUIRE(run("ip link add notbr type veth peer name notbrp") == 0);
  NicSpec nic = bridgedNic("tapk4", "notbr");
  auto r = net.plug(kUuid, nic);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kConflict);
  CHECK(r.error().message == "The network device 'notbr' exists and is not a bridge ('veth')");
  CHECK(linkInfo("tapk4").is_null());
  CHECK_FALSE(chainExists("tapk4"));
  CHECK(linkInfo("notbr").is_object());
}

TEST_CASE("Invalid names are refused before the kernel sees them", "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  NicSpec nic = bridgedNic("-tap", "kbr5");
  CHECK(net.plug(kUuid, nic).error().code == ErrorCode::kInvalidArgument);
  nic = bridgedNic("tapk5", "br/0");
  CHECK(net.plug(kUuid, nic).error().code == ErrorCode::kInvalidArgument);
  nic = bridgedNic("tapk5", "kbr5");
  nic.fixed_ips = {"198.51.100.300"};
  CHECK(net.plug(kUuid, nic).error().code == ErrorCode::kInvalidArgument);
  CHECK(linkInfo("tapk5").is_null());
  CHECK(linkInfo("kbr5").is_null());
  CHECK(net.removeFilter("..").error().code == ErrorCode::kInvalidArgument);
}

TEST_CASE("A multiqueue tap opens as libvirt opens it with the same flags", "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  NicSpec nic = bridgedNic("tapk6", "kbr2");
  nic.type = NicSpec::Type::kTap;
  nic.queues = 4;
  nic.mtu = 0;
  REQUIRE(net.plug(kUuid, nic).ok());
  json tap = linkInfo("tapk6");
  CHECK(tap["linkinfo"]["info_data"]["multi_queue"] == true);
  CHECK_FALSE(tap.contains("master"));
  CHECK(tap["mtu"] == 1500);
  CHECK(linkInfo("kbr2").is_null());  // kTap: no bridge
  std::vector<kiln::UniqueFd> queues;
  for (int i = 0; i < 4; ++i) {
    auto q = openTapQueue("tapk6", true);
    INFO((q.ok() ? std::string() : q.error().message));
    REQUIRE(q.ok());
    queues.push_back(std::move(*q));
  }
  // The kernel refuses an opener whose IFF_MULTI_QUEUE differs from the creator's.
  CHECK_FALSE(openTapQueue("tapk6", false).ok());
  queues.clear();
  CHECK(linkInfo("tapk6").is_object());  // persistent: closing every queue keeps it

  // filter = false (the L2 agent filters): the chain goes away on re-plug.
  CHECK(chainExists("tapk6"));
  nic.filter = false;
  REQUIRE(net.plug(kUuid, nic).ok());
  CHECK_FALSE(chainExists("tapk6"));
  REQUIRE(net.unplug(kUuid, nic).ok());
}

TEST_CASE("A filter may outlive its tap and removeFilter removes it", "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  NicSpec nic = bridgedNic("tapk7", "kbr3");
  REQUIRE(net.plug(kUuid, nic).ok());
  REQUIRE(net.removeTap("tapk7", kUuid).ok());
  CHECK(linkInfo("tapk7").is_null());
  auto filters = net.listFilters();
  REQUIRE(filters.ok());
  // Since Linux 6.16 a netdev chain stays when its device goes; before, the kernel removed it.
  if (!filters->empty()) CHECK(*filters == std::vector<std::string>{"tapk7"});
  CHECK(net.removeFilter("tapk7").ok());
  CHECK(net.listFilters()->empty());
  CHECK(net.removeFilter("tapk7").ok());  // missing is fine
  CHECK(net.removeTap("tapk7", kUuid).ok());
}

// ---- The filter against real frames: the test plays the guest on the tap and listens on a
// veth whose peer is in the same bridge.

namespace {

using Mac = std::array<std::uint8_t, 6>;
constexpr Mac kGuestMac{0xfa, 0x16, 0x3e, 0x0a, 0xbc, 0x01};
constexpr Mac kSpoofMac{0xfa, 0x16, 0x3e, 0x66, 0x66, 0x66};
constexpr Mac kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

using Frame = std::vector<std::uint8_t>;

// struct virtio_net_hdr from <linux/virtio_net.h>, which C++ cannot include (a member is named
// `class`); all zeros means no checksum offload and no GSO.
struct VirtioNetHdr {
  std::uint8_t flags;
  std::uint8_t gso_type;
  std::uint16_t hdr_len;
  std::uint16_t gso_size;
  std::uint16_t csum_start;
  std::uint16_t csum_offset;
};

void put16(Frame& f, std::uint16_t v) {
  f.push_back(static_cast<std::uint8_t>(v >> 8));
  f.push_back(static_cast<std::uint8_t>(v));
}
void putBytes(Frame& f, const std::uint8_t* p, std::size_t n) { f.insert(f.end(), p, p + n); }
void putMac(Frame& f, const Mac& m) { putBytes(f, m.data(), m.size()); }
std::array<std::uint8_t, 4> v4(const char* text) {
  std::array<std::uint8_t, 4> a{};
  ::inet_pton(AF_INET, text, a.data());
  return a;
}
std::array<std::uint8_t, 16> v6(const char* text) {
  std::array<std::uint8_t, 16> a{};
  ::inet_pton(AF_INET6, text, a.data());
  return a;
}
void ethernet(Frame& f, const Mac& dst, const Mac& src, std::uint16_t type) {
  putMac(f, dst);
  putMac(f, src);
  put16(f, type);
}
void pad(Frame& f) {
  if (f.size() < 60) f.resize(60, 0);
}

// An ARP request; the tag is the target address's last octet.
Frame arp(const Mac& eth_src, const Mac& sha, const char* spa, std::uint8_t tag) {
  Frame f;
  ethernet(f, kBroadcast, eth_src, 0x0806);
  put16(f, 1);
  put16(f, 0x0800);
  f.push_back(6);
  f.push_back(4);
  put16(f, 1);
  putMac(f, sha);
  auto s = v4(spa);
  putBytes(f, s.data(), 4);
  putMac(f, Mac{});
  auto t = v4("198.51.100.0");
  t[3] = tag;
  putBytes(f, t.data(), 4);
  pad(f);
  return f;
}

// A UDP datagram to the broadcast address; the tag is the IP id.
Frame udp4(const Mac& src_mac, const char* src, std::uint16_t sport, std::uint16_t dport,
           std::uint16_t tag) {
  Frame f;
  ethernet(f, kBroadcast, src_mac, 0x0800);
  Frame ip;
  ip.push_back(0x45);
  ip.push_back(0);
  put16(ip, 20 + 8 + 4);
  put16(ip, tag);
  put16(ip, 0);
  ip.push_back(64);
  ip.push_back(17);
  put16(ip, 0);
  auto s = v4(src);
  auto d = v4("255.255.255.255");
  putBytes(ip, s.data(), 4);
  putBytes(ip, d.data(), 4);
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 20; i += 2) sum += (ip[i] << 8) | ip[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  ip[10] = static_cast<std::uint8_t>(~sum >> 8);
  ip[11] = static_cast<std::uint8_t>(~sum);
  put16(ip, sport);
  put16(ip, dport);
  put16(ip, 8 + 4);
  put16(ip, 0);
  putBytes(ip, reinterpret_cast<const std::uint8_t*>("kiln"), 4);
  f.insert(f.end(), ip.begin(), ip.end());
  pad(f);
  return f;
}

// An IPv6 packet to ff02::1; the tag is the flow label. next_header 59 (none) or 58 (ICMPv6,
// with `icmp_type`; checksums are not what the filter looks at).
Frame ip6(const Mac& src_mac, const char* src, std::uint8_t next_header, std::uint8_t icmp_type,
          std::uint16_t tag) {
  Frame f;
  ethernet(f, Mac{0x33, 0x33, 0, 0, 0, 1}, src_mac, 0x86dd);
  put16(f, 0x6000);
  put16(f, tag);
  put16(f, 8);
  f.push_back(next_header);
  f.push_back(255);
  auto s = v6(src);
  auto d = v6("ff02::1");
  putBytes(f, s.data(), 16);
  putBytes(f, d.data(), 16);
  Frame body(8, 0);
  body[0] = icmp_type;
  f.insert(f.end(), body.begin(), body.end());
  return f;
}

Frame vlanTagged() {
  Frame f;
  ethernet(f, kBroadcast, kGuestMac, 0x8100);
  put16(f, 42);
  put16(f, 0x0800);
  pad(f);
  return f;
}

// Which test frame this is ("arp/1", "udp/7", "ip6/3", "vlan"), or "" for the namespace's own
// traffic.
std::string identify(const std::uint8_t* p, std::size_t n) {
  if (n < 14) return "";
  Mac src;
  std::copy(p + 6, p + 12, src.begin());
  if (src != kGuestMac && src != kSpoofMac) return "";
  std::uint16_t type = static_cast<std::uint16_t>((p[12] << 8) | p[13]);
  if (type == 0x0806 && n >= 42) return "arp/" + std::to_string(p[41]);
  if (type == 0x0800 && n >= 34) return "udp/" + std::to_string((p[18] << 8) | p[19]);
  if (type == 0x86dd && n >= 18) return "ip6/" + std::to_string((p[16] << 8) | p[17]);
  if (type == 0x8100) return "vlan";
  return "";
}

}  // namespace

TEST_CASE("The filter lets only the guest's own addresses cross the bridge", "[network][root]") {
  REQUIRE_PRIVATE_NETNS();
  LinuxHostNetwork net;
  NicSpec nic = bridgedNic("tapk8", "kbr4");
  nic.mtu = 0;
  REQUIRE(net.plug(kUuid, nic).ok());
  REQUIRE(run("ip link add kv0 type veth peer name kv1") == 0);
  REQUIRE(run("ip link set kv0 master kbr4 up") == 0);
  REQUIRE(run("ip link set kv1 up") == 0);

  kiln::UniqueFd listener(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
  REQUIRE(listener.valid());
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = static_cast<int>(::if_nametoindex("kv1"));
  REQUIRE(addr.sll_ifindex > 0);
  REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

  auto guest = openTapQueue("tapk8", false);  // brings the tap's carrier up, as QEMU would
  REQUIRE(guest.ok());
  // IFF_VNET_HDR: every frame the guest writes starts with a virtio_net_hdr, 10 bytes unless
  // TUNSETVNETHDRSZ says otherwise (QEMU sets 12 for mergeable buffers).
  STATIC_REQUIRE(sizeof(VirtioNetHdr) == 10);
  int hdr_size = 0;
  REQUIRE(::ioctl(guest->get(), TUNGETVNETHDRSZ, &hdr_size) == 0);
  CHECK(hdr_size == 10);
  auto send = [&](const Frame& frame) {
    Frame out(static_cast<std::size_t>(hdr_size), 0);
    out.insert(out.end(), frame.begin(), frame.end());
    REQUIRE(::write(guest->get(), out.data(), out.size()) == static_cast<ssize_t>(out.size()));
  };

  // Bridge ports with forward delay 0 forward at once; give the carrier a moment all the same.
  ::usleep(50 * 1000);
  std::set<std::string> expected = {"arp/1", "arp/2", "udp/1", "udp/4", "ip6/1", "ip6/4"};
  send(arp(kGuestMac, kGuestMac, "198.51.100.10", 1));            // its own address: passes
  send(arp(kGuestMac, kGuestMac, "0.0.0.0", 2));                  // an RFC 5227 probe: passes
  send(arp(kGuestMac, kGuestMac, "198.51.100.99", 3));            // another address
  send(arp(kSpoofMac, kSpoofMac, "198.51.100.10", 4));            // another MAC
  send(arp(kGuestMac, kSpoofMac, "198.51.100.10", 5));            // another sender MAC inside ARP
  send(udp4(kGuestMac, "198.51.100.10", 5000, 5001, 1));          // its own address: passes
  send(udp4(kGuestMac, "203.0.113.5", 5000, 5001, 2));            // another address
  send(udp4(kSpoofMac, "198.51.100.10", 5000, 5001, 3));          // another MAC
  send(udp4(kGuestMac, "0.0.0.0", 68, 67, 4));                    // DHCP discover: passes
  send(udp4(kGuestMac, "198.51.100.10", 67, 68, 5));              // acting as a DHCP server
  send(udp4(kGuestMac, "0.0.0.0", 5000, 5001, 6));                // 0.0.0.0 but not DHCP
  send(ip6(kGuestMac, "fe80::f816:3eff:fe0a:bc01", 59, 0, 1));    // its link-local: passes
  send(ip6(kGuestMac, "fe80::1", 59, 0, 2));                      // another link-local
  send(ip6(kGuestMac, "::", 59, 0, 3));                           // :: but not DAD
  send(ip6(kGuestMac, "::", 58, 135, 4));                         // DAD solicitation: passes
  send(ip6(kGuestMac, "fe80::f816:3eff:fe0a:bc01", 58, 134, 5));  // a router advertisement
  send(vlanTagged());                                             // another ethertype

  std::set<std::string> seen;
  std::uint8_t buf[2048];
  pollfd pfd{listener.get(), POLLIN, 0};
  while (::poll(&pfd, 1, 300) > 0) {
    ssize_t n = ::recv(listener.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    std::string id = identify(buf, static_cast<std::size_t>(n));
    if (!id.empty()) seen.insert(id);
  }
  CHECK(seen == expected);

  // Without the filter everything crosses: the test above sees the filter, not the bridge.
  nic.filter = false;
  REQUIRE(net.plug(kUuid, nic).ok());
  send(arp(kSpoofMac, kSpoofMac, "203.0.113.9", 9));
  seen.clear();
  while (::poll(&pfd, 1, 300) > 0) {
    ssize_t n = ::recv(listener.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    std::string id = identify(buf, static_cast<std::size_t>(n));
    if (!id.empty()) seen.insert(id);
  }
  CHECK(seen == std::set<std::string>{"arp/9"});
  REQUIRE(net.unplug(kUuid, nic).ok());
}
