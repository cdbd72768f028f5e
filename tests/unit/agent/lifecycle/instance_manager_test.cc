// The lifecycle against a fake hypervisor, with the real image cache, store and qemu-img. Jobs
// run on the test's own thread (ManualExecutor): a test runs them to the end, or stops between
// them, and never polls.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <thread>

#include "agent/api/api_router.h"
#include "agent/lifecycle/instance_manager.h"
#include "common/uuid.h"
#include "tests/fakes/fake_compute_driver.h"
#include "tests/fakes/fake_host_network.h"
#include "tests/support/local_images.h"
#include "tests/support/manual_clock.h"
#include "tests/support/manual_executor.h"
#include "tests/support/temp_dir.h"

using kiln::lifecycle::InstanceManager;
using kiln::state::InstanceRecord;
using kiln::state::InstanceState;
namespace stdfs = std::filesystem;

namespace {
kiln::Result<kiln::CommandOutput> runArgv(kiln::CommandRunner& runner,
                                          std::vector<std::string> argv) {
  kiln::CommandSpec spec;
  spec.argv = std::move(argv);
  return runner.run(spec);
}
}  // namespace

namespace {

constexpr const char* kUuid = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10";

struct Harness {
  kiln::testing::TempDir dir;
  std::string images = dir.path() + "/images";
  std::string state = dir.path() + "/state";
  kiln::testing::ManualClock clock;
  // The cache ages bases by their files' real mtimes.
  kiln::SystemClock cache_clock;
  kiln::testing::ManualExecutor executor;
  // Set by threaded(): a real pool, for the tests about concurrency.
  std::optional<kiln::WorkQueue> pool;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img{runner};
  kiln::drivers::disk::DiskBuilder disks{qemu_img};
  kiln::testing::FakeComputeDriver driver;
  kiln::drivers::volume::NativeIscsiConnector connector{driver};
  kiln::SecretBox secrets = kiln::SecretBox::fromKeyForTest({});
  kiln::imagecache::LocalDirSource source{images};
  kiln::imagecache::LocalDirUploader uploader{images};
  std::unique_ptr<kiln::imagecache::ImageCache> cache;
  std::unique_ptr<kiln::state::InstanceStore> store;
  std::unique_ptr<InstanceManager> manager;
  bool force_raw = true;
  bool use_cow;
  // Set before restart() to change them.
  kiln::drivers::disk::ClearMethod clear = kiln::drivers::disk::ClearMethod::kZero;
  bool encrypt = false;
  std::chrono::milliseconds job_timeout{std::chrono::seconds(30)};
  kiln::sync::OrphanAction orphan_action = kiln::sync::OrphanAction::kReport;
  std::chrono::seconds orphan_grace{3600};
  std::shared_ptr<kiln::testing::FakeHostNetwork> network =
      std::make_shared<kiln::testing::FakeHostNetwork>();
  bool force_config_drive = false;

  explicit Harness(bool cow = true) : use_cow(cow) {
    stdfs::create_directories(images);
    stdfs::create_directories(state);
    kiln::testing::addLocalImage(images, "img", std::string(4 << 20, 'k'));
    start();
  }
  void start() {
    kiln::imagecache::ImageCacheOptions options;
    options.base_dir = state + "/_base";
    options.force_raw = force_raw;
    cache = std::make_unique<kiln::imagecache::ImageCache>(source, qemu_img, options, cache_clock);
    REQUIRE(cache->init().ok());
    auto s = kiln::state::InstanceStore::open(state + "/kiln.db");
    REQUIRE(s.ok());
    store = std::move(s).value();
    kiln::lifecycle::ManagerOptions manager_options{state + "/instances", state + "/snapshots",
                                                    use_cow};
    manager_options.ephemeral_clear = clear;
    manager_options.encrypt_ephemeral = encrypt;
    manager_options.job_timeout = job_timeout;
    manager_options.orphan_action = orphan_action;
    manager_options.orphan_grace = orphan_grace;
    manager_options.quarantine_dir = state + "/quarantine";
    manager_options.host_network = network;
    manager_options.force_config_drive = force_config_drive;
    kiln::Executor& jobs = pool ? static_cast<kiln::Executor&>(*pool) : executor;
    manager = std::make_unique<InstanceManager>(driver, *cache, disks, connector, secrets, uploader,
                                                *store, clock, jobs, manager_options);
    // As kilnd starts: recovery's jobs, then the first reconcile and what it queues.
    REQUIRE(manager->recover().ok());
    runJobs();
    manager->reconcileAll();
    runJobs();
  }
  void restart() {
    manager.reset();
    store.reset();
    cache.reset();
    start();
  }
  // From now on jobs run on two real workers.
  void threaded() {
    manager.reset();
    pool.emplace(2);
    restart();
  }
  // Runs every queued job, and the jobs they queue, to the end.
  void runJobs() {
    if (pool) {
      pool->waitIdle();
    } else {
      executor.runUntilIdle();
    }
  }
  kiln::api::LaunchRequest request(const std::string& image = "img", std::uint64_t root_gb = 1,
                                   std::uint64_t eph_gb = 1) {
    kiln::api::LaunchRequest r;
    r.uuid = kUuid;
    r.name = "vm";
    r.flavor.vcpus = 1;
    r.flavor.memory_mb = 128;
    r.flavor.root_gb = root_gb;
    r.flavor.ephemeral_gb = eph_gb;
    r.image_id = image;
    r.fingerprint = "fp-" + image + std::to_string(root_gb);
    return r;
  }
  // The instance once every queued job has run.
  InstanceRecord waitSettled(const std::string& uuid = kUuid) {
    runJobs();
    auto rec = manager->get(uuid);
    REQUIRE(rec.ok());
    if (rec->state == InstanceState::kBuilding) FAIL("instance stayed building");
    return *rec;
  }
  bool waitGone(const std::string& uuid = kUuid) {
    runJobs();
    return !manager->get(uuid).ok();
  }
  std::string instanceDir() const { return state + "/instances/" + kUuid; }
};

}  // namespace

namespace {

kiln::api::VifRequest vifFor(const std::string& port, const std::string& mac,
                             const std::string& devname) {
  nlohmann::json vif = {
      {"id", port},
      {"address", mac},
      {"type", "bridge"},
      {"devname", devname},
      {"network",
       {{"bridge", "brtest"},
        {"subnets", nlohmann::json::array(
                        {{{"cidr", "198.51.100.0/24"},
                          {"ips", nlohmann::json::array({{{"address", "198.51.100.5"}}})}}})}}}};
  auto parsed = kiln::api::parseVif(vif, "test");
  REQUIRE(parsed.ok());
  return *parsed;
}

}  // namespace

