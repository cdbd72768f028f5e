#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Returns the canonical lower-case 8-4-4-4-12 form, or nothing when `text` is not a UUID.
std::optional<std::string> canonicalUuid(std::string_view text);

// A random (version 4) UUID.
std::string randomUuid();

}  // namespace kiln
