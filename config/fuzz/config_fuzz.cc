// libFuzzer entry point: arbitrary bytes as kiln.conf. The file is the operator's, but kilnd must
// refuse a bad one with a message rather than crash, hang or read out of bounds: a crash at startup
// under systemd's restart loop is harder to diagnose than "Invalid value ... for [api] listen".

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto cfg = kiln::config::parseConfig(text, "fuzz.conf");
  // An error must say something: an empty message would leave the operator guessing.
  if (!cfg && cfg.error().message.empty()) __builtin_trap();
  return 0;
}