TEST_CASE("a launch makes both disks, spawns, and records the timeline", "[manager]") {
  Harness h;
  auto accepted = h.manager->launch(h.request());
  REQUIRE(accepted.ok());
  CHECK(accepted->state == InstanceState::kBuilding);
  auto rec = h.waitSettled();
  INFO(rec.fault);
  REQUIRE(rec.state == InstanceState::kActive);
  CHECK(rec.power_state == "running");
  REQUIRE(rec.disks.size() == 2);
  CHECK(rec.disks[0].device == "vda");
  CHECK(rec.disks[0].format == "qcow2");
  CHECK(rec.disks[0].backing_format == "raw");
  CHECK(rec.disks[0].virtual_size == (1ULL << 30));
  CHECK(rec.disks[1].device == "vdb");
  CHECK(stdfs::exists(rec.disks[0].path));
  CHECK(stdfs::exists(rec.disks[1].path));
  std::vector<std::string> steps;
  for (auto& s : rec.timeline) steps.push_back(s.name);
  CHECK(steps == std::vector<std::string>{"image.access", "image.record", "image.download",
                                          "image.inspect", "disk.root", "disk.ephemeral",
                                          "domain.start"});
  REQUIRE(h.driver.spawned.size() == 1);
  CHECK(h.driver.spawned[0].disks[0].backing_path == rec.disks[0].backing_path);
}

TEST_CASE("the same request again creates nothing new, a different one conflicts", "[manager]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  auto again = h.manager->launch(h.request());
  REQUIRE(again.ok());
  CHECK(again->state == InstanceState::kActive);
  CHECK(h.driver.spawned.size() == 1);
  auto other = h.manager->launch(h.request("img", 2));
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().code == kiln::ErrorCode::kConflict);
}

TEST_CASE("an image larger than the root disk fails with a fault and leaves nothing", "[manager]") {
  Harness h;
  // A small qcow2 whose header claims 2 GiB: too big for a 1 GB root disk.
  {
    std::string path = h.dir.path() + "/big.qcow2";
    REQUIRE(std::system(("qemu-img create -q -f qcow2 " + path + " 2G").c_str()) == 0);
    kiln::testing::addLocalImage(h.images, "big", kiln::testing::readAll(path), "qcow2");
  }
  REQUIRE(h.manager->launch(h.request("big")).ok());
  auto rec = h.waitSettled();
  CHECK(rec.state == InstanceState::kError);
  CHECK(rec.fault.find("larger than the flavor's root disk") != std::string::npos);
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
  CHECK(h.driver.spawned.empty());
  CHECK(rec.disks.empty());
}

TEST_CASE("a hash mismatch fails the launch and caches nothing", "[manager]") {
  Harness h;
  kiln::testing::addLocalImage(h.images, "bad", std::string(1024, 'a'), "raw",
                               {{"os_hash_value", std::string(128, '0')}});
  REQUIRE(h.manager->launch(h.request("bad")).ok());
  auto rec = h.waitSettled();
  CHECK(rec.state == InstanceState::kError);
  CHECK(rec.fault.find("verification") != std::string::npos);
  CHECK_FALSE(stdfs::exists(h.cache->basePathFor("bad")));
  CHECK_FALSE(stdfs::exists(h.cache->basePathFor("bad") + ".part"));
}

TEST_CASE("a spawn failure rolls back disks and reports the reason", "[manager]") {
  Harness h;
  h.driver.fail_spawn = kiln::Error::internal("Starting instance failed: no memory");
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  CHECK(rec.state == InstanceState::kError);
  CHECK(rec.fault == "Starting instance failed: no memory");
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
  // The cached base stays: other instances may use it.
  CHECK(stdfs::exists(h.cache->basePathFor("img")));
}

TEST_CASE("delete removes the domain, the files and the record, the base stays", "[manager]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  std::string base_before = kiln::testing::readAll(h.cache->basePathFor("img"));
  auto del = h.manager->requestDelete(kUuid);
  REQUIRE(del.ok());
  CHECK(del->state == InstanceState::kDeleting);
  REQUIRE(h.waitGone());
  CHECK_FALSE(h.driver.hasDomain(kUuid));
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
  auto stored = h.store->get(kUuid);
  REQUIRE(stored.ok());
  CHECK_FALSE(stored->has_value());
  CHECK(kiln::testing::readAll(h.cache->basePathFor("img")) == base_before);
  CHECK(h.manager->requestDelete(kUuid).error().code == kiln::ErrorCode::kNotFound);
}

TEST_CASE("a restart keeps active instances and fails interrupted launches", "[manager]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  REQUIRE(h.waitSettled().state == InstanceState::kActive);
  // A second instance whose launch was cut short by a crash: its record says building.
  InstanceRecord crashed;
  crashed.uuid = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
  crashed.name = "half";
  crashed.image_id = "img";
  crashed.state = InstanceState::kBuilding;
  crashed.request_fingerprint = "x";
  REQUIRE(h.store->put(crashed).ok());
  stdfs::create_directories(h.state + "/instances/" + crashed.uuid);
  h.restart();
  auto first = h.manager->get(kUuid);
  REQUIRE(first.ok());
  CHECK(first->state == InstanceState::kActive);
  auto half = h.waitSettled(crashed.uuid);
  CHECK(half.state == InstanceState::kError);
  CHECK(half.fault.find("interrupted") != std::string::npos);
  CHECK_FALSE(stdfs::exists(h.state + "/instances/" + crashed.uuid));
}

