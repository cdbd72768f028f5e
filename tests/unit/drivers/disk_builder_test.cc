#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "drivers/disk/disk_builder.h"
#include "temp_dir.h"

using kiln::drivers::disk::DiskBuilder;

TEST_CASE("overlays and blank disks are made with explicit formats", "[disk]") {
  kiln::testing::TempDir dir;
  std::string base = dir.path() + "/base";
  {
    std::ofstream out(base);
    out << std::string(1 << 20, 'x');
  }
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img(runner);
  DiskBuilder builder(qemu_img);
  const std::uint64_t gib = 1ULL << 30;
  REQUIRE(builder.createOverlay(dir.path() + "/disk", base, "raw", gib).ok());
  auto size = builder.virtualSize(dir.path() + "/disk", "qcow2");
  REQUIRE(size.ok());
  CHECK(*size == gib);
  REQUIRE(builder.createBlank(dir.path() + "/disk.local", "qcow2", 2 * gib).ok());
  size = builder.virtualSize(dir.path() + "/disk.local", "qcow2");
  REQUIRE(size.ok());
  CHECK(*size == 2 * gib);
}

TEST_CASE("a failing qemu-img is reported with its message", "[disk]") {
  kiln::testing::TempDir dir;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img(runner);
  DiskBuilder builder(qemu_img);
  auto r = builder.createOverlay(dir.path() + "/disk", dir.path() + "/missing", "raw", 1 << 30);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("qemu-img create failed") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.path() + "/disk"));
}
