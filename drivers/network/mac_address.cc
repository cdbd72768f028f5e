#include "drivers/network/mac_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

namespace kiln::drivers::network {

namespace {
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<MacBytes> parseMac(std::string_view text) {
  if (text.size() != 17) return std::nullopt;
  MacBytes mac{};
  for (std::size_t i = 0; i < 6; ++i) {
    int hi = hexValue(text[i * 3]);
    int lo = hexValue(text[i * 3 + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    if (i < 5 && text[i * 3 + 2] != ':') return std::nullopt;
    mac[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return mac;
}

std::string formatMac(const MacBytes& mac) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3],
                     mac[4], mac[5]);
}

MacBytes hostSideMac(const MacBytes& guest) {
  MacBytes host = guest;
  host[0] = 0xfe;
  return host;
}

std::string eui64LinkLocal(const MacBytes& mac) {
  in6_addr addr{};
  addr.s6_addr[0] = 0xfe;
  addr.s6_addr[1] = 0x80;
  addr.s6_addr[8] = mac[0] ^ 0x02;  // the universal/local bit, inverted (RFC 4291 2.5.1)
  addr.s6_addr[9] = mac[1];
  addr.s6_addr[10] = mac[2];
  addr.s6_addr[11] = 0xff;
  addr.s6_addr[12] = 0xfe;
  addr.s6_addr[13] = mac[3];
  addr.s6_addr[14] = mac[4];
  addr.s6_addr[15] = mac[5];
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET6, &addr, text, sizeof text);
  return text;
}

}  // namespace kiln::drivers::network
