#pragma once
// Byte-string helpers for the text kiln reads from outside: config files, HTTP headers, token
// files, image descriptors. Case and blanks are ASCII's, never the C library's locale: what kilnd
// accepts must not depend on the environment it was started in.

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace kiln::strings {

// What isspace() accepts in the "C" locale.
inline constexpr std::string_view kWhitespace = " \t\n\v\f\r";

// `s` without the leading and trailing characters found in `blanks`.
std::string_view trim(std::string_view s, std::string_view blanks = kWhitespace);

constexpr char asciiLower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
std::string asciiLower(std::string_view s);

bool equalsIgnoringCase(std::string_view a, std::string_view b);
bool startsWithIgnoringCase(std::string_view text, std::string_view prefix);
// The position of the first match of `needle` in `haystack`, or npos.
std::size_t findIgnoringCase(std::string_view haystack, std::string_view needle);

// Every byte is printable ASCII other than the space (0x21..0x7e); true for "".
bool isVisibleAscii(std::string_view s);

// `s` fit to quote in a message or a log line: every byte outside printable ASCII becomes '?',
// and at most `max_chars` of it are kept, followed by "..." when some were cut.
std::string printableExcerpt(std::string_view s, std::size_t max_chars);

// 0..15 for a hexadecimal digit of either case, -1 for any other character.
constexpr int hexDigitValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
// Every character is a hexadecimal digit; true for "".
bool isHex(std::string_view s);
// Two lower-case hexadecimal digits per byte, as digests and keys are written.
std::string hexEncode(std::span<const unsigned char> bytes);

}  // namespace kiln::strings