TEST_CASE("a restart resumes an interrupted delete", "[manager]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  auto rec = h.store->get(kUuid);
  REQUIRE(rec.ok());
  InstanceRecord deleting = **rec;
  deleting.state = InstanceState::kDeleting;
  REQUIRE(h.store->put(deleting).ok());
  h.restart();
  REQUIRE(h.waitGone());
  CHECK_FALSE(h.driver.hasDomain(kUuid));
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("reconcile follows the hypervisor", "[manager]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  // No job runs now (they ran on this thread), so one pass sees the instance.
  auto reconcileUntil = [&](InstanceState wanted) {
    h.manager->reconcileAll();
    return h.manager->get(kUuid)->state == wanted;
  };
  h.driver.setPower(kUuid, kiln::drivers::PowerState::kShutoff);
  CHECK(reconcileUntil(InstanceState::kStopped));
  h.driver.setPower(kUuid, kiln::drivers::PowerState::kRunning);
  CHECK(reconcileUntil(InstanceState::kActive));
  {
    std::lock_guard lock(h.driver.mutex_);
    h.driver.domains.erase(kUuid);
  }
  CHECK(reconcileUntil(InstanceState::kError));
  CHECK(h.manager->get(kUuid)->fault.find("disappeared") != std::string::npos);
}

TEST_CASE("concurrent launches of one image download it once", "[manager]") {
  Harness h;
  h.threaded();
  std::vector<std::string> uuids;
  for (int i = 0; i < 4; ++i) {
    auto r = h.request();
    r.uuid = fmt::format("0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b1{}", i);
    uuids.push_back(r.uuid);
    REQUIRE(h.manager->launch(r).ok());
  }
  int downloads = 0;
  for (auto& u : uuids) {
    auto rec = h.waitSettled(u);
    REQUIRE(rec.state == InstanceState::kActive);
    for (auto& s : rec.timeline) downloads += s.name == "image.download";
  }
  CHECK(downloads == 1);
}

TEST_CASE("with use_cow_images off vda is a standalone copy of the base", "[manager]") {
  Harness h(false);
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  INFO(rec.fault);
  REQUIRE(rec.state == InstanceState::kActive);
  CHECK(rec.disks[0].backing_path.empty());
  CHECK(h.driver.spawned[0].disks[0].backing_path.empty());
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img(runner);
  auto info = qemu_img.info(rec.disks[0].path, "qcow2");
  REQUIRE(info.ok());
  CHECK_FALSE(info->backing_filename);
  CHECK(info->virtual_size == (1ULL << 30));
}

TEST_CASE("instances pin their image against the cache manager", "[manager]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  CHECK(h.manager->imagesInUse() == std::set<std::string>{"img"});
  CHECK(h.cache->removeUnused(h.manager->imagesInUse(), std::chrono::seconds(0)).empty());
  REQUIRE(h.manager->requestDelete(kUuid).ok());
  REQUIRE(h.waitGone());
  CHECK(h.manager->imagesInUse().empty());
  CHECK(h.cache->removeUnused(h.manager->imagesInUse(), std::chrono::seconds(0)) ==
        std::vector<std::string>{"img"});
}

namespace {
kiln::api::BlockDeviceRequest chapVolume(const std::string& id, const std::string& device) {
  kiln::api::BlockDeviceRequest b;
  b.volume_id = id;
  b.device = device;
  b.target.paths.push_back({"127.0.0.1", 3260, "iqn.2010-10.org.openstack:" + id, 1});
  b.target.auth_method = "CHAP";
  b.target.auth_username = "user";
  b.target.auth_password = "pa55-" + id;
  return b;
}
}  // namespace

TEST_CASE("volumes: secrets defined for CHAP, passwords only sealed, removed on delete",
          "[manager][volumes]") {
  Harness h;
  auto req = h.request();
  req.block_devices.push_back(chapVolume("vol-1", "vdc"));
  REQUIRE(h.manager->launch(req).ok());
  auto rec = h.waitSettled();
  INFO(rec.fault);
  REQUIRE(rec.state == InstanceState::kActive);
  REQUIRE(rec.volumes.size() == 1);
  CHECK(rec.volumes[0].device == "vdc");
  const std::string usage = rec.volumes[0].secret_usage;
  CHECK(h.driver.secrets.at(usage) == "pa55-vol-1");
  // The disk QEMU gets names the secret, never the password.
  const auto& disks = h.driver.spawned[0].disks;
  REQUIRE(disks.size() == 3);
  CHECK(disks[2].source == kiln::drivers::DiskSpec::Source::kIscsi);
  CHECK(disks[2].secret_usage == usage);
  CHECK(disks[2].iscsi_name == "iqn.2010-10.org.openstack:vol-1/1");
  // The store holds the password sealed, not in clear.
  std::string db = kiln::testing::readAll(h.state + "/kiln.db") +
                   kiln::testing::readAll(h.state + "/kiln.db-wal");
  CHECK(db.find("pa55-vol-1") == std::string::npos);
  auto stored = h.store->get(kUuid);
  REQUIRE(stored.ok());
  REQUIRE((*stored)->sealed_passwords.count("vol-1") == 1);
  CHECK(h.secrets.open((*stored)->sealed_passwords.at("vol-1")).value() == "pa55-vol-1");

  REQUIRE(h.manager->requestDelete(kUuid).ok());
  REQUIRE(h.waitGone());
  CHECK(h.driver.secrets.empty());
}

TEST_CASE("a failed spawn removes the volume's secret too", "[manager][volumes]") {
  Harness h;
  h.driver.fail_spawn = kiln::Error::internal("iSCSI login failed");
  auto req = h.request();
  req.block_devices.push_back(chapVolume("vol-1", "vdc"));
  REQUIRE(h.manager->launch(req).ok());
  auto rec = h.waitSettled();
  CHECK(rec.state == InstanceState::kError);
  CHECK(rec.volumes.empty());
  CHECK(h.driver.secrets.empty());
}

TEST_CASE("boot from volume: no image, vda is the volume", "[manager][volumes]") {
  Harness h;
  auto req = h.request("");
  auto root = chapVolume("root-vol", "vda");
  root.boot = true;
  req.block_devices.push_back(root);
  REQUIRE(h.manager->launch(req).ok());
  auto rec = h.waitSettled();
  INFO(rec.fault);
  REQUIRE(rec.state == InstanceState::kActive);
  const auto& disks = h.driver.spawned[0].disks;
  CHECK(std::none_of(disks.begin(), disks.end(), [](const auto& d) {
    return d.device == "vda" && d.source == kiln::drivers::DiskSpec::Source::kFile;
  }));
  auto root_disk =
      std::find_if(disks.begin(), disks.end(), [](const auto& d) { return d.device == "vda"; });
  REQUIRE(root_disk != disks.end());
  CHECK(root_disk->boot);
  CHECK(h.cache->list().empty());
}

TEST_CASE("hot attach and detach record the volume and its secret", "[manager][volumes]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  auto bdm = chapVolume("hot", "");
  auto accepted = h.manager->attachVolume(kUuid, bdm);
  REQUIRE(accepted.ok());
  CHECK(accepted->task_state == kiln::state::TaskState::kAttachingVolume);
  h.runJobs();
  auto rec = h.manager->get(kUuid);
  REQUIRE(rec->volumes.size() == 1);
  CHECK(rec->volumes[0].device == "vdc");  // vda root, vdb ephemeral
  CHECK(h.driver.attached[kUuid] == std::vector<std::string>{"vdc"});
  CHECK(h.manager->attachVolume(kUuid, bdm).error().code == kiln::ErrorCode::kConflict);
  REQUIRE(h.manager->detachVolume(kUuid, "hot").ok());
  h.runJobs();
  CHECK(h.manager->get(kUuid)->volumes.empty());
  CHECK(h.driver.attached[kUuid].empty());
  CHECK(h.driver.secrets.empty());
  CHECK(h.manager->detachVolume(kUuid, "hot").error().code == kiln::ErrorCode::kNotFound);
}

TEST_CASE("reconcile re-creates a CHAP secret that libvirtd forgot", "[manager][volumes]") {
  Harness h;
  auto req = h.request();
  req.block_devices.push_back(chapVolume("vol-1", "vdc"));
  REQUIRE(h.manager->launch(req).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kActive);
  {
    std::lock_guard lock(h.driver.mutex_);
    h.driver.secrets.clear();  // what a libvirtd restart does to ephemeral secrets
  }
  h.manager->reconcileAll();
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.secrets[rec.volumes[0].secret_usage] == "pa55-vol-1");
}

