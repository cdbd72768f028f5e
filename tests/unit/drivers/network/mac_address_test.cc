#include "drivers/network/mac_address.h"

#include <catch2/catch.hpp>

using namespace kiln::drivers::network;

TEST_CASE("MAC addresses parse in either case and nothing else does", "[network]") {
  auto mac = parseMac("FA:16:3e:0A:bC:01");
  REQUIRE(mac);
  CHECK(formatMac(*mac) == "fa:16:3e:0a:bc:01");
  for (const char* bad : {"", "fa:16:3e:0a:bc", "fa:16:3e:0a:bc:01:02", "fa-16-3e-0a-bc-01",
                          "fa:16:3e:0a:bc:0g", "fa:16:3e:0a:bc:1 ", "fa163e0abc01xxxxx"}) {
    CAPTURE(bad);
    CHECK_FALSE(parseMac(bad));
  }
}

TEST_CASE("The tap's host side takes the guest's MAC with the first octet 0xfe", "[network]") {
  CHECK(formatMac(hostSideMac(*parseMac("fa:16:3e:0a:bc:01"))) == "fe:16:3e:0a:bc:01");
}

TEST_CASE("The EUI-64 link-local address flips the universal/local bit", "[network]") {
  // The examples Neutron's ipv6_utils tests and RFC 4291 appendix A use.
  CHECK(eui64LinkLocal(*parseMac("fa:16:3e:0a:bc:01")) == "fe80::f816:3eff:fe0a:bc01");
  CHECK(eui64LinkLocal(*parseMac("00:16:3e:33:44:55")) == "fe80::216:3eff:fe33:4455");
  CHECK(eui64LinkLocal(*parseMac("02:00:00:00:00:01")) == "fe80::ff:fe00:1");
}
