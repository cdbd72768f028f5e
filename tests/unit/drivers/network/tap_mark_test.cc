#include "drivers/network/tap_mark.h"

#include <catch2/catch.hpp>

#include "drivers/network/devname.h"

using namespace kiln::drivers::network;

TEST_CASE("A tap mark round-trips", "[network]") {
  TapMark mark{"2f0c8e4a-4d3e-4b8a-9c55-0d1e2f3a4b5c", "7d9c2a1e-1111-2222-3333-444455556666"};
  std::string text = formatTapMark(mark);
  CHECK(text == "kiln:2f0c8e4a-4d3e-4b8a-9c55-0d1e2f3a4b5c:7d9c2a1e-1111-2222-3333-444455556666");
  CHECK(parseTapMark(text) == mark);
}

TEST_CASE("Aliases that are not kiln marks are not parsed as one", "[network]") {
  for (const char* alias : {"", "kiln:", "kiln:abc", "kiln::port", "kiln:abc:", "kiln:a:b:c",
                            "Kiln:a:b", "neutron:a:b", " kiln:a:b"}) {
    CAPTURE(alias);
    CHECK_FALSE(parseTapMark(alias));
  }
}

TEST_CASE("Device names are re-checked before they reach the kernel", "[network]") {
  for (const char* good : {"tap0", "tap7d9c2a1e-11", "a", "x.y_z-1", "123456789012345"}) {
    CAPTURE(good);
    CHECK(checkDevname(good, "tap").ok());
  }
  for (const char* bad : {"", ".", "..", "-tap", "1234567890123456", "tap/0", "tap 0", "tap:0",
                          "t\xc3\xa4p", "tap\n"}) {
    CAPTURE(bad);
    auto r = checkDevname(bad, "tap");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == kiln::ErrorCode::kInvalidArgument);
  }
  CHECK(checkDevname("a b", "bridge").error().message.starts_with("The bridge name 'a b' is not"));
}
