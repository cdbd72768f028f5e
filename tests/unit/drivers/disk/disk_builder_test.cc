#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "drivers/disk/disk_builder.h"
#include "tests/support/temp_dir.h"

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

namespace {
kiln::Result<kiln::CommandOutput> runArgv(kiln::CommandRunner& runner,
                                          std::vector<std::string> argv) {
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  return runner.run(spec);
}
}  // namespace

namespace {

// Records each command line and what the secret file it names held while the command ran: the
// key must be readable by the child through that path, and nowhere in argv.
struct KeyReadingRunner final : kiln::CommandRunner {
  std::vector<std::vector<std::string>> calls;
  std::string key_seen;
  int flaky_failures = 0;  // answers with QEMU's PBKDF2 benchmark bug this many times first
  kiln::Result<kiln::CommandOutput> run(const kiln::CommandSpec& spec) override {
    calls.push_back(spec.argv);
    if (flaky_failures > 0) {
      --flaky_failures;
      kiln::CommandOutput out;
      out.exit_code = 1;
      out.stderr_text = "qemu-img: /x/disk.local: Unable to get accurate CPU usage\n";
      return out;
    }
    for (const auto& arg : spec.argv) {
      auto at = arg.find("file=");
      if (arg.starts_with("secret,") && at != std::string::npos) {
        std::ifstream in(arg.substr(at + 5));
        std::stringstream text;
        text << in.rdbuf();
        key_seen = text.str();
      }
    }
    return kiln::CommandOutput{};
  }
};

}  // namespace

TEST_CASE("an encrypted disk's key reaches qemu-img through a memory file, not argv", "[disk]") {
  KeyReadingRunner runner;
  kiln::QemuImg qemu_img(runner);
  DiskBuilder builder(qemu_img);
  const std::string passphrase = "0123456789abcdef-very-secret-passphrase";
  kiln::drivers::disk::LuksOptions luks;
  luks.cipher_alg = "serpent-128";
  luks.cipher_mode = "cbc";
  luks.ivgen_alg = "essiv";
  luks.ivgen_hash_alg = "sha256";
  REQUIRE(builder.createEncryptedBlank("/x/disk.local", 1ULL << 30, luks, passphrase).ok());
  REQUIRE(runner.calls.size() == 1);
  const auto& argv = runner.calls[0];
  for (const auto& arg : argv) CHECK(arg.find(passphrase) == std::string::npos);
  CHECK(runner.key_seen == passphrase);
  std::string key_arg = argv[6];
  CHECK(key_arg.starts_with("secret,id=sec0,file=/proc/"));
  std::vector<std::string> expected = {
      "qemu-img",
      "create",
      "-q",
      "-f",
      "qcow2",
      "--object",
      key_arg,
      "-o",
      "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=serpent-128,"
      "encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.iter-time=10,"
      "encrypt.ivgen-hash-alg=sha256",
      "/x/disk.local",
      "1073741824"};
  CHECK(argv == expected);
  // The memory file is gone once the call returns.
  CHECK_FALSE(std::filesystem::exists(key_arg.substr(key_arg.find("file=") + 5)));
}

TEST_CASE("qemu-img makes a LUKS qcow2 that holds no trace of the passphrase", "[disk]") {
  kiln::testing::TempDir dir;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img(runner);
  DiskBuilder builder(qemu_img);
  const std::string passphrase = "kiln-unit-test-passphrase-5f1e0c";
  const std::string path = dir.path() + "/disk.local";
  REQUIRE(builder.createEncryptedBlank(path, 1ULL << 30, {}, passphrase).ok());
  auto out = runArgv(runner, {"qemu-img", "info", "-f", "qcow2", "--output=json", path});
  REQUIRE(out.ok());
  CHECK(out->stdout_text.find("\"encrypted\": true") != std::string::npos);
  CHECK(out->stdout_text.find("\"cipher-alg\": \"aes-256\"") != std::string::npos);
  CHECK(out->stdout_text.find("\"cipher-mode\": \"xts\"") != std::string::npos);
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  CHECK(bytes.str().find(passphrase) == std::string::npos);
  // The wrong passphrase does not open it (so the right one is what protects it).
  auto wrong = runArgv(
      runner, {"qemu-img", "check", "--object", "secret,id=s,data=not-the-key", "--image-opts",
               "driver=qcow2,file.filename=" + path + ",encrypt.key-secret=s"});
  REQUIRE(wrong.ok());
  CHECK_FALSE(wrong->succeeded());
}

TEST_CASE("QEMU's flaky PBKDF2 benchmark is retried, other failures are not", "[disk]") {
  KeyReadingRunner runner;
  runner.flaky_failures = 3;
  kiln::QemuImg qemu_img(runner);
  DiskBuilder builder(qemu_img);
  REQUIRE(builder.createEncryptedBlank("/x/disk.local", 1ULL << 30, {}, "k3y").ok());
  CHECK(runner.calls.size() == 4);

  struct Failing final : kiln::CommandRunner {
    int calls = 0;
    kiln::Result<kiln::CommandOutput> run(const kiln::CommandSpec&) override {
      ++calls;
      kiln::CommandOutput out;
      out.exit_code = 1;
      out.stderr_text = "qemu-img: /x/disk.local: No space left on device\n";
      return out;
    }
  } failing;
  kiln::QemuImg failing_img(failing);
  DiskBuilder failing_builder(failing_img);
  auto r = failing_builder.createEncryptedBlank("/x/disk.local", 1ULL << 30, {}, "k3y");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == kiln::ErrorCode::kResourceExhausted);
  CHECK(failing.calls == 1);
}
