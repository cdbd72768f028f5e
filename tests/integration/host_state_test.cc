// What kilnd leaves on the host is its own: a lost database does not turn running guests into
// garbage, and no file kilnd makes is readable by another user.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/integration/kilnd_harness.h"

using kiln::testing::KilndHarness;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

std::string launchBody(const std::string& uuid) {
  return json{{"uuid", uuid},
              {"name", "host-" + uuid.substr(0, 8)},
              {"flavor", "test.small"},
              {"image", {{"id", "guest"}}}}
      .dump();
}

// kiln.db and its WAL and SHM moved aside: what a restore gone wrong, or an operator "fixing" a
// database, looks like to kilnd.
void moveDatabaseAside(const std::string& state_path, const std::string& to) {
  stdfs::create_directories(to);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string name = std::string("kiln.db") + suffix;
    if (stdfs::exists(state_path + "/" + name)) {
      stdfs::rename(state_path + "/" + name, to + "/" + name);
    }
  }
}

bool domainRunning(const std::string& uuid) {
  return kiln::testing::virsh({"domstate", "kiln-" + uuid}).value_or("").find("running") !=
         std::string::npos;
}

// Whether the user nobody can open `path` for reading (in a child that drops to nobody).
bool nobodyCanRead(const std::string& path) {
  const passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody != nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(nobody->pw_gid) != 0 ||
        ::setuid(nobody->pw_uid) != 0) {
      _exit(2);
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW);
    _exit(fd >= 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) != 2);
  return WEXITSTATUS(status) == 0;
}

}  // namespace

TEST_CASE("a lost kiln.db: kilnd refuses to start, --adopt brings the guest back, delete is clean",
          "[integration][host-state]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "0b5e7d2c-1f3a-4e6b-9c8d-2a4f6e8b0c11";
  REQUIRE(kilnd.api("POST", "/v1/instances", launchBody(uuid)).status == 202);
  kilnd.waitForState(uuid, "active");
  auto qemu_id = kiln::testing::virsh({"domid", "kiln-" + uuid});
  REQUIRE(qemu_id);

  // An online backup while kilnd serves: a private, consistent copy.
  const std::string backup = kilnd.dir() + "/kiln-backup.db";
  auto backed_up = kilnd.runOnce({"--backup", backup});
  CHECK(backed_up.exit_code == 0);
  struct stat backup_stat {};
  REQUIRE(::stat(backup.c_str(), &backup_stat) == 0);
  CHECK((backup_stat.st_mode & 0777) == 0600);
  // A second backup to the same file is refused: a backup is never overwritten.
  CHECK(kilnd.runOnce({"--backup", backup}).exit_code != 0);

  kilnd.stop();
  moveDatabaseAside(kilnd.statePath(), kilnd.dir() + "/aside");

  // The guest and its disks are evidence, not garbage: kilnd names them and stops.
  CHECK_FALSE(kilnd.tryStart());
  const std::string log = kilnd.logText();
  CHECK(log.find("will not start") != std::string::npos);
  CHECK(log.find("domain 'kiln-" + uuid + "'") != std::string::npos);
  CHECK(log.find(kilnd.statePath() + "/instances/" + uuid) != std::string::npos);
  CHECK(log.find("--adopt") != std::string::npos);
  CHECK(log.find("Removing") == std::string::npos);
  // Nothing was created, so the next start refuses the same way; nothing was touched.
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/kiln.db"));
  CHECK(domainRunning(uuid));
  CHECK(kiln::testing::virsh({"domid", "kiln-" + uuid}) == qemu_id);
  CHECK(stdfs::exists(kilnd.statePath() + "/instances/" + uuid + "/disk"));
  CHECK(stdfs::exists(kilnd.statePath() + "/instances/" + uuid + "/disk.local"));
  CHECK_FALSE(kilnd.tryStart());

  auto adopted = kilnd.runOnce({"--adopt"});
  INFO(adopted.output);
  REQUIRE(adopted.exit_code == 0);
  CHECK(adopted.output.find("adopted " + uuid) != std::string::npos);

  kilnd.start();
  json record = kilnd.waitForState(uuid, "active");
  CHECK(record["name"] == "host-" + uuid.substr(0, 8));
  CHECK(record["power_state"] == "running");
  CHECK(kiln::testing::virsh({"domid", "kiln-" + uuid}) == qemu_id);
  auto host = kilnd.api("GET", "/v1/host");
  REQUIRE(host.status == 200);
  CHECK(host.json["orphans"].empty());

  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));
}

