// The ASCII helpers: blanks, case, excerpts and hex, including the bytes a locale would treat
// differently.
#include "common/strings.h"

#include <array>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace kiln::strings {
namespace {

using namespace std::string_view_literals;

TEST_CASE("trim drops the C locale's blanks, or the ones given, at both ends", "[strings]") {
  CHECK(trim("  a b \t\r\n") == "a b");
  CHECK(trim("\v\fx\f\v") == "x");
  CHECK(trim("x") == "x");
  CHECK(trim("").empty());
  CHECK(trim(" \t\r\n").empty());
  // The caller's set: here a newline is text, not a blank.
  CHECK(trim(" \nx\n ", " ") == "\nx\n");
  CHECK(trim("\t a \t", " \t") == "a");
  // Bytes past ASCII are never blanks, whatever the locale says of 0xa0.
  CHECK(trim("\xa0x\xa0") == "\xa0x\xa0");
  CHECK(trim(" a\0 "sv) == "a\0"sv);
}

TEST_CASE("lower-casing and comparisons touch ASCII letters only", "[strings]") {
  CHECK(asciiLower('A') == 'a');
  CHECK(asciiLower('z') == 'z');
  CHECK(asciiLower('@') == '@');
  CHECK(asciiLower('[') == '[');
  CHECK(asciiLower("Content-TYPE: X") == "content-type: x");
  CHECK(asciiLower("\xc3\x89") == "\xc3\x89");  // É stays as it is
  CHECK(asciiLower("").empty());

  CHECK(equalsIgnoringCase("Bearer", "bEARER"));
  CHECK(equalsIgnoringCase("", ""));
  CHECK_FALSE(equalsIgnoringCase("bearer", "bearer "));
  CHECK_FALSE(equalsIgnoringCase("bearer", "beare"));
  // '@' and '`' sit next to 'A' and 'a'; only letters fold.
  CHECK_FALSE(equalsIgnoringCase("@", "`"));
  CHECK_FALSE(equalsIgnoringCase("\xc9", "\xe9"));  // Latin-1 É and é differ

  CHECK(startsWithIgnoringCase("Content-Length: 4", "content-length:"));
  CHECK(startsWithIgnoringCase("abc", ""));
  CHECK_FALSE(startsWithIgnoringCase("content", "content-length"));
  CHECK_FALSE(startsWithIgnoringCase("Context", "content"));

  CHECK(findIgnoringCase("x PARENTfilenamehint=\"a\"", "parentFileNameHint") == 2);
  CHECK(findIgnoringCase("parentFileNameHin", "parentFileNameHint") == std::string_view::npos);
  CHECK(findIgnoringCase("aaa", "AA") == 0);
  CHECK(findIgnoringCase("", "a") == std::string_view::npos);
  CHECK(findIgnoringCase("abc", "") == 0);
}

TEST_CASE("visible ASCII excludes the space, controls and bytes past 0x7e", "[strings]") {
  CHECK(isVisibleAscii("admin-token_0123~!"));
  CHECK(isVisibleAscii(""));
  CHECK_FALSE(isVisibleAscii("two words"));
  CHECK_FALSE(isVisibleAscii("tab\there"));
  CHECK_FALSE(isVisibleAscii("del\x7f"));
  CHECK_FALSE(isVisibleAscii("caf\xc3\xa9"));
  CHECK_FALSE(isVisibleAscii("nul\0"sv));
}

TEST_CASE("an excerpt replaces what is not printable and says when it was cut", "[strings]") {
  CHECK(printableExcerpt("plain text", 64) == "plain text");
  CHECK(printableExcerpt("a\nb\x01\x7f\xff", 64) == "a?b???");
  CHECK(printableExcerpt("abcdef", 3) == "abc...");
  CHECK(printableExcerpt("abc", 3) == "abc");
  CHECK(printableExcerpt("", 3).empty());
  CHECK(printableExcerpt("\xc3\xa9t\xc3\xa9", 4) == "??t?...");
}

TEST_CASE("hex digits of either case are read, and bytes are written in lower case", "[strings]") {
  CHECK(hexDigitValue('0') == 0);
  CHECK(hexDigitValue('9') == 9);
  CHECK(hexDigitValue('a') == 10);
  CHECK(hexDigitValue('F') == 15);
  for (char c : {'g', 'G', '/', ':', '@', '`', ' ', '\0', '\xff'}) {
    INFO(static_cast<int>(c));
    CHECK(hexDigitValue(c) == -1);
  }
  static_assert(hexDigitValue('c') == 12, "usable in constant expressions");

  CHECK(isHex("0123456789abcdefABCDEF"));
  CHECK(isHex(""));
  CHECK_FALSE(isHex("12g4"));
  CHECK_FALSE(isHex("0x12"));

  const std::array<unsigned char, 5> bytes = {0x00, 0x0f, 0xa5, 0xf0, 0xff};
  CHECK(hexEncode(bytes) == "000fa5f0ff");
  CHECK(hexEncode(std::span(bytes).first(2)) == "000f");
  CHECK(hexEncode({}).empty());
  std::vector<unsigned char> all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<unsigned char>(i));
  std::string hex = hexEncode(all);
  REQUIRE(hex.size() == 512);
  CHECK(hex.substr(0, 8) == "00010203");
  CHECK(hex.substr(508) == "feff");
  CHECK(isHex(hex));
}

}  // namespace
}  // namespace kiln::strings
