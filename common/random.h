#pragma once
// Unpredictable bytes from the kernel (getrandom(2)), for everything a tenant or a local user
// must not guess: instance and image ids kilnd makes, snapshot ids, request ids, temporary file
// names. A seeded userspace generator (mt19937) is predictable from a few outputs and repeats
// itself in both halves of a fork.

#include <cstddef>
#include <cstdint>
#include <span>

namespace kiln {

// Fills `out`; blocks only until the kernel's pool is initialised (early boot), never fails.
void randomBytes(std::span<std::uint8_t> out);

std::uint64_t randomU64();

}  // namespace kiln