TEST_CASE("stop, start and reboot follow the state rules", "[manager][power]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  auto settle = [&] {
    h.runJobs();
    return *h.manager->get(kUuid);
  };
  using kiln::lifecycle::PowerAction;
  CHECK(h.manager->powerAction(kUuid, PowerAction::kStart).error().code ==
        kiln::ErrorCode::kConflict);
  auto stopping = h.manager->powerAction(kUuid, PowerAction::kStop);
  REQUIRE(stopping.ok());
  CHECK(stopping->task_state == kiln::state::TaskState::kPoweringOff);
  CHECK(settle().state == InstanceState::kStopped);
  CHECK(h.manager->powerAction(kUuid, PowerAction::kStop).error().code ==
        kiln::ErrorCode::kConflict);
  CHECK(h.manager->powerAction(kUuid, PowerAction::kSoftReboot).error().code ==
        kiln::ErrorCode::kConflict);
  REQUIRE(h.manager->powerAction(kUuid, PowerAction::kStart).ok());
  CHECK(settle().state == InstanceState::kActive);
  REQUIRE(h.manager->powerAction(kUuid, PowerAction::kSoftReboot).ok());
  auto rec = settle();
  CHECK(rec.state == InstanceState::kActive);
  CHECK(h.driver.reboots == 1);
  CHECK(h.manager->powerAction("00000000-0000-4000-8000-000000000000", PowerAction::kStop)
            .error()
            .code == kiln::ErrorCode::kNotFound);
}

TEST_CASE("a crashed domain puts the instance in error with a fault", "[manager][power]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  h.waitSettled();
  h.driver.setPower(kUuid, kiln::drivers::PowerState::kCrashed);
  h.manager->reconcileAll();
  auto rec = h.manager->get(kUuid);
  CHECK(rec->state == InstanceState::kError);
  CHECK(rec->fault.find("QEMU process ended unexpectedly") != std::string::npos);
}

// ---- Ephemeral purge and encryption ----

namespace {

const std::string kTenantMark = "KILN-TENANT-DATA-0b5e\n";

// Writes tenant data into a disk file (as a guest would through QEMU) and returns a descriptor
// that keeps the inode readable after the delete unlinked it: what it then holds is exactly what
// the delete left in the freed blocks.
int plantTenantData(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::string block;
  while (block.size() < 65536) block += kTenantMark;
  REQUIRE(::pwrite(fd, block.data(), block.size(), 1 << 20) == static_cast<ssize_t>(block.size()));
  return fd;
}

bool stillHoldsTenantData(int fd) {
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  std::string all(static_cast<std::size_t>(st.st_size), '\0');
  REQUIRE(::pread(fd, all.data(), all.size(), 0) >= 0);
  return all.find(kTenantMark) != std::string::npos;
}

}  // namespace

TEST_CASE("delete clears vda and vdb before unlinking them, or not with none", "[manager][purge]") {
  auto method =
      GENERATE(kiln::drivers::disk::ClearMethod::kZero, kiln::drivers::disk::ClearMethod::kDiscard,
               kiln::drivers::disk::ClearMethod::kNone);
  Harness h;
  h.clear = method;
  h.restart();
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kActive);
  int vda = plantTenantData(rec.disks[0].path);
  int vdb = plantTenantData(rec.disks[1].path);
  std::string base_before = kiln::testing::readAll(h.cache->basePathFor("img"));
  REQUIRE(h.manager->requestDelete(kUuid).ok());
  REQUIRE(h.waitGone());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
  bool kept = method == kiln::drivers::disk::ClearMethod::kNone;
  CHECK(stillHoldsTenantData(vda) == kept);
  CHECK(stillHoldsTenantData(vdb) == kept);
  ::close(vda);
  ::close(vdb);
  // The cached base is never cleared.
  CHECK(kiln::testing::readAll(h.cache->basePathFor("img")) == base_before);
}

