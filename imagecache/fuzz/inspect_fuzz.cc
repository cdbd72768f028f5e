// libFuzzer entry point: arbitrary bytes through the format inspector, once with nothing
// declared and once per declared format. Any crash, leak, sanitizer report or endless loop is
// a bug; a refusal is the expected answer for almost every input.

#include <cstddef>
#include <cstdint>
#include <optional>

#include "imagecache/format_inspector.h"

using kiln::imagecache::BufferByteSource;
using kiln::imagecache::DiskFormat;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  BufferByteSource src(data, size);
  auto info = kiln::imagecache::inspectImage(src, std::nullopt);
  if (info && info->file_size != size) __builtin_trap();
  // The first byte picks a declared format, so the comparison paths are covered too.
  if (size > 0) {
    auto declared = static_cast<DiskFormat>(data[0] % 9);
    (void)kiln::imagecache::inspectImage(src, declared);
  }
  return 0;
}
