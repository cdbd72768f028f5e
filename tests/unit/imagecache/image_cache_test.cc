// The image cache with the local image directory and the real qemu-img.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "imagecache/image_cache.h"
#include "tests/support/local_images.h"
#include "tests/support/temp_dir.h"

using kiln::imagecache::ImageCache;
using kiln::imagecache::ImageCacheOptions;
namespace stdfs = std::filesystem;

namespace {

struct CacheHarness {
  kiln::testing::TempDir dir;
  std::string images = dir.path() + "/images";
  std::string base_dir = dir.path() + "/_base";
  kiln::SystemClock clock;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img{runner};
  kiln::imagecache::LocalDirSource source{images};
  std::unique_ptr<ImageCache> cache;

  explicit CacheHarness(bool force_raw = true) {
    stdfs::create_directories(images);
    ImageCacheOptions options;
    options.base_dir = base_dir;
    options.force_raw = force_raw;
    cache = std::make_unique<ImageCache>(source, qemu_img, options, clock);
    REQUIRE(cache->init().ok());
  }
  std::string makeQcow2(const std::string& name, const std::string& size,
                        const std::string& extra = "") {
    std::string path = dir.path() + "/" + name;
    REQUIRE(std::system(
                ("qemu-img create -q -f qcow2 " + extra + " " + path + " " + size).c_str()) == 0);
    return kiln::testing::readAll(path);
  }
  kiln::Result<kiln::imagecache::CachedImage> fetch(const std::string& id, std::uint64_t max = 0) {
    kiln::Timeline timeline(clock);
    return cache->fetch(id, timeline, max);
  }
  // Nothing of `id` may be left in the cache: no base, no sidecar, no partial file.
  bool nothingCached(const std::string& id) {
    std::string base = cache->basePathFor(id);
    for (const char* suffix : {"", ".json", ".part", ".converted"}) {
      if (stdfs::exists(base + suffix)) return false;
    }
    return true;
  }
};

}  // namespace

TEST_CASE("a qcow2 image is converted to a raw base when force_raw_images is on", "[cache]") {
  CacheHarness h;
  kiln::testing::addLocalImage(h.images, "q", h.makeQcow2("q.qcow2", "64M"), "qcow2");
  auto img = h.fetch("q");
  REQUIRE(img.ok());
  CHECK(img->format == "raw");
  CHECK(img->source_format == "qcow2");
  CHECK(img->virtual_size == 64ULL << 20);
  CHECK(stdfs::file_size(img->path) == 64ULL << 20);
  h.cache->release("q");
}

TEST_CASE("with force_raw_images off the qcow2 base is kept as it came", "[cache]") {
  CacheHarness h(false);
  kiln::testing::addLocalImage(h.images, "q", h.makeQcow2("q.qcow2", "64M"), "qcow2");
  auto img = h.fetch("q");
  REQUIRE(img.ok());
  CHECK(img->format == "qcow2");
  h.cache->release("q");
}

TEST_CASE("hostile and broken images are refused and nothing is cached", "[cache]") {
  CacheHarness h;
  std::string backing_target = h.dir.path() + "/host-file";
  kiln::testing::addLocalImage(h.images, "raw-ok", std::string(4096, 'r'));
  std::ofstream(backing_target) << "secret";
  struct Case {
    std::string id;
    std::string bytes;
    std::string format;
    nlohmann::json overrides;
    std::string expected;
  };
  std::vector<Case> cases = {
      {"backing",
       h.makeQcow2("b.qcow2", "64M", "-F raw -b " + backing_target),
       "qcow2",
       {},
       "backing file"},
      {"declared-raw", h.makeQcow2("d.qcow2", "64M"), "raw", {}, "qcow2"},
      {"bad-hash",
       std::string(4096, 'x'),
       "raw",
       {{"os_hash_value", std::string(128, 'a')}},
       "failed verification"},
      {"bad-size", std::string(4096, 'x'), "raw", {{"size", 100}}, "larger than the 100 bytes"},
      {"no-hash",
       std::string(4096, 'x'),
       "raw",
       {{"os_hash_value", nullptr}, {"os_hash_algo", nullptr}, {"checksum", nullptr}},
       "unverifiable"},
      {"queued", std::string(4096, 'x'), "raw", {{"status", "queued"}}, "not 'active'"},
      {"docker", std::string(4096, 'x'), "raw", {{"container_format", "docker"}}, "bare"},
      {"ami", std::string(4096, 'x'), "ami", {}, "cannot boot"},
  };
  for (const auto& c : cases) {
    kiln::testing::addLocalImage(h.images, c.id, c.bytes, c.format, c.overrides);
    auto img = h.fetch(c.id);
    INFO(c.id);
    REQUIRE_FALSE(img.ok());
    INFO(img.error().message);
    CHECK(img.error().message.find(c.expected) != std::string::npos);
    CHECK(h.nothingCached(c.id));
    CHECK_FALSE(h.cache->pinned(c.id));
  }
  // The host file named as a backing file was never touched.
  CHECK(kiln::testing::readAll(backing_target) == "secret");
}