TEST_CASE("an encrypted ephemeral disk: LUKS file, sealed key, secret named in the spec",
          "[manager][encryption]") {
  Harness h;
  h.encrypt = true;
  h.restart();
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  INFO(rec.fault);
  REQUIRE(rec.state == InstanceState::kActive);
  REQUIRE(rec.disks.size() == 2);
  const auto& vdb = rec.disks[1];
  CHECK(rec.disks[0].encryption_secret_uuid.empty());  // vda stays in clear
  REQUIRE(kiln::canonicalUuid(vdb.encryption_secret_uuid));
  REQUIRE_FALSE(vdb.sealed_key.empty());
  auto passphrase = h.secrets.open(vdb.sealed_key);
  REQUIRE(passphrase.ok());
  CHECK(passphrase->size() == 128);  // 512 bits, hex
  {
    std::lock_guard lock(h.driver.mutex_);
    REQUIRE(h.driver.disk_secrets.count(vdb.path) == 1);
    CHECK(h.driver.disk_secrets[vdb.path].first == vdb.encryption_secret_uuid);
    CHECK(h.driver.disk_secrets[vdb.path].second == *passphrase);
    REQUIRE(h.driver.spawned.size() == 1);
    CHECK(h.driver.spawned[0].disks[1].encryption_secret_uuid == vdb.encryption_secret_uuid);
    CHECK(h.driver.spawned[0].disks[0].encryption_secret_uuid.empty());
  }
  std::vector<std::string> steps;
  for (auto& s : rec.timeline) steps.push_back(s.name);
  CHECK(std::find(steps.begin(), steps.end(), "disk.secret") != steps.end());
  // qemu-img sees a LUKS qcow2, and the passphrase is nowhere in the file or the record's JSON.
  kiln::PosixCommandRunner runner;
  auto info = runArgv(runner, {"qemu-img", "info", "-f", "qcow2", "--output=json", vdb.path});
  REQUIRE(info.ok());
  CHECK(info->stdout_text.find("\"encrypted\": true") != std::string::npos);
  CHECK(kiln::testing::readAll(vdb.path).find(*passphrase) == std::string::npos);
  CHECK(kiln::state::toJson(rec).dump().find(*passphrase) == std::string::npos);
  // The API view shows that the disk is encrypted, never its key, sealed or not.
  auto view = kiln::api::instanceView(rec);
  CHECK(view["disks"][1]["encryption"]["secret_uuid"] == vdb.encryption_secret_uuid);
  CHECK_FALSE(view["disks"][1]["encryption"].contains("sealed_key"));
  CHECK(view.dump().find(vdb.sealed_key) == std::string::npos);
}

TEST_CASE("reconcile and start define again a disk secret libvirtd forgot",
          "[manager][encryption]") {
  Harness h;
  h.encrypt = true;
  h.restart();
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kActive);
  auto forget = [&] {
    std::lock_guard lock(h.driver.mutex_);
    h.driver.disk_secrets.clear();  // what a libvirtd restart does to ephemeral secrets
  };
  auto defined = [&] {
    std::lock_guard lock(h.driver.mutex_);
    return h.driver.disk_secrets.count(rec.disks[1].path) == 1 &&
           h.driver.disk_secrets[rec.disks[1].path].first == rec.disks[1].encryption_secret_uuid;
  };
  forget();
  h.manager->reconcileAll();
  CHECK(defined());

  using kiln::lifecycle::PowerAction;
  REQUIRE(h.manager->powerAction(kUuid, PowerAction::kStop).ok());
  h.runJobs();
  REQUIRE(h.manager->get(kUuid)->state == InstanceState::kStopped);
  forget();
  REQUIRE(h.manager->powerAction(kUuid, PowerAction::kStart).ok());
  h.runJobs();
  REQUIRE(h.manager->get(kUuid)->state == InstanceState::kActive);
  CHECK(defined());
}

TEST_CASE("delete destroys the disk key before the file, and a restart resumes it",
          "[manager][encryption]") {
  Harness h;
  h.encrypt = true;
  h.restart();
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kActive);
  // The record as a crash mid-delete leaves it: deleting, key still sealed in it.
  InstanceRecord deleting = rec;
  deleting.state = InstanceState::kDeleting;
  REQUIRE(h.store->put(deleting).ok());
  // libvirtd also lost the secret meanwhile; the delete must not mind.
  {
    std::lock_guard lock(h.driver.mutex_);
    h.driver.disk_secrets.clear();
  }
  h.restart();
  REQUIRE(h.waitGone());
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.disk_secrets.empty());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("a failed spawn removes the disk secret", "[manager][encryption]") {
  Harness h;
  h.encrypt = true;
  h.restart();
  h.driver.fail_spawn = kiln::Error::internal("QEMU refused");
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kError);
  CHECK(rec.disks.empty());
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.disk_secrets.empty());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("a restart settles an interrupted attach by what the domain has", "[manager][crash]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  REQUIRE(h.waitSettled().state == InstanceState::kActive);
  // An attach cut short after its volume was recorded and connected, before the domain had it.
  auto stored = h.store->get(kUuid);
  REQUIRE(stored.ok());
  InstanceRecord rec = **stored;
  rec.task_state = kiln::state::TaskState::kAttachingVolume;
  auto bdm = chapVolume("half", "vdc");
  auto att = h.connector.plan(kUuid, "half", "vdc", false, bdm.target);
  REQUIRE(h.connector.connect(att, bdm.target).ok());
  rec.volumes.push_back(att);
  REQUIRE(h.store->put(rec).ok());
  REQUIRE(h.driver.secrets.count(att.secret_usage) == 1);
  h.restart();
  InstanceRecord after = *h.manager->get(kUuid);
  CHECK(after.task_state == kiln::state::TaskState::kNone);
  CHECK(after.state == InstanceState::kActive);
  CHECK(after.volumes.empty());
  CHECK(after.action_error.find("interrupted") != std::string::npos);
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.secrets.count(att.secret_usage) == 0);
}

namespace {

// A domain of this kilnd with no record (its files are in our instances dir) and its directory,
// and one of another kilnd on the same libvirtd; a CHAP secret of each.
struct Orphans {
  const std::string mine = "11111111-2222-4333-8444-555555555555";
  const std::string foreign = "66666666-7777-4888-8999-000000000000";

  explicit Orphans(Harness& h) {
    std::lock_guard lock(h.driver.mutex_);
    for (auto [uuid, dir] : {std::pair{mine, h.state + "/instances"},
                             std::pair{foreign, std::string("/elsewhere/instances")}}) {
      kiln::drivers::InstanceSpec spec;
      spec.uuid = uuid;
      spec.console_log_path = dir + "/" + uuid + "/console.log";
      h.driver.spawned.push_back(spec);
      h.driver.domains[uuid] = kiln::drivers::PowerState::kRunning;
    }
    h.driver.secrets["kiln-" + mine + "-vol"] = "x";
    h.driver.secret_descriptions["kiln-" + mine + "-vol"] =
        "kiln iSCSI CHAP secret of " + h.state + "/instances";
    h.driver.secrets["kiln-" + foreign + "-vol"] = "y";
    h.driver.secret_descriptions["kiln-" + foreign + "-vol"] =
        "kiln iSCSI CHAP secret of /elsewhere/instances";
    stdfs::create_directories(h.state + "/instances/" + mine);
  }
};

}  // namespace

