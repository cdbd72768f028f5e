#pragma once
// Filesystem helpers whose point is durability: a file that is renamed into place has been
// fsynced first, and so has the directory that holds the new name.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kiln::fs {

// Writes `contents` to `path` through a temporary file in the same directory: write, fsync,
// rename, fsync the directory. Readers see the old or the new file, never a half-written one.
Result<void> writeFileAtomically(const std::filesystem::path& path, std::string_view contents,
                                 unsigned mode = 0644);

// Writes all of `data`, retrying short writes; a full disk (ENOSPC, EDQUOT, EFBIG) is
// kResourceExhausted.
Result<void> writeAll(int fd, std::string_view data, const std::filesystem::path& path);

Result<std::string> readFile(const std::filesystem::path& path, std::uint64_t max_bytes);

// Reads the rest of an open file, at most `max_bytes` (more is kTooLarge). Callers that checked
// the descriptor (its mode, its type) read the very file they checked. `what` names the file in
// errors ("token file"). What was read is wiped on failure: secrets are read through it.
Result<std::string> readAll(int fd, const std::filesystem::path& path, std::uint64_t max_bytes,
                            std::string_view what = "file");

// Reads at most `max_bytes` from the end of the file (a console log can grow without bound).
Result<std::string> readFileTail(const std::filesystem::path& path, std::uint64_t max_bytes);

Result<void> fsyncDirectory(const std::filesystem::path& dir);

// Creates `dir` and its missing parents with `mode` (umask applies to none of them).
Result<void> makeDirectories(const std::filesystem::path& dir, unsigned mode);

// Removes a tree; a missing tree is not an error (removal must be idempotent).
Result<void> removeTree(const std::filesystem::path& path);

// Free bytes for an unprivileged writer on the filesystem holding `path`.
Result<std::uint64_t> freeBytes(const std::filesystem::path& path);
Result<std::uint64_t> totalBytes(const std::filesystem::path& path);

std::string errnoText(int err);

}  // namespace kiln::fs