TEST_CASE("an image too big for the flavor is refused from its header, before conversion",
          "[cache]") {
  CacheHarness h;
  kiln::testing::addLocalImage(h.images, "huge", h.makeQcow2("h.qcow2", "200G"), "qcow2");
  auto img = h.fetch("huge", 1ULL << 30);
  REQUIRE_FALSE(img.ok());
  CHECK(img.error().code == kiln::ErrorCode::kTooLarge);
  CHECK(h.nothingCached("huge"));
}

TEST_CASE("unused bases are removed after their minimum age, used and pinned ones stay",
          "[cache]") {
  CacheHarness h;
  for (const char* id : {"a", "b", "c"}) {
    kiln::testing::addLocalImage(h.images, id, std::string(4096, id[0]));
    REQUIRE(h.fetch(id).ok());
  }
  h.cache->release("a");
  h.cache->release("b");  // "c" stays pinned, as by a launch in progress
  CHECK(h.cache->list().size() == 3);
  // Younger than the minimum age: nothing goes.
  CHECK(h.cache->removeUnused({}, std::chrono::seconds(3600)).empty());
  auto removed = h.cache->removeUnused({"b"}, std::chrono::seconds(0));
  CHECK(removed == std::vector<std::string>{"a"});
  CHECK(h.nothingCached("a"));
  CHECK(stdfs::exists(h.cache->basePathFor("b")));
  CHECK(stdfs::exists(h.cache->basePathFor("c")));
  // Eviction refuses a base in use or pinned, and a missing one.
  CHECK(h.cache->evict("b", {"b"}).error().code == kiln::ErrorCode::kConflict);
  CHECK(h.cache->evict("c", {}).error().code == kiln::ErrorCode::kConflict);
  CHECK(h.cache->evict("a", {}).error().code == kiln::ErrorCode::kNotFound);
  REQUIRE(h.cache->evict("b", {}).ok());
  CHECK(h.nothingCached("b"));
  h.cache->release("c");
  REQUIRE(h.cache->evict("c", {}).ok());
  CHECK(h.cache->list().empty());
}

TEST_CASE("a cached base is re-inspected on every use", "[cache]") {
  CacheHarness h;
  kiln::testing::addLocalImage(h.images, "r", std::string(1 << 20, 'r'));
  auto img = h.fetch("r");
  REQUIRE(img.ok());
  h.cache->release("r");
  // Someone turns the cached raw base into a qcow2 pointing at a host file.
  std::string evil = h.makeQcow2("evil.qcow2", "1M", "-F raw -b /etc/hostname");
  std::ofstream(img->path, std::ios::binary | std::ios::trunc) << evil;
  auto again = h.fetch("r");
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().message.find("failed inspection") != std::string::npos);
}

TEST_CASE("a leftover partial download is removed at start", "[cache]") {
  CacheHarness h;
  std::string part = h.cache->basePathFor("x") + ".part";
  std::ofstream(part) << "half";
  std::ofstream(h.cache->basePathFor("y") + ".json") << "{}";
  REQUIRE(h.cache->init().ok());
  CHECK_FALSE(stdfs::exists(part));
  CHECK_FALSE(stdfs::exists(h.cache->basePathFor("y") + ".json"));
}

