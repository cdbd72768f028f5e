#include "common/uuid.h"

#include <fmt/format.h>

#include "common/random.h"
#include "common/strings.h"

namespace kiln {

std::optional<std::string> canonicalUuid(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  std::string out(text);
  for (size_t i = 0; i < out.size(); ++i) {
    bool dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_pos) {
      if (out[i] != '-') return std::nullopt;
      continue;
    }
    if (strings::hexDigitValue(out[i]) < 0) return std::nullopt;
    out[i] = strings::asciiLower(out[i]);
  }
  return out;
}

std::string randomUuid() {
  std::uint64_t hi = randomU64();
  std::uint64_t lo = randomU64();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", hi >> 32, (hi >> 16) & 0xffff,
                     hi & 0xffff, lo >> 48, lo & 0xffffffffffffULL);
}

}  // namespace kiln