TEST_CASE("the sweep removes what no instance owns, and only what is provably kiln's",
          "[manager][crash][orphans]") {
  Harness h;
  h.orphan_action = kiln::sync::OrphanAction::kDelete;
  h.orphan_grace = std::chrono::seconds(0);
  h.restart();
  Orphans o(h);
  const std::string& mine = o.mine;
  const std::string& foreign = o.foreign;
  h.manager->reconcileAll();  // first sight: found, not touched
  CHECK(h.driver.hasDomain(mine));
  h.manager->reconcileAll();
  CHECK_FALSE(h.driver.hasDomain(mine));
  CHECK(h.driver.hasDomain(foreign));
  CHECK_FALSE(stdfs::exists(h.state + "/instances/" + mine));
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.secrets.count("kiln-" + mine + "-vol") == 0);
  CHECK(h.driver.secrets.count("kiln-" + foreign + "-vol") == 1);
}

TEST_CASE("orphan_action = report: orphans are listed and never touched", "[manager][orphans]") {
  Harness h;
  Orphans o(h);
  for (int pass = 0; pass < 3; ++pass) {
    h.manager->reconcileAll();
    h.clock.advance(std::chrono::hours(24));
  }
  CHECK(h.driver.hasDomain(o.mine));
  CHECK(stdfs::exists(h.state + "/instances/" + o.mine));
  {
    std::lock_guard lock(h.driver.mutex_);
    CHECK(h.driver.secrets.count("kiln-" + o.mine + "-vol") == 1);
  }
  std::set<std::string> found;
  for (const auto& orphan : h.manager->orphans()) found.insert(orphan.kind + " " + orphan.id);
  CHECK(found == std::set<std::string>{"domain " + o.mine,
                                       "directory " + h.state + "/instances/" + o.mine,
                                       "secret kiln-" + o.mine + "-vol"});
  // The other kilnd's objects are not this kilnd's orphans.
  CHECK(h.driver.hasDomain(o.foreign));
}

TEST_CASE("orphan_action = quarantine: after the grace period, powered off and moved aside",
          "[manager][orphans]") {
  Harness h;
  h.orphan_action = kiln::sync::OrphanAction::kQuarantine;
  h.orphan_grace = std::chrono::seconds(600);
  h.restart();
  Orphans o(h);
  h.manager->reconcileAll();
  h.clock.advance(std::chrono::seconds(599));
  h.manager->reconcileAll();  // within the grace period: left alone
  CHECK(h.driver.powerState(o.mine).value() == kiln::drivers::PowerState::kRunning);
  CHECK(stdfs::exists(h.state + "/instances/" + o.mine));
  h.clock.advance(std::chrono::seconds(1));
  h.manager->reconcileAll();
  // Powered off but still defined, its directory moved under quarantine/, its secret kept.
  CHECK(h.driver.powerState(o.mine).value() == kiln::drivers::PowerState::kShutoff);
  CHECK_FALSE(stdfs::exists(h.state + "/instances/" + o.mine));
  std::vector<std::string> moved;
  for (const auto& e : stdfs::directory_iterator(h.state + "/quarantine")) {
    moved.push_back(e.path().filename().string());
  }
  REQUIRE(moved.size() == 1);
  CHECK(moved[0].starts_with(o.mine + "-"));
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.secrets.count("kiln-" + o.mine + "-vol") == 1);
  CHECK(h.driver.domains.at(o.foreign) == kiln::drivers::PowerState::kRunning);
}

// ---- A delete in the middle of a launch ----

TEST_CASE("a delete arriving at any step boundary of a launch leaves nothing behind",
          "[manager][race]") {
  const std::vector<std::string_view>& boundaries = kiln::lifecycle::Launcher::boundaries();
  REQUIRE(boundaries.size() == 10);
  auto at = GENERATE(range(std::size_t{0}, std::size_t{10}));
  // On the test's thread the delete's job runs after the launch's; on real workers it runs at
  // once and must wait for the launch to see it.
  const bool threaded = GENERATE(false, true);
  const std::string boundary(boundaries[at]);
  INFO("the delete arrives at " << boundary << (threaded ? " (two workers)" : ""));
  Harness h;
  h.encrypt = true;  // the launch makes a disk key too
  if (threaded) {
    h.threaded();
  } else {
    h.restart();
  }
  bool sent = false;
  h.manager->setLaunchBoundaryHookForTest([&](std::string_view name) {
    if (name != boundary || sent) return;
    sent = true;
    auto deleting = h.manager->requestDelete(kUuid);
    REQUIRE(deleting.ok());
    CHECK(deleting->state == InstanceState::kDeleting);
  });
  auto req = h.request();
  req.block_devices.push_back(chapVolume("vol-1", "vdc"));
  // A NIC and a config drive too: their steps are boundaries, and the delete removes the tap.
  req.interfaces.push_back(vifFor("port-1", "fa:16:3e:00:00:01", "tapport-1"));
  req.config_drive = true;
  REQUIRE(h.manager->launch(req).ok());
  REQUIRE(h.waitGone());
  CHECK(sent);
  CHECK(h.network->taps.empty());
  CHECK(h.network->filters.empty());
  // The launch stopped at the boundary: a domain is started only when the delete came after it.
  CHECK(h.driver.spawned.size() == (boundary == "after_start" ? 1U : 0U));
  // Nothing of the instance is left: no record, no domain, no secret, no file, no pin.
  auto stored = h.store->get(kUuid);
  REQUIRE(stored.ok());
  CHECK_FALSE(stored->has_value());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
  CHECK_FALSE(h.driver.hasDomain(kUuid));
  CHECK_FALSE(h.cache->pinned("img"));
  std::lock_guard lock(h.driver.mutex_);
  CHECK(h.driver.secrets.empty());
  CHECK(h.driver.disk_secrets.empty());
}

