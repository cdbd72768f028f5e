// GlanceSource, GlanceUploader and CurlClient against a real Glance (scripts/start-glance.sh).
// Skipped unless KILN_TEST_GLANCE_URL names one, e.g.
//   scripts/start-glance.sh /tmp/glance 19292
//   KILN_TEST_GLANCE_URL=http://127.0.0.1:19292 kiln_glance_tests '[glance-live]'
// KILN_TEST_GLANCE_STORE_DIR may name the store directory (default: taken from the image's
// file:// location). The source test uploads its own image with the curl tool and deletes it at
// the end; the uploader test makes and removes its own images.

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/command_runner.h"
#include "imagecache/curl_client.h"
#include "imagecache/glance_source.h"
#include "imagecache/image_uploader.h"
#include "imagecache/stream_hasher.h"
#include "tests/support/temp_dir.h"

namespace {

using kiln::Error;
using kiln::ErrorCode;
using kiln::Result;
using kiln::imagecache::ByteSink;
using kiln::imagecache::CurlClient;
using kiln::imagecache::GlanceOptions;
using kiln::imagecache::GlanceSource;
using kiln::imagecache::GlanceUploader;
using kiln::imagecache::HttpClient;
using kiln::imagecache::HttpRequestSpec;
using kiln::imagecache::HttpResult;
using kiln::imagecache::NewImage;
using kiln::imagecache::ResponseHook;
using kiln::imagecache::StreamHasher;
using Clock = std::chrono::steady_clock;

std::string hexDigest(const std::string& algo, const std::string& bytes) {
  auto hasher = StreamHasher::create(algo);
  REQUIRE(hasher.ok());
  hasher->update(bytes.data(), bytes.size());
  return hasher->finalHex();
}

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string curl(const std::vector<std::string>& args) {
  kiln::CommandSpec spec;
  spec.argv = {"curl", "-sS", "--fail-with-body", "--max-time", "60"};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  kiln::PosixCommandRunner runner;
  auto out = runner.run(spec);
  REQUIRE(out.ok());
  INFO(kiln::describeFailure(spec, *out));
  REQUIRE(out->succeeded());
  return out->stdout_text;
}

// Counts what reaches the real client, and can cut the first download after `break_after`
// bytes the way a dropped connection would (the caller's sink sees only those bytes).
class InstrumentedClient final : public HttpClient {
 public:
  CurlClient real;
  int gets = 0;
  int streams = 0;
  std::size_t break_after = 0;
  std::vector<HttpRequestSpec> specs;
  std::vector<long> statuses;

  Result<HttpResult> get(const HttpRequestSpec& spec) override {
    ++gets;
    specs.push_back(spec);
    return real.get(spec);
  }
  Result<HttpResult> stream(const HttpRequestSpec& spec, const ByteSink& sink,
                            const ResponseHook& on_response) override {
    ++streams;
    specs.push_back(spec);
    ResponseHook record = [&](const HttpResult& head) -> Result<void> {
      statuses.push_back(head.status);
      return on_response ? on_response(head) : kiln::success();
    };
    if (break_after == 0) return real.stream(spec, sink, record);
    std::size_t left = std::exchange(break_after, 0);
    bool cut = false;
    auto r = real.stream(
        spec,
        [&](const char* data, std::size_t len) -> Result<void> {
          std::size_t n = std::min(left, len);
          if (n > 0) {
            if (auto s = sink(data, n); !s) return s;
            left -= n;
          }
          if (left == 0) {
            cut = true;
            return Error::internal("cut");
          }
          return kiln::success();
        },
        record);
    if (cut) return Error::unavailable("The request failed: Connection reset by peer (simulated)");
    return r;
  }

  int sends = 0;
  int uploads = 0;
  std::vector<std::string> methods;  // of send() and upload(), in order
  // Breaks this many upload() calls after `upload_break_after` bytes of the file went out, the
  // way a dropped connection would (the real transfer is aborted mid-body).
  int uploads_to_break = 0;
  std::size_t upload_break_after = 0;