TEST_CASE("a lost kiln.db: --purge-orphans removes the guest and its disks, then kilnd starts",
          "[integration][host-state]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "7c2a9e4f-3b1d-4a8c-8e6f-5d3b1a9c7e22";
  REQUIRE(kilnd.api("POST", "/v1/instances", launchBody(uuid)).status == 202);
  kilnd.waitForState(uuid, "active");
  kilnd.stop();
  moveDatabaseAside(kilnd.statePath(), kilnd.dir() + "/aside");
  CHECK_FALSE(kilnd.tryStart());
  CHECK(domainRunning(uuid));

  auto purged = kilnd.runOnce({"--purge-orphans"});
  INFO(purged.output);
  REQUIRE(purged.exit_code == 0);
  CHECK(purged.output.find("removed domain '" + uuid + "'") != std::string::npos);
  CHECK(purged.output.find("removed directory") != std::string::npos);
  CHECK_FALSE(kiln::testing::virsh({"dominfo", "kiln-" + uuid}));
  CHECK_FALSE(stdfs::exists(kilnd.statePath() + "/instances/" + uuid));

  // The host holds nothing of kilnd's now: a new database is the right answer.
  kilnd.start();
  auto listed = kilnd.api("GET", "/v1/instances");
  REQUIRE(listed.status == 200);
  CHECK(listed.json["instances"].empty());
}

TEST_CASE("an unprivileged user can read nothing kilnd made", "[integration][host-state]") {
  KilndHarness kilnd;
  kilnd.addGuestImage("guest");
  kilnd.start();
  const std::string uuid = "3e8d1b6a-9c4f-4d2e-a7b5-1f6c8e3a5d33";
  REQUIRE(kilnd.api("POST", "/v1/instances", launchBody(uuid)).status == 202);
  kilnd.waitForState(uuid, "active");
  kilnd.waitForConsole(uuid, "KILN-READY");  // the console log has been written to

  const group* kvm = ::getgrnam("kvm");
  REQUIRE(kvm != nullptr);
  std::vector<std::string> files;
  for (const auto& entry : stdfs::recursive_directory_iterator(kilnd.statePath())) {
    if (!entry.is_regular_file()) continue;
    const std::string path = entry.path().string();
    files.push_back(path);
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    INFO(path << " mode " << std::oct << (st.st_mode & 07777) << " uid " << std::dec << st.st_uid
              << " gid " << st.st_gid);
    CHECK((st.st_mode & 0007) == 0);  // never anything for others
    const bool base = entry.path().parent_path().filename() == "_base" &&
                      entry.path().filename().string().find('.') == std::string::npos;
    if (base) {
      // Shared by every guest, written by none: root-owned, read-only to QEMU's group.
      CHECK(st.st_uid == 0);
      CHECK(st.st_gid == kvm->gr_gid);
      CHECK((st.st_mode & 0777) == 0640);
    } else {
      CHECK((st.st_mode & 0077) == 0);
    }
    CHECK_FALSE(nobodyCanRead(path));
  }
  // The files this test is about were there to be judged.
  auto has = [&](const std::string& suffix) {
    return std::any_of(files.begin(), files.end(),
                       [&](const std::string& f) { return f.ends_with(suffix); });
  };
  CHECK(has("/kiln.db"));
  CHECK(has("/kiln.db-wal"));
  CHECK(has("/instances/" + uuid + "/disk"));
  CHECK(has("/instances/" + uuid + "/disk.local"));
  CHECK(has("/instances/" + uuid + "/console.log"));
  CHECK(has(".json"));  // a base's image record

  REQUIRE(kilnd.api("DELETE", "/v1/instances/" + uuid).status == 202);
  REQUIRE(kilnd.waitGone(uuid));
}
