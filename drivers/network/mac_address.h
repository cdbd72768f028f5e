#pragma once
// Ethernet addresses as NicSpec carries them (aa:bb:cc:dd:ee:ff) and the two addresses kiln
// derives from the guest's: the tap's host side and the guest's IPv6 link-local address.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::drivers::network {

using MacBytes = std::array<std::uint8_t, 6>;

// Six colon-separated pairs of hex digits, either case; nothing else.
std::optional<MacBytes> parseMac(std::string_view text);
std::string formatMac(const MacBytes& mac);  // lower case

// The tap's own (host side) address: the guest's with the first octet 0xfe, as nova and libvirt
// do. A Linux bridge takes the lowest port address as its own unless one was set; 0xfe sorts
// high and is locally administered, so the bridge never answers with a guest's address, and the
// host side never collides with the guest on the same wire.
MacBytes hostSideMac(const MacBytes& guest);

// The modified EUI-64 link-local address (RFC 4291 appendix A) a guest derives from its MAC
// unless it uses stable-privacy or random interface identifiers: fe80::, the MAC with the
// universal/local bit flipped and ff:fe in the middle. In the canonical text form (RFC 5952).
std::string eui64LinkLocal(const MacBytes& mac);

}  // namespace kiln::drivers::network