  Result<HttpResult> send(const HttpRequestSpec& spec, const std::string& method,
                          const std::string& body) override {
    ++sends;
    specs.push_back(spec);
    methods.push_back(method);
    return real.send(spec, method, body);
  }
  Result<HttpResult> upload(const HttpRequestSpec& spec, const std::string& method,
                            const std::string& file_path, const ByteSink& on_read) override {
    ++uploads;
    specs.push_back(spec);
    methods.push_back(method);
    if (uploads_to_break == 0) return real.upload(spec, method, file_path, on_read);
    --uploads_to_break;
    std::size_t left = upload_break_after;
    bool cut = false;
    auto r = real.upload(spec, method, file_path, [&](const char* data, std::size_t len) {
      if (len >= left) {
        cut = true;
        return Result<void>(Error::internal("cut"));
      }
      left -= len;
      return on_read ? on_read(data, len) : kiln::success();
    });
    if (cut) return Error::unavailable("The request failed: Connection reset by peer (simulated)");
    return r;
  }
};

}  // namespace

TEST_CASE("GlanceSource against a live Glance", "[glance-live]") {
  const char* url_env = std::getenv("KILN_TEST_GLANCE_URL");
  if (url_env == nullptr || *url_env == '\0') {
    WARN(
        "KILN_TEST_GLANCE_URL is not set; skipping the live Glance test (see "
        "scripts/start-glance.sh)");
    return;
  }
  const std::string url = url_env;
  kiln::testing::TempDir tmp;

  // An image whose bytes differ everywhere, a little over 8 MiB so that it spans many reads.
  std::string bytes((8 << 20) + 123, '\0');
  std::uint64_t x = 88172645463325252ull;
  for (char& c : bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  const std::string sha512 = hexDigest("sha512", bytes);
  const std::string md5 = hexDigest("md5", bytes);
  std::ofstream(tmp.path() + "/image.raw", std::ios::binary) << bytes;

  nlohmann::json create = {{"name", "kiln-live-test"},   {"disk_format", "raw"},
                           {"container_format", "bare"}, {"visibility", "public"},
                           {"hw_firmware_type", "uefi"}, {"hw_machine_type", "q35"},
                           {"os_distro", "kiln-busybox"}};
  auto start = Clock::now();
  auto created =
      nlohmann::json::parse(curl({"-X", "POST", url + "/v2/images", "-H",
                                  "Content-Type: application/json", "-d", create.dump()}));
  const std::string id = created.at("id").get<std::string>();
  CHECK(created.at("status") == "queued");
  curl({"-X", "PUT", url + "/v2/images/" + id + "/file", "-H",
        "Content-Type: application/octet-stream", "--data-binary",
        "@" + tmp.path() + "/image.raw"});
  fmt::print("glance-live: created and uploaded image {} ({} bytes) in {:.0f} ms\n", id,
             bytes.size(), msSince(start));

  InstrumentedClient http;
  GlanceOptions options;
  options.api_servers = {url};
  options.token = "ignored-by-a-glance-without-keystone";
  options.retry_backoff = std::chrono::milliseconds(100);
  auto source = GlanceSource::create(options, http);
  REQUIRE(source.ok());

  // -- the record
  start = Clock::now();
  auto record = (*source)->getRecord(id);
  double record_ms = msSince(start);
  REQUIRE(record.ok());
  CHECK(record->status == "active");
  CHECK(record->name == "kiln-live-test");
  CHECK(record->disk_format == "raw");
  CHECK(record->container_format == "bare");
  CHECK(record->size == bytes.size());
  CHECK(record->checksum == md5);
  CHECK(record->os_hash_algo == "sha512");
  CHECK(record->os_hash_value == sha512);
  CHECK(record->properties["hw_firmware_type"] == "uefi");
  CHECK(record->properties["hw_machine_type"] == "q35");
  CHECK(record->properties["os_distro"] == "kiln-busybox");
  REQUIRE_FALSE(record->locations.empty());
  CHECK_THAT(record->locations.front(), Catch::StartsWith("file:///"));
  CHECK_THAT(record->locations.front(), Catch::EndsWith("/" + id));
  fmt::print("glance-live: getRecord took {:.1f} ms; properties {}; locations {}\n", record_ms,
             record->properties.dump(), nlohmann::json(record->locations).dump());

  // -- the bytes over HTTP, hashed as the cache does
  {
    auto hasher = StreamHasher::create("sha512");
    REQUIRE(hasher.ok());
    std::string got;
    start = Clock::now();
    auto r = (*source)->download(*record, [&](const char* data, std::size_t len) -> Result<void> {
      hasher->update(data, len);
      got.append(data, len);
      return kiln::success();
    });
    double ms = msSince(start);
    REQUIRE(r.ok());
    CHECK(hasher->finalHex() == *record->os_hash_value);
    CHECK(got == bytes);
    CHECK(http.streams == 1);
    fmt::print("glance-live: HTTP download of {} bytes took {:.1f} ms ({:.0f} MiB/s)\n", got.size(),
               ms, got.size() / 1048576.0 / (ms / 1000));
  }

  // -- a broken transfer continues with Range against the real Glance (206)
  {
    http.streams = 0;
    http.statuses.clear();
    http.break_after = 3'000'001;
    std::string got;
    auto r = (*source)->download(*record, [&](const char* data, std::size_t len) -> Result<void> {
      got.append(data, len);
      return kiln::success();
    });
    REQUIRE(r.ok());
    CHECK(got == bytes);
    CHECK(http.streams == 2);
    CHECK(http.statuses == std::vector<long>{200, 206});
    bool ranged = false;
    for (const auto& [name, value] : http.specs.back().headers) {
      if (name == "Range") ranged = value == "bytes=3000001-";
    }
    CHECK(ranged);
  }

  // -- the direct read of the file:// location
  {
    std::string location = record->locations.front();
    std::string store = std::filesystem::path(location.substr(7)).parent_path().string();
    if (const char* s = std::getenv("KILN_TEST_GLANCE_STORE_DIR"); s != nullptr && *s != '\0') {
      store = s;
    }
    GlanceOptions direct = options;
    direct.allowed_direct_url_schemes = {"file"};
    direct.direct_download_dirs = {store};
    auto direct_source = GlanceSource::create(direct, http);
    REQUIRE(direct_source.ok());
    http.streams = 0;
    std::string got;
    start = Clock::now();
    auto r = (*direct_source)->download(*record, [&](const char* data, std::size_t len) {
      got.append(data, len);
      return kiln::success();
    });
    double ms = msSince(start);
    REQUIRE(r.ok());
    CHECK(got == bytes);
    CHECK(http.streams == 0);  // the API was not asked for the bytes
    fmt::print("glance-live: direct read from '{}' took {:.1f} ms\n", store, ms);

    // The same store through a directory that is not allowed: back to HTTP.
    direct.direct_download_dirs = {tmp.path()};
    auto refused_source = GlanceSource::create(direct, http);
    REQUIRE(refused_source.ok());
    got.clear();
    REQUIRE((*refused_source)
                ->download(*record,
                           [&](const char* data, std::size_t len) {
                             got.append(data, len);
                             return kiln::success();
                           })
                .ok());
    CHECK(got == bytes);
    CHECK(http.streams == 1);
  }

  // -- failover from a dead endpoint to the live one, without waiting
  {
    GlanceOptions two = options;
    two.api_servers = {"http://127.0.0.1:1", url};
    std::vector<std::chrono::milliseconds> sleeps;
    auto failover = GlanceSource::create(two, http, [&](auto d) { sleeps.push_back(d); });
    REQUIRE(failover.ok());
    auto r = (*failover)->getRecord(id);
    REQUIRE(r.ok());
    CHECK(r->os_hash_value == sha512);
    CHECK(sleeps.empty());
  }

  // -- a missing image: 404, at once
  {
    http.gets = 0;
    start = Clock::now();
    auto missing = (*source)->getRecord("00000000-0000-4000-8000-000000000000");
    double ms = msSince(start);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == ErrorCode::kNotFound);
    CHECK(http.gets == 1);
    fmt::print("glance-live: 404 after {:.1f} ms: {}\n", ms, missing.error().message);
  }

  // -- an image without data: the API answers 204
  {
    auto empty = nlohmann::json::parse(
        curl({"-X", "POST", url + "/v2/images", "-H", "Content-Type: application/json", "-d",
              R"({"name": "kiln-live-empty", "disk_format": "raw", "container_format": "bare"})"}));
    auto empty_id = empty.at("id").get<std::string>();
    auto empty_record = (*source)->getRecord(empty_id);
    REQUIRE(empty_record.ok());
    CHECK(empty_record->status == "queued");
    CHECK_FALSE(empty_record->size.has_value());
    auto r = (*source)->download(*empty_record,
                                 [](const char*, std::size_t) { return kiln::success(); });
    CHECK(r.error().code == ErrorCode::kConflict);
    curl({"-X", "DELETE", url + "/v2/images/" + empty_id});
  }

  curl({"-X", "DELETE", url + "/v2/images/" + id});
  auto deleted = (*source)->getRecord(id);
  CHECK(deleted.error().code == ErrorCode::kNotFound);
}