namespace {

// Serves any image id slowly and records how many downloads run at once.
class SlowSource final : public kiln::imagecache::ImageSource {
 public:
  kiln::Result<kiln::imagecache::ImageRecord> getRecord(const std::string& id) override {
    kiln::imagecache::ImageRecord r;
    r.id = id;
    r.disk_format = "raw";
    r.container_format = "bare";
    r.size = bytes_.size();
    r.os_hash_algo = "sha512";
    r.os_hash_value = kiln::testing::hexDigest("sha512", bytes_);
    return r;
  }
  kiln::Result<void> download(const kiln::imagecache::ImageRecord&,
                              const kiln::imagecache::ByteSink& sink) override {
    int now = ++running_;
    int seen = max_seen_.load();
    while (now > seen && !max_seen_.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    auto r = sink(bytes_.data(), bytes_.size());
    --running_;
    ++downloads_;
    return r;
  }
  kiln::Result<void> checkAccess(const std::string&, const kiln::imagecache::ImageUser&) override {
    return kiln::success();
  }
  std::string bytes_ = std::string(8192, 's');
  std::atomic<int> running_{0};
  std::atomic<int> max_seen_{0};
  std::atomic<int> downloads_{0};
};

}  // namespace

TEST_CASE("different images download in parallel up to the bound, one image downloads once",
          "[cache]") {
  kiln::testing::TempDir dir;
  SlowSource source;
  kiln::SystemClock clock;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img(runner);
  ImageCacheOptions options;
  options.base_dir = dir.path() + "/_base";
  options.max_concurrent_downloads = 2;
  ImageCache cache(source, qemu_img, options, clock);
  REQUIRE(cache.init().ok());
  std::vector<std::thread> launches;
  std::atomic<int> failures{0};
  // Four different images, each wanted by two launches at once.
  for (int i = 0; i < 8; ++i) {
    launches.emplace_back([&, i] {
      kiln::Timeline timeline(clock);
      std::string id = "img" + std::to_string(i % 4);
      auto r = cache.fetch(id, timeline);
      if (!r) ++failures;
    });
  }
  for (auto& t : launches) t.join();
  CHECK(failures == 0);
  CHECK(source.downloads_ == 4);
  CHECK(source.max_seen_ == 2);
}

namespace {

// The cache over a local image directory, with a disk reserve over a filesystem whose free space
// the test sets.
struct ReservedCache {
  kiln::testing::TempDir dir;
  std::string images = dir.path() + "/images";
  kiln::SystemClock clock;
  kiln::PosixCommandRunner runner;
  kiln::QemuImg qemu_img{runner};
  kiln::imagecache::LocalDirSource source{images};
  std::uint64_t free = 64ULL << 20;
  std::shared_ptr<kiln::DiskReserve> reserve = std::make_shared<kiln::DiskReserve>(
      dir.path(), 0, [this](const std::string&) -> kiln::Result<std::uint64_t> { return free; });
  std::unique_ptr<ImageCache> cache;

  explicit ReservedCache(std::uint64_t max_unsized = 1ULL << 30) {
    stdfs::create_directories(images);
    ImageCacheOptions options;
    options.base_dir = dir.path() + "/_base";
    options.disk_reserve = reserve;
    options.max_unsized_image_bytes = max_unsized;
    cache = std::make_unique<ImageCache>(source, qemu_img, options, clock);
    REQUIRE(cache->init().ok());
  }
  kiln::Result<kiln::imagecache::CachedImage> fetch(const std::string& id) {
    kiln::Timeline timeline(clock);
    return cache->fetch(id, timeline, 0);
  }
  bool nothingCached(const std::string& id) {
    std::string base = cache->basePathFor(id);
    for (const char* suffix : {"", ".json", ".part", ".converted"}) {
      if (stdfs::exists(base + suffix)) return false;
    }
    return true;
  }
};

}  // namespace

TEST_CASE("an image record without a size is capped by max_image_size_gb", "[cache][reserve]") {
  ReservedCache h(1ULL << 20);
  kiln::testing::addLocalImage(h.images, "unsized", std::string(2ULL << 20, 'u'), "raw",
                               {{"size", nullptr}});
  auto fetched = h.fetch("unsized");
  REQUIRE_FALSE(fetched.ok());
  CHECK_THAT(fetched.error().message, Catch::Contains("no size in its record"));
  CHECK_THAT(fetched.error().message, Catch::Contains("max_image_size_gb"));
  CHECK(h.nothingCached("unsized"));
  CHECK(h.reserve->held() == 0);
}

TEST_CASE("a download takes its space before it writes, beside what others hold",
          "[cache][reserve]") {
  ReservedCache h;
  kiln::testing::addLocalImage(h.images, "sized", std::string(40ULL << 20, 's'));
  // Another download (or disk creation) in progress holds 30 of the 64 MiB.
  auto other = h.reserve->take(30ULL << 20, "image 'other'");
  REQUIRE(other.ok());
  auto refused = h.fetch("sized");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == kiln::ErrorCode::kResourceExhausted);
  CHECK_THAT(refused.error().message, Catch::Contains("for image 'sized'"));
  CHECK_THAT(refused.error().message, Catch::Contains("30 MiB held by other downloads"));
  CHECK(h.nothingCached("sized"));
  other->release();
  REQUIRE(h.fetch("sized").ok());
  h.cache->release("sized");
  CHECK(h.reserve->held() == 0);  // what it wrote is the filesystem's to count now
}

TEST_CASE("a download without a size grows its hold and stops when the space is gone",
          "[cache][reserve]") {
  ReservedCache h;
  h.free = 3ULL << 20;  // less than the image, more than its first chunks
  kiln::testing::addLocalImage(h.images, "unsized", std::string(8ULL << 20, 'u'), "raw",
                               {{"size", nullptr}});
  auto fetched = h.fetch("unsized");
  REQUIRE_FALSE(fetched.ok());
  CHECK_THAT(fetched.error().message, Catch::Contains("Not enough space"));
  CHECK(h.nothingCached("unsized"));
  CHECK(h.reserve->held() == 0);
  h.free = 64ULL << 20;
  REQUIRE(h.fetch("unsized").ok());
  h.cache->release("unsized");
}
