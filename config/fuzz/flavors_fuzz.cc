// libFuzzer entry point: arbitrary bytes as flavors.yaml. Whatever the YAML holds, a catalog that
// parses must only hold flavors within the bounds a launch relies on.

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "config/flavors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto catalog = kiln::config::parseFlavors(text, "fuzz.yaml");
  if (!catalog) {
    if (catalog.error().message.empty()) __builtin_trap();
    return 0;
  }
  std::set<std::string> names;
  for (const auto& f : catalog->all()) {
    if (!kiln::config::validateFlavor(f, "fuzzed flavor")) __builtin_trap();
    if (f.name.empty() || !names.insert(f.name).second) __builtin_trap();
    if (!catalog->find(f.name)) __builtin_trap();
  }
  return 0;
}