TEST_CASE("a delete waits for a running job, and one that waits too long is retried",
          "[manager][race]") {
  Harness h;
  h.job_timeout = std::chrono::milliseconds(50);
  h.restart();
  REQUIRE(h.manager->launch(h.request()).ok());
  REQUIRE(h.waitSettled().state == InstanceState::kActive);
  // A reboot whose job is still running when the delete comes: the fake's reboot blocks until
  // the test lets it go.
  std::mutex gate;
  std::unique_lock hold(gate);
  h.driver.before_reboot = [&] { std::lock_guard wait(gate); };
  REQUIRE(h.manager->powerAction(kUuid, kiln::lifecycle::PowerAction::kSoftReboot).ok());
  std::thread reboot([&] { h.executor.runOne(); });
  while (h.driver.rebootsStarted() == 0) std::this_thread::yield();
  REQUIRE(h.manager->requestDelete(kUuid).ok());
  h.executor.runOne();  // the delete: the reboot holds the instance past job_timeout
  auto waiting = h.manager->get(kUuid);
  REQUIRE(waiting.ok());
  CHECK(waiting->state == InstanceState::kDeleting);
  CHECK(waiting->fault.find("is busy with reboot since") != std::string::npos);
  hold.unlock();
  reboot.join();
  // The reboot ended without touching the deleting record; the next reconcile retries the delete.
  CHECK(h.manager->get(kUuid)->state == InstanceState::kDeleting);
  h.manager->reconcileAll();
  REQUIRE(h.waitGone());
  CHECK_FALSE(h.driver.hasDomain(kUuid));
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("an interrupted launch is rolled back only once libvirt says its domain is gone",
          "[manager][crash]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  REQUIRE(h.waitSettled().state == InstanceState::kActive);
  // The record as a crash during the launch leaves it, with the domain running meanwhile.
  auto stored = h.store->get(kUuid);
  REQUIRE(stored.ok());
  InstanceRecord building = **stored;
  building.state = InstanceState::kBuilding;
  building.task_state = kiln::state::TaskState::kSpawning;
  REQUIRE(h.store->put(building).ok());
  {
    std::lock_guard lock(h.driver.mutex_);
    h.driver.domains.erase(kUuid);  // gone, but libvirt cannot say so yet:
    h.driver.fail_queries = kiln::Error::unavailable("libvirt is not connected");
  }
  h.restart();
  auto waiting = h.manager->get(kUuid);
  REQUIRE(waiting.ok());
  CHECK(waiting->state == InstanceState::kBuilding);
  CHECK(stdfs::exists(waiting->disks.at(0).path));  // nothing purged while libvirt cannot answer
  h.manager->reconcileAll();
  CHECK(h.manager->get(kUuid)->state == InstanceState::kBuilding);
  {
    std::lock_guard lock(h.driver.mutex_);
    h.driver.fail_queries.reset();
  }
  h.manager->reconcileAll();
  auto settled = h.manager->get(kUuid);
  CHECK(settled->state == InstanceState::kError);
  CHECK(settled->fault.find("interrupted") != std::string::npos);
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("a launch whose domain cannot be removed keeps its disks for the delete", "[manager]") {
  Harness h;
  h.driver.fail_spawn = kiln::Error::internal("Starting instance failed");
  h.driver.fail_destroy = kiln::Error::unavailable("libvirt is not connected");
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  CHECK(rec.state == InstanceState::kError);
  CHECK(rec.fault.find("not rolled back") != std::string::npos);
  REQUIRE(rec.disks.size() == 2);
  CHECK(stdfs::exists(rec.disks[0].path));
  h.driver.fail_destroy.reset();
  REQUIRE(h.manager->requestDelete(kUuid).ok());
  REQUIRE(h.waitGone());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("another project's private image is refused like a missing one, cached or not",
          "[manager][access]") {
  Harness h;
  kiln::testing::addLocalImage(h.images, "a-private", std::string(1 << 20, 'p'), "raw",
                               {{"owner", "project-a"}, {"visibility", "private"}});
  auto forProject = [&](const std::string& uuid, const std::string& image,
                        const std::string& project) {
    kiln::api::LaunchRequest r = h.request(image);
    r.uuid = uuid;
    r.project_id = project;
    r.fingerprint = "fp-" + uuid;
    return r;
  };
  const std::string b_uuid = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b11";
  const std::string a_uuid = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b12";
  const std::string b_again = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b13";
  const std::string b_missing = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b14";

  // Project B, uncached: nothing is fetched, made or started.
  REQUIRE(h.manager->launch(forProject(b_uuid, "a-private", "project-b")).ok());
  auto denied = h.waitSettled(b_uuid);
  CHECK(denied.state == InstanceState::kError);
  CHECK(denied.fault == "Image 'a-private' is not in the image directory '" + h.images + "'");
  CHECK_FALSE(stdfs::exists(h.state + "/instances/" + b_uuid));
  CHECK_FALSE(stdfs::exists(h.cache->basePathFor("a-private")));
  CHECK(h.driver.spawned.empty());
  REQUIRE_FALSE(denied.timeline.empty());
  CHECK(denied.timeline[0].name == "image.access");
  CHECK_FALSE(denied.timeline[0].ok);

  // A missing image reads exactly the same, but for its id.
  REQUIRE(h.manager->launch(forProject(b_missing, "no-such", "project-b")).ok());
  CHECK(h.waitSettled(b_missing).fault ==
        "Image 'no-such' is not in the image directory '" + h.images + "'");

  // The owner's launch works and caches the base.
  REQUIRE(h.manager->launch(forProject(a_uuid, "a-private", "project-a")).ok());
  auto owned = h.waitSettled(a_uuid);
  INFO(owned.fault);
  CHECK(owned.state == InstanceState::kActive);
  CHECK(stdfs::exists(h.cache->basePathFor("a-private")));
  REQUIRE(h.driver.spawned.size() == 1);

  // Cached now, and still not B's.
  REQUIRE(h.manager->launch(forProject(b_again, "a-private", "project-b")).ok());
  auto cached = h.waitSettled(b_again);
  CHECK(cached.state == InstanceState::kError);
  CHECK(cached.fault == denied.fault);
  CHECK_FALSE(stdfs::exists(h.state + "/instances/" + b_again));
  CHECK(h.driver.spawned.size() == 1);
}

TEST_CASE(
    "local records: public and community for all, shared only for the owner, no "
    "visibility or no owner is public",
    "[manager][access]") {
  kiln::testing::TempDir dir;
  kiln::imagecache::LocalDirSource source(dir.path());
  auto add = [&](const std::string& id, nlohmann::json fields) {
    kiln::testing::addLocalImage(dir.path(), id, "x", "raw", std::move(fields));
  };
  add("pub", {{"owner", "a"}, {"visibility", "public"}});
  add("com", {{"owner", "a"}, {"visibility", "community"}});
  add("shr", {{"owner", "a"}, {"visibility", "shared"}});
  add("prv", {{"owner", "a"}, {"visibility", "private"}});
  add("old", nlohmann::json::object());
  add("novis", {{"owner", "a"}});
  add("noowner", {{"owner", nullptr}, {"visibility", "private"}});
  auto may = [&](const std::string& id, const std::string& project) {
    return source.checkAccess(id, {project, ""}).ok();
  };
  for (std::string id : {"pub", "com", "old", "novis", "noowner"}) {
    INFO(id);
    CHECK(may(id, "b"));
    CHECK(may(id, ""));
  }
  for (std::string id : {"shr", "prv"}) {
    INFO(id);
    CHECK(may(id, "a"));
    CHECK_FALSE(may(id, "b"));
    CHECK_FALSE(may(id, ""));
    CHECK(source.checkAccess(id, {"b", ""}).error().code == kiln::ErrorCode::kNotFound);
  }
}

TEST_CASE("NICs are recorded, plugged before the guest starts, and unplugged on delete",
          "[manager][network]") {
  Harness h;
  auto req = h.request();
  req.interfaces.push_back(vifFor("port-1", "fa:16:3e:00:00:01", "tapport-1"));
  req.config_drive = true;
  req.hostname = "vm";
  req.user_data = std::string("#cloud-config\n");
  REQUIRE(h.manager->launch(req).ok());
  auto rec = h.waitSettled();
  INFO(rec.fault);
  REQUIRE(rec.state == InstanceState::kActive);
  REQUIRE(rec.interfaces.size() == 1);
  CHECK(rec.interfaces[0].nic.model == "virtio");
  CHECK(rec.interfaces[0].vif["id"] == "port-1");
  CHECK(h.network->taps.count("tapport-1") == 1);
  CHECK(h.network->filters.count("tapport-1") == 1);
  REQUIRE(h.driver.spawned.size() == 1);
  REQUIRE(h.driver.spawned[0].nics.size() == 1);
  CHECK(h.driver.spawned[0].nics[0].devname == "tapport-1");
  CHECK(h.driver.spawned[0].config_drive_path == h.instanceDir() + "/disk.config");
  CHECK(rec.config_drive_path == h.instanceDir() + "/disk.config");
  CHECK(stdfs::exists(rec.config_drive_path));
  std::vector<std::string> steps;
  for (auto& s : rec.timeline) steps.push_back(s.name);
  CHECK(std::find(steps.begin(), steps.end(), "network.plug") != steps.end());
  CHECK(std::find(steps.begin(), steps.end(), "config_drive") != steps.end());

  REQUIRE(h.manager->requestDelete(kUuid).ok());
  REQUIRE(h.waitGone());
  CHECK(h.network->taps.empty());
  CHECK(h.network->filters.empty());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
}

TEST_CASE("a NIC that cannot be plugged fails the launch and rolls everything back",
          "[manager][network]") {
  Harness h;
  auto req = h.request();
  req.interfaces.push_back(vifFor("port-1", "fa:16:3e:00:00:01", "tapport-1"));
  h.network->fail_plug = kiln::Error::conflict("Device 'tapport-1' exists and is not kiln's");
  REQUIRE(h.manager->launch(req).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kError);
  CHECK_THAT(rec.fault, Catch::Matchers::Contains("port-1"));
  CHECK(rec.interfaces.empty());
  CHECK(h.driver.spawned.empty());
  CHECK_FALSE(stdfs::exists(h.instanceDir()));
  // The rollback unplugged what the record named.
  CHECK(std::count(h.network->calls.begin(), h.network->calls.end(), "unplug tapport-1") == 1);
}

TEST_CASE("force_config_drive gives every instance a config drive", "[manager][network]") {
  Harness h;
  h.force_config_drive = true;
  h.restart();
  REQUIRE(h.manager->launch(h.request()).ok());
  auto rec = h.waitSettled();
  REQUIRE(rec.state == InstanceState::kActive);
  CHECK(stdfs::exists(h.instanceDir() + "/disk.config"));
}

TEST_CASE("interface attach and detach: recorded, plugged, unplugged, conflicts refused",
          "[manager][network]") {
  Harness h;
  REQUIRE(h.manager->launch(h.request()).ok());
  REQUIRE(h.waitSettled().state == InstanceState::kActive);
  auto attached = h.manager->attachInterface(kUuid, vifFor("port-2", "fa:16:3e:00:00:02", "tap2"));
  REQUIRE(attached.ok());
  CHECK(attached->task_state == kiln::state::TaskState::kAttachingInterface);
  auto rec = h.waitSettled();
  CHECK(rec.action_error.empty());
  REQUIRE(rec.interfaces.size() == 1);
  CHECK(h.network->taps.count("tap2") == 1);
  CHECK(h.driver.attached_nics[kUuid] == std::vector<std::string>{"port-2"});
  auto twice = h.manager->attachInterface(kUuid, vifFor("port-2", "fa:16:3e:00:00:09", "tap9"));
  REQUIRE_FALSE(twice.ok());
  CHECK(twice.error().code == kiln::ErrorCode::kConflict);

  SECTION("a guest that does not let go keeps the NIC, with an action error") {
    h.driver.fail_interface = kiln::Error::unavailable("did not release it");
    REQUIRE(h.manager->detachInterface(kUuid, "port-2").ok());
    auto after = h.waitSettled();
    CHECK_THAT(after.action_error, Catch::Matchers::Contains("port-2"));
    CHECK(after.interfaces.size() == 1);
    CHECK(h.network->taps.count("tap2") == 1);
  }
  SECTION("detached: the tap goes only after the guest let go") {
    REQUIRE(h.manager->detachInterface(kUuid, "port-2").ok());
    auto after = h.waitSettled();
    CHECK(after.action_error.empty());
    CHECK(after.interfaces.empty());
    CHECK(h.network->taps.empty());
    auto missing = h.manager->detachInterface(kUuid, "port-2");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == kiln::ErrorCode::kNotFound);
  }
}

TEST_CASE("the orphan sweep finds kiln's taps and filters that no record names",
          "[manager][network]") {
  Harness h;
  h.orphan_action = kiln::sync::OrphanAction::kDelete;
  h.orphan_grace = std::chrono::seconds(0);
  h.restart();
  h.network->taps["tapstray"] = "5f0c7d2e-0000-4000-8000-000000000001";
  h.network->filters.insert("tapstray");
  h.network->filters.insert("tapgone");
  h.manager->reconcileAll();
  h.runJobs();
  auto found = h.manager->orphans();
  CHECK(std::count_if(found.begin(), found.end(), [](const auto& o) { return o.kind == "tap"; }) ==
        1);
  // Found again a grace period later (0 s here): removed.
  h.manager->reconcileAll();
  h.runJobs();
  CHECK(h.network->taps.empty());
  CHECK(h.network->filters.empty());
}