TEST_CASE("GlanceUploader against a live Glance", "[glance-live]") {
  const char* url_env = std::getenv("KILN_TEST_GLANCE_URL");
  if (url_env == nullptr || *url_env == '\0') {
    WARN(
        "KILN_TEST_GLANCE_URL is not set; skipping the live Glance upload test (see "
        "scripts/start-glance.sh)");
    return;
  }
  const std::string url = url_env;
  kiln::testing::TempDir tmp;

  // A few MiB whose bytes differ everywhere, not a multiple of any buffer size.
  std::string bytes((6 << 20) + 4321, '\0');
  std::uint64_t x = 2463534242ull;
  for (char& c : bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  const std::string sha512 = hexDigest("sha512", bytes);
  const std::string md5 = hexDigest("md5", bytes);
  const std::string path = tmp.path() + "/snapshot.qcow2";
  std::ofstream(path, std::ios::binary) << bytes;

  InstrumentedClient http;
  GlanceOptions options;
  options.api_servers = {url};
  options.token = "ignored-by-a-glance-without-keystone";
  options.retry_backoff = std::chrono::milliseconds(100);
  options.num_retries = 2;
  auto uploader = GlanceUploader::make(options, http);
  REQUIRE(uploader.ok());
  auto source = GlanceSource::create(options, http);
  REQUIRE(source.ok());

  NewImage image;
  image.name = "kiln-live-snapshot";
  image.disk_format = "qcow2";
  image.properties = {{"image_type", "snapshot"},
                      {"instance_uuid", "0b7c4b4c-7f4c-4a43-a2a5-2f8d1c5e9a11"},
                      {"hw_disk_bus", "virtio"},
                      {"os_distro", "kiln-busybox"}};
  auto expectGone = [&](const std::string& id) {
    auto gone = (*source)->getRecord(id);
    REQUIRE_FALSE(gone.ok());
    CHECK(gone.error().code == ErrorCode::kNotFound);
  };

  // -- create + upload: active, with the right size, hashes and properties
  {
    auto start = Clock::now();
    auto id = (*uploader)->create(image);
    REQUIRE(id.ok());
    double create_ms = msSince(start);
    auto queued = (*source)->getRecord(*id);
    REQUIRE(queued.ok());
    CHECK(queued->status == "queued");
    auto raw = nlohmann::json::parse(curl({url + "/v2/images/" + *id}));
    CHECK(raw.at("visibility") == "private");

    start = Clock::now();
    auto uploaded = (*uploader)->upload(*id, path);
    double upload_ms = msSince(start);
    REQUIRE(uploaded.ok());
    auto record = (*source)->getRecord(*id);
    REQUIRE(record.ok());
    CHECK(record->status == "active");
    CHECK(record->name == "kiln-live-snapshot");
    CHECK(record->disk_format == "qcow2");
    CHECK(record->container_format == "bare");
    CHECK(record->size == bytes.size());
    CHECK(record->checksum == md5);
    CHECK(record->os_hash_algo == "sha512");
    CHECK(record->os_hash_value == sha512);
    for (const auto& [key, value] : image.properties.items()) {
      INFO(key);
      CHECK(record->properties[key] == value);
    }
    std::string got;
    REQUIRE((*source)
                ->download(*record,
                           [&](const char* data, std::size_t len) {
                             got.append(data, len);
                             return kiln::success();
                           })
                .ok());
    CHECK(got == bytes);
    fmt::print(
        "glance-live: create took {:.1f} ms; upload of {} bytes (PUT + check) {:.1f} ms "
        "({:.0f} MiB/s)\n",
        create_ms, bytes.size(), upload_ms, bytes.size() / 1048576.0 / (upload_ms / 1000));

    // A repeat (after a crash, say) finds the image active with these bytes: success, kept.
    REQUIRE((*uploader)->upload(*id, path).ok());
    REQUIRE((*source)->getRecord(*id).ok());

    REQUIRE((*uploader)->discard(*id).ok());
    expectGone(*id);
    REQUIRE((*uploader)->discard(*id).ok());  // again: already gone is fine
  }

  // -- a transfer broken mid-body, then retried from the first byte
  {
    auto id = (*uploader)->create(image);
    REQUIRE(id.ok());
    http.methods.clear();
    http.uploads_to_break = 1;
    http.upload_break_after = 2'000'000;
    auto uploaded = (*uploader)->upload(*id, path);
    // What Glance does with the broken attempt decides the outcome: back to "queued" (the retry
    // succeeds) or stuck (409, and the image is deleted). Never a half image.
    fmt::print("glance-live: after a broken PUT the retry {}: methods {}\n",
               uploaded.ok() ? "succeeded" : "failed (" + uploaded.error().message + ")",
               nlohmann::json(http.methods).dump());
    if (uploaded.ok()) {
      auto record = (*source)->getRecord(*id);
      REQUIRE(record.ok());
      CHECK(record->status == "active");
      CHECK(record->os_hash_value == sha512);
      REQUIRE((*uploader)->discard(*id).ok());
    }
    expectGone(*id);
  }

  // -- every attempt broken: the image is deleted
  {
    auto id = (*uploader)->create(image);
    REQUIRE(id.ok());
    http.methods.clear();
    http.uploads_to_break = 100;
    http.upload_break_after = 1'000'000;
    auto uploaded = (*uploader)->upload(*id, path);
    http.uploads_to_break = 0;
    REQUIRE_FALSE(uploaded.ok());
    fmt::print("glance-live: all PUTs broken: {}; methods {}\n", uploaded.error().message,
               nlohmann::json(http.methods).dump());
    CHECK(http.methods.back() == "DELETE");
    expectGone(*id);
  }

  // -- the file disappears before the upload: the image is deleted
  {
    auto id = (*uploader)->create(image);
    REQUIRE(id.ok());
    auto uploaded = (*uploader)->upload(*id, tmp.path() + "/vanished.qcow2");
    REQUIRE_FALSE(uploaded.ok());
    CHECK(uploaded.error().code == ErrorCode::kNotFound);
    expectGone(*id);
  }

  // -- discard of a created image that will not be uploaded
  {
    auto id = (*uploader)->create(image);
    REQUIRE(id.ok());
    REQUIRE((*uploader)->discard(*id).ok());
    expectGone(*id);
  }

  // -- Glance's own refusal of a property its schema constrains comes back as kInvalidArgument
  {
    NewImage bad = image;
    bad.properties["kernel_id"] = "not-a-uuid";  // Glance's image schema wants a uuid here
    http.methods.clear();
    auto refused = (*uploader)->create(bad);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(refused.error().message, Catch::Contains("HTTP 400"));
    CHECK(http.methods == std::vector<std::string>{"POST"});  // final at once, nothing to delete
    fmt::print("glance-live: a bad property: {}\n", refused.error().message);
  }

  // -- nothing this test made is left in Glance
  auto listing = nlohmann::json::parse(curl({url + "/v2/images?name=kiln-live-snapshot"}));
  CHECK(listing.at("images").empty());
}
