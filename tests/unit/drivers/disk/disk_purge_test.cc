// Clearing instance files on real files in /tmp: what is left must hold none of the data, holes
// must cost nothing, and nothing outside the instance's own files may be touched.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "drivers/disk/disk_purge.h"
#include "tests/support/temp_dir.h"

using kiln::drivers::disk::clearDirectory;
using kiln::drivers::disk::clearFile;
using kiln::drivers::disk::ClearMethod;

namespace {

const std::string kMarker = "KILN-PURGE-TEST-MARKER-7c1d\n";
constexpr off_t kMiB = 1 << 20;

// A 64 MiB sparse file with 1 MiB of markers at 0, 17 MiB and 40 MiB.
void writeSparse(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  REQUIRE(fd >= 0);
  std::string block;
  while (block.size() < static_cast<std::size_t>(kMiB)) block += kMarker;
  block.resize(kMiB);
  for (off_t at : {off_t{0}, 17 * kMiB, 40 * kMiB}) {
    REQUIRE(::pwrite(fd, block.data(), block.size(), at) == kMiB);
  }
  REQUIRE(::ftruncate(fd, 64 * kMiB) == 0);
  ::close(fd);
}

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool holdsMarker(const std::string& path) {
  return contents(path).find(kMarker) != std::string::npos;
}

}  // namespace

TEST_CASE("zero overwrites only the allocated ranges and keeps the size", "[disk][purge]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/disk.local";
  writeSparse(path);
  REQUIRE(holdsMarker(path));
  auto stats = clearFile(path, ClearMethod::kZero);
  REQUIRE(stats.ok());
  CHECK(stats->files == 1);
  // Holes are skipped: about the 3 MiB that were written, never the 64 MiB of the size.
  CHECK(stats->bytes_zeroed >= 3 * kMiB);
  CHECK(stats->bytes_zeroed < 16 * kMiB);
  CHECK(std::filesystem::file_size(path) == static_cast<std::uintmax_t>(64 * kMiB));
  CHECK_FALSE(holdsMarker(path));
  // Idempotent: a re-run after a crash clears again without harm.
  REQUIRE(clearFile(path, ClearMethod::kZero).ok());
  CHECK_FALSE(holdsMarker(path));
}

TEST_CASE("discard punches the whole file out", "[disk][purge]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/disk";
  writeSparse(path);
  auto stats = clearFile(path, ClearMethod::kDiscard);
  REQUIRE(stats.ok());
  CHECK_FALSE(holdsMarker(path));
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  // Nothing is allocated any more (or, where punching is unsupported, it was zeroed).
  bool no_data = ::lseek(fd, 0, SEEK_DATA) < 0 && errno == ENXIO;
  ::close(fd);
  CHECK((no_data || stats->bytes_zeroed > 0));
  auto again = clearFile(path, ClearMethod::kDiscard);
  REQUIRE(again.ok());
}

TEST_CASE("none leaves the data for the unlink", "[disk][purge]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/disk";
  writeSparse(path);
  REQUIRE(clearFile(path, ClearMethod::kNone).ok());
  CHECK(holdsMarker(path));
}

TEST_CASE("a directory clear touches its own regular files only", "[disk][purge]") {
  kiln::testing::TempDir instance;
  kiln::testing::TempDir elsewhere;
  const std::string base = elsewhere.path() + "/base";
  const std::string shared = elsewhere.path() + "/shared";
  writeSparse(base);
  writeSparse(shared);
  writeSparse(instance.path() + "/disk");
  writeSparse(instance.path() + "/disk.local");
  {
    std::ofstream console(instance.path() + "/console.log");
    console << "boot\n" << kMarker;
  }
  // A symlink (to a base, say) is never followed, and a file with another link is not cleared.
  std::filesystem::create_symlink(base, instance.path() + "/link");
  std::filesystem::create_hard_link(shared, instance.path() + "/hardlink");
  std::filesystem::create_directory(instance.path() + "/sub");

  auto stats = clearDirectory(instance.path(), ClearMethod::kZero);
  REQUIRE(stats.ok());
  CHECK(stats->files == 4);
  CHECK(stats->skipped_linked == 1);
  CHECK_FALSE(holdsMarker(instance.path() + "/disk"));
  CHECK_FALSE(holdsMarker(instance.path() + "/disk.local"));
  CHECK_FALSE(holdsMarker(instance.path() + "/console.log"));
  CHECK(holdsMarker(base));
  CHECK(holdsMarker(shared));

  // A directory that is already gone (a delete re-run after the removal) is fine.
  std::filesystem::remove_all(instance.path() + "/sub");
  auto missing = clearDirectory(instance.path() + "/gone", ClearMethod::kZero);
  REQUIRE(missing.ok());
  CHECK(missing->files == 0);
}

TEST_CASE("clear method names", "[disk][purge]") {
  using kiln::drivers::disk::clearMethodFromName;
  CHECK(clearMethodFromName("zero") == ClearMethod::kZero);
  CHECK(clearMethodFromName("discard") == ClearMethod::kDiscard);
  CHECK(clearMethodFromName("none") == ClearMethod::kNone);
  CHECK_FALSE(clearMethodFromName("shred"));
}
