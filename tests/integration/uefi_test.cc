// Firmware for real: a UEFI-only guest (GPT, an EFI System Partition with a unified kernel
// image, no boot code for BIOS) under OVMF, chosen by the image's hw_firmware_type.
#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "tests/integration/kilnd_harness.h"
#include "tests/support/local_images.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

std::string uefiGuest() { return KILN_UEFI_GUEST; }

void addUefiImage(KilndHarness& kilnd, const std::string& id, json properties) {
  kiln::testing::addLocalImage(kilnd.imagesDir(), id, kiln::testing::readAll(uefiGuest()), "raw",
                               properties);
}

std::string launch(KilndHarness& kilnd, const std::string& uuid, const std::string& image) {
  auto r = kilnd.api(
      "POST", "/v1/instances",
      json{{"uuid", uuid}, {"name", "fw"}, {"flavor", "test.small"}, {"image", {{"id", image}}}}
          .dump());
  REQUIRE(r.status == 202);
  return uuid;
}

void deleteAndWait(KilndHarness& kilnd, const std::string& uuid) {
  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}

// Polls the console for `seconds`; true when `needle` showed up.
bool consoleShows(KilndHarness& kilnd, const std::string& uuid, const std::string& needle,
                  int seconds) {
  for (int i = 0; i < seconds * 5; ++i) {
    if (kilnd.api("GET", "/v1/instances/" + uuid + "/console").body.find(needle) !=
        std::string::npos) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

}  // namespace

TEST_CASE("hw_firmware_type=uefi boots the UEFI-only guest under OVMF, which says so from inside",
          "[integration][uefi]") {
  KilndHarness kilnd;
  addUefiImage(kilnd, "uefi-guest", {{"hw_firmware_type", "uefi"}});
  kilnd.start();
  const std::string uuid = launch(kilnd, "aa1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f01", "uefi-guest");
  json active = kilnd.waitForState(uuid, "active");
  CHECK(active["image"]["properties"]["hw_firmware_type"] == "uefi");
  std::string console = kilnd.waitForConsole(uuid, "KILN-READY", std::chrono::seconds(120));
  CHECK(console.find("KILN-BOOT firmware=uefi") != std::string::npos);
  // The instance's own firmware variables live with its files, and go with them.
  std::string nvram = kilnd.statePath() + "/instances/" + uuid + "/nvram.fd";
  CHECK(stdfs::exists(nvram));
  auto xml = kiln::testing::virsh({"dumpxml", "kiln-" + uuid});
  REQUIRE(xml);
  CHECK(xml->find("OVMF_CODE_4M.fd") != std::string::npos);
  CHECK(xml->find("secure='no'") != std::string::npos);
  deleteAndWait(kilnd, uuid);
  CHECK_FALSE(stdfs::exists(nvram));
}

TEST_CASE("the same UEFI-only image without the property does not boot under BIOS",
          "[integration][uefi]") {
  KilndHarness kilnd;
  addUefiImage(kilnd, "uefi-guest-unmarked", json::object());
  kilnd.start();
  const std::string uuid =
      launch(kilnd, "aa1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f02", "uefi-guest-unmarked");
  kilnd.waitForState(uuid, "active");  // the domain runs: SeaBIOS just finds nothing to boot
  CHECK_FALSE(consoleShows(kilnd, uuid, "KILN-READY", 15));
  auto xml = kiln::testing::virsh({"dumpxml", "kiln-" + uuid});
  REQUIRE(xml);
  CHECK(xml->find("OVMF") == std::string::npos);
  deleteAndWait(kilnd, uuid);
}

TEST_CASE("os_secure_boot=required: OVMF with enrolled keys refuses the unsigned image",
          "[integration][uefi]") {
  KilndHarness kilnd;
  addUefiImage(kilnd, "uefi-guest-sb",
               {{"hw_firmware_type", "uefi"}, {"os_secure_boot", "required"}});
  kiln::testing::addLocalImage(kilnd.imagesDir(), "bios-sb",
                               kiln::testing::readAll(kiln::testing::guestImagePath()), "raw",
                               {{"os_secure_boot", "required"}});
  kilnd.start();
  const std::string uuid = launch(kilnd, "aa1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f03", "uefi-guest-sb");
  kilnd.waitForState(uuid, "active");
  auto xml = kiln::testing::virsh({"dumpxml", "kiln-" + uuid});
  REQUIRE(xml);
  CHECK(xml->find("secure='yes'") != std::string::npos);
  CHECK(xml->find("<smm state='on'/>") != std::string::npos);
  CHECK(xml->find("q35") != std::string::npos);
  // What the firmware does with an unsigned kernel image, reported as it is: it refuses to run it.
  CHECK(consoleShows(kilnd, uuid, "Access Denied", 60));
  CHECK_FALSE(consoleShows(kilnd, uuid, "KILN-READY", 1));
  deleteAndWait(kilnd, uuid);

  // Secure boot without UEFI is refused with a reason before anything is made.
  const std::string bios = launch(kilnd, "aa1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f04", "bios-sb");
  json failed = kilnd.waitForState(bios, "error");
  CHECK(failed["fault"]["message"].get<std::string>().find("os_secure_boot") != std::string::npos);
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + bios));
  deleteAndWait(kilnd, bios);
}

TEST_CASE("a bad image property fails the launch with a clear fault", "[integration][uefi]") {
  KilndHarness kilnd;
  kiln::testing::addLocalImage(kilnd.imagesDir(), "bad-bus",
                               kiln::testing::readAll(kiln::testing::guestImagePath()), "raw",
                               {{"hw_disk_bus", "floppy-ribbon"}});
  kilnd.start();
  const std::string uuid = launch(kilnd, "aa1d3c0a-51e4-4c4e-9b64-0c2d3a1e7f05", "bad-bus");
  json failed = kilnd.waitForState(uuid, "error");
  CHECK(failed["fault"]["message"].get<std::string>().find("hw_disk_bus") != std::string::npos);
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
  deleteAndWait(kilnd, uuid);
}
