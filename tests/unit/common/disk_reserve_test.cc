#include "common/disk_reserve.h"

#include <catch2/catch.hpp>
#include <optional>

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

// A filesystem whose free space the test sets.
struct FakeFilesystem {
  std::uint64_t free = 1000 * kMiB;
  kiln::DiskReserve reserve{
      "/state", 100 * kMiB,
      [this](const std::string&) -> kiln::Result<std::uint64_t> { return free; }};
};

}  // namespace

TEST_CASE("disk reserve: writers in progress hold their space, the host's reserve is never given") {
  FakeFilesystem fs;
  auto first = fs.reserve.take(500 * kMiB, "image 'a'");
  REQUIRE(first.ok());
  // Alone it would fit (1000 - 100 free); beside the first it does not.
  auto second = fs.reserve.take(500 * kMiB, "image 'b'");
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == kiln::ErrorCode::kResourceExhausted);
  CHECK(second.error().message ==
        "Not enough space in '/state' for image 'b': 500 MiB needed, 1000 MiB free of which 100 "
        "MiB are reserved for the host ([DEFAULT] reserved_host_disk_mb) and 500 MiB held by "
        "other downloads and disks in progress");
  CHECK(fs.reserve.take(400 * kMiB, "image 'c'").ok());  // exactly what is left (taken, released)
  CHECK_FALSE(fs.reserve.take(401 * kMiB, "image 'c'").ok());
  first->release();
  CHECK(fs.reserve.held() == 0);
  CHECK(fs.reserve.take(900 * kMiB, "image 'b'").ok());
  CHECK_FALSE(fs.reserve.take(900 * kMiB + 1, "image 'b'").ok());
}

TEST_CASE("disk reserve: bytes that landed are counted once, by the filesystem") {
  FakeFilesystem fs;
  auto hold = fs.reserve.take(600 * kMiB, "image 'a'");
  REQUIRE(hold.ok());
  // 400 MiB written: the filesystem has 400 MiB less, the hold 400 MiB less.
  fs.free -= 400 * kMiB;
  hold->landed(400 * kMiB);
  CHECK(hold->bytes() == 200 * kMiB);
  CHECK(fs.reserve.held() == 200 * kMiB);
  CHECK(fs.reserve.take(300 * kMiB, "image 'b'").ok());  // 600 - 100 - 200
  CHECK_FALSE(fs.reserve.take(301 * kMiB, "image 'b'").ok());
  hold->landed(10000 * kMiB);  // more than held: never below zero
  CHECK(fs.reserve.held() == 0);
}

TEST_CASE("disk reserve: a hold of unknown size grows until the space is gone") {
  FakeFilesystem fs;
  auto hold = fs.reserve.take(0, "image 'a'");
  REQUIRE(hold.ok());
  CHECK(hold->grow(800 * kMiB, "image 'a'").ok());
  auto more = hold->grow(200 * kMiB, "image 'a'");
  REQUIRE_FALSE(more.ok());
  CHECK(hold->bytes() == 800 * kMiB);  // a refused growth keeps what was held
  {
    kiln::DiskReserve::Hold moved = std::move(*hold);
    CHECK(fs.reserve.held() == 800 * kMiB);
  }
  CHECK(fs.reserve.held() == 0);  // given back when the holder went away
}

TEST_CASE("disk reserve: a filesystem that cannot be read is an error, not free space") {
  kiln::DiskReserve reserve("/gone", 0, [](const std::string&) -> kiln::Result<std::uint64_t> {
    return kiln::Error::internal("Cannot statvfs '/gone'");
  });
  auto taken = reserve.take(1, "image 'a'");
  REQUIRE_FALSE(taken.ok());
  CHECK(taken.error().message == "Cannot statvfs '/gone'");
}
