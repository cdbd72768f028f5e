#pragma once
// Clearing an instance's private files before they are removed ([libvirt] ephemeral_clear), so
// that what a tenant wrote does not survive in the free space of the host's filesystem.
//
//   zero     overwrite every allocated range of the file with zeros, in place, then fsync.
//            Holes are skipped (SEEK_DATA/SEEK_HOLE): a sparse 20 GiB disk that holds 30 MiB
//            costs 30 MiB of writes. Sound on filesystems that overwrite in place (ext4, XFS
//            without shared extents); a copy-on-write filesystem (btrfs, reflinked XFS) writes
//            the zeros elsewhere and leaves the old blocks to its free space.
//   discard  punch the whole file out (FALLOC_FL_PUNCH_HOLE), fsync, then ask the filesystem to
//            discard exactly the freed physical ranges (FITRIM over the FIEMAP extents taken
//            before the punch), so the device forgets them even on a filesystem mounted without
//            online discard. Cheap, but only as good as the device: a thin-provisioned or
//            loop-backed device drops the blocks; a plain disk may keep them.
//   none     the files are only unlinked.
//
// Clearing is idempotent: a delete re-run after a crash clears what is still there again (zero)
// or finds nothing left to punch (discard). The file is never followed through a symlink, and a
// file with another hard link is not cleared (its data belongs to a name kiln does not own).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace kiln::drivers::disk {

enum class ClearMethod { kNone, kDiscard, kZero };

std::optional<ClearMethod> clearMethodFromName(std::string_view name);
std::string_view clearMethodName(ClearMethod method);

struct ClearStats {
  std::uint64_t files = 0;
  std::uint64_t bytes_zeroed = 0;    // zero: bytes overwritten
  std::uint64_t bytes_punched = 0;   // discard: bytes that were allocated and are now holes
  std::uint64_t bytes_trimmed = 0;   // discard: what FITRIM reported for the freed ranges
  bool trim_unsupported = false;     // discard: the filesystem refused FITRIM
  std::uint64_t skipped_linked = 0;  // files left uncleared because another name links them
};

// Clears one file in place (it stays, with its size; the caller removes it). A missing file is
// not an error: the clear may be re-run after a crash that happened once the file was gone.
Result<ClearStats> clearFile(const std::string& path, ClearMethod method);

// Clears every regular file directly inside `dir` (disks, console log, anything else the
// instance left). A missing directory is not an error.
Result<ClearStats> clearDirectory(const std::string& dir, ClearMethod method);

}  // namespace kiln::drivers::disk
