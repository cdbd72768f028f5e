#include "common/strings.h"

#include <algorithm>

namespace kiln::strings {

std::string_view trim(std::string_view s, std::string_view blanks) {
  std::size_t begin = s.find_first_not_of(blanks);
  if (begin == std::string_view::npos) return {};
  std::size_t end = s.find_last_not_of(blanks);
  return s.substr(begin, end - begin + 1);
}

std::string asciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = asciiLower(c);
  return out;
}

namespace {

bool sameIgnoringCase(char a, char b) { return asciiLower(a) == asciiLower(b); }

}  // namespace

bool equalsIgnoringCase(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameIgnoringCase);
}

bool startsWithIgnoringCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equalsIgnoringCase(text.substr(0, prefix.size()), prefix);
}

std::size_t findIgnoringCase(std::string_view haystack, std::string_view needle) {
  auto it =
      std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(), sameIgnoringCase);
  // std::search finds an empty needle at the start, as std::string_view::find does.
  if (it == haystack.end() && !needle.empty()) return std::string_view::npos;
  return static_cast<std::size_t>(it - haystack.begin());
}

bool isVisibleAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u >= 0x21 && u <= 0x7e;
  });
}

std::string printableExcerpt(std::string_view s, std::size_t max_chars) {
  std::string out;
  for (char c : s.substr(0, max_chars)) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (s.size() > max_chars) out += "...";
  return out;
}

bool isHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return hexDigitValue(c) >= 0; });
}

std::string hexEncode(std::span<const unsigned char> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

}  // namespace kiln::strings
