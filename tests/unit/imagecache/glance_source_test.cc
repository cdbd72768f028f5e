// GlanceSource against a scripted HttpClient: what it asks Glance, how it retries and fails over,
// how it maps Glance's answers to errors, and when it reads a file:// location directly.

#include "imagecache/glance_source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/fakes/fake_http_client.h"
#include "tests/support/temp_dir.h"

namespace {

using kiln::Error;
using kiln::ErrorCode;
using kiln::Result;
using kiln::imagecache::GlanceOptions;
using kiln::imagecache::GlanceSource;
using kiln::imagecache::ImageRecord;
using kiln::testing::FakeHttpClient;
using kiln::testing::FakeReply;
using kiln::testing::sentHeader;
using kiln::testing::TempDir;
using std::chrono::milliseconds;

const std::string kId = "e6e816b0-48aa-4d54-a485-2743eb591833";

// A record as Debian 12's Glance (Zed) returns it, with show_image_direct_url and
// show_multiple_locations on.
nlohmann::json glanceRecord(const std::string& id = kId) {
  auto doc = nlohmann::json::parse(R"({
    "hw_firmware_type": "uefi", "hw_disk_bus": "virtio", "name": "kiln-test",
    "disk_format": "raw", "container_format": "bare", "visibility": "public",
    "size": 1048576, "virtual_size": 1048576, "status": "active",
    "checksum": "babb04c8e293874c780b10f423f5a220", "protected": false, "min_ram": 0,
    "min_disk": 0, "owner": null, "os_hidden": false, "os_hash_algo": "sha512",
    "os_hash_value": "9237fea7c1b77667372e972e05ff13539f87ab525d71205b526c02af7716a9b785d7818d57a31d9daccb2943bc1d80eebdcdfdc7e5d83e008aecfdd9677cb1a4",
    "created_at": "2026-11-26T01:24:58Z", "updated_at": "2026-11-26T01:24:58Z",
    "locations": [{"url": "file:///var/lib/glance/images/ID", "metadata": {"store": "fs"}}],
    "direct_url": "file:///var/lib/glance/images/ID", "tags": [],
    "self": "/v2/images/ID", "file": "/v2/images/ID/file", "schema": "/v2/schemas/image",
    "stores": "fs"})");
  doc["id"] = id;
  return doc;
}

const std::string k404Page =
    "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n"
    "  No image found with ID " +
    kId + "<br /><br />\n\n\n\n </body>\n</html>";

const std::string k503Page =
    "<html>\n <head>\n  <title>503 Service Unavailable</title>\n </head>\n <body>\n"
    "  <h1>503 Service Unavailable</h1>\n  The server is currently unavailable.<br /><br />\n"
    " </body>\n</html>";

struct Fixture {
  FakeHttpClient http;
  std::vector<milliseconds> sleeps;

  std::unique_ptr<GlanceSource> source(GlanceOptions options) {
    auto s = GlanceSource::create(std::move(options), http,
                                  [this](milliseconds d) { sleeps.push_back(d); });
    REQUIRE(s.ok());
    return std::move(s).value();
  }
  std::unique_ptr<GlanceSource> source(std::vector<std::string> servers, unsigned retries = 3) {
    GlanceOptions o;
    o.api_servers = std::move(servers);
    o.num_retries = retries;
    return source(std::move(o));
  }
};

std::string bytesOf(std::size_t n, char seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + static_cast<char>(i % 53));
  return s;
}

ImageRecord recordFor(const std::string& bytes, std::vector<std::string> locations = {}) {
  ImageRecord r;
  r.id = kId;
  r.disk_format = "raw";
  r.container_format = "bare";
  r.size = bytes.size();
  r.locations = std::move(locations);
  return r;
}

// Collects what the sink receives.
struct Collector {
  std::string bytes;
  std::size_t calls = 0;
  kiln::imagecache::ByteSink sink() {
    return [this](const char* data, std::size_t len) -> Result<void> {
      bytes.append(data, len);
      ++calls;
      return kiln::success();
    };
  }
};

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST_CASE("parseImageRecord collects direct_url and locations once each, ignoring bad entries",
          "[glance]") {
  nlohmann::json doc = glanceRecord();
  doc["direct_url"] = "file:///a/1";
  doc["locations"] = nlohmann::json::parse(
      R"([{"url": "file:///a/1", "metadata": {}}, {"url": "rbd://pool/img"}, {"url": 7},
          "not-an-object", {"metadata": {}}, {"url": ""}])");
  auto r = kiln::imagecache::parseImageRecord(doc, kId);
  REQUIRE(r.ok());
  CHECK(r->locations == std::vector<std::string>{"file:///a/1", "rbd://pool/img"});
  CHECK_FALSE(r->properties.contains("direct_url"));
  CHECK_FALSE(r->properties.contains("locations"));

  doc["locations"] = "garbage";
  doc.erase("direct_url");
  auto bad = kiln::imagecache::parseImageRecord(doc, kId);
  REQUIRE(bad.ok());
  CHECK(bad->locations.empty());
}

TEST_CASE("getRecord asks GET /v2/images/{id} and parses Glance's record", "[glance]") {
  Fixture f;
  auto source = f.source({"http://glance:9292"});
  f.http.push(FakeReply::ok(glanceRecord().dump()));

  auto r = source->getRecord(kId);
  REQUIRE(r.ok());
  CHECK(r->id == kId);
  CHECK(r->status == "active");
  CHECK(r->disk_format == "raw");
  CHECK(r->size == 1048576u);
  CHECK(r->min_disk_gb == 0u);
  CHECK(r->checksum == "babb04c8e293874c780b10f423f5a220");
  CHECK(r->os_hash_algo == "sha512");
  CHECK(r->os_hash_value->size() == 128);
  CHECK(r->properties["hw_firmware_type"] == "uefi");
  CHECK(r->properties["hw_disk_bus"] == "virtio");
  CHECK(r->locations == std::vector<std::string>{"file:///var/lib/glance/images/ID"});

  auto requests = f.http.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].url == "http://glance:9292/v2/images/" + kId);
  CHECK(sentHeader(requests[0], "Accept") == "application/json");
  CHECK_FALSE(sentHeader(requests[0], "X-Auth-Token"));
  CHECK(requests[0].low_speed_time == std::chrono::seconds(60));
  CHECK(requests[0].connect_timeout == std::chrono::seconds(10));
  CHECK(requests[0].total_timeout == std::chrono::seconds(70));
}

TEST_CASE("getRecord retries 5xx and transport errors with a growing wait, then succeeds",
          "[glance]") {
  Fixture f;
  auto source = f.source({"http://glance:9292"});
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::refused());
  f.http.push(FakeReply::ok(k503Page, 502));
  f.http.push(FakeReply::ok(glanceRecord().dump()));

  auto r = source->getRecord(kId);
  REQUIRE(r.ok());
  CHECK(f.http.requests().size() == 4);
  CHECK(f.sleeps ==
        std::vector<milliseconds>{milliseconds(1000), milliseconds(2000), milliseconds(4000)});
}

TEST_CASE("getRecord gives up after num_retries and names the servers it tried", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292", "http://b:9292"}, /*retries=*/2);
  f.http.push(FakeReply::refused("http://a:9292"));
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::refused("http://a:9292"));
  f.http.push(FakeReply::ok(glanceRecord().dump()));  // never asked for

  auto r = source->getRecord(kId);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnavailable);
  CHECK_THAT(r.error().message, Catch::Contains("after 3 attempt(s)"));
  CHECK_THAT(r.error().message, Catch::Contains("'http://a:9292', 'http://b:9292'"));
  CHECK_THAT(r.error().message, Catch::Contains(kId));
  CHECK(f.http.requests().size() == 3);
  CHECK(f.http.pending() == 1);
  // A then B at once (failover), then a wait before going back to A.
  CHECK(f.sleeps == std::vector<milliseconds>{milliseconds(1000)});

  SECTION("num_retries = 0 is a single attempt") {
    Fixture g;
    auto once = g.source({"http://a:9292"}, /*retries=*/0);
    g.http.push(FakeReply::refused());
    CHECK(once->getRecord(kId).error().code == ErrorCode::kUnavailable);
    CHECK(g.http.requests().size() == 1);
    CHECK(g.sleeps.empty());
  }
}

TEST_CASE("getRecord fails over to the second server without waiting and stays there", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292", "http://b:9292/"});
  f.http.push(FakeReply::refused("http://a:9292"));
  f.http.push(FakeReply::ok(glanceRecord().dump()));
  f.http.push(FakeReply::ok(glanceRecord().dump()));

  REQUIRE(source->getRecord(kId).ok());
  REQUIRE(source->getRecord(kId).ok());
  auto requests = f.http.requests();
  REQUIRE(requests.size() == 3);
  CHECK(requests[0].url == "http://a:9292/v2/images/" + kId);
  CHECK(requests[1].url == "http://b:9292/v2/images/" + kId);  // trailing slash dropped
  CHECK(requests[2].url == "http://b:9292/v2/images/" + kId);  // the server that answered
  CHECK(f.sleeps.empty());
}

TEST_CASE("A 404 is final: kNotFound at once, no retry", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292", "http://b:9292"});
  f.http.push(FakeReply::ok(k404Page, 404));

  auto r = source->getRecord(kId);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kNotFound);
  CHECK(r.error().message == "Image '" + kId + "' was not found in Glance at 'http://a:9292'");
  CHECK(f.http.requests().size() == 1);
  CHECK(f.sleeps.empty());
}

TEST_CASE("401 and 403 are final and say what to fix, never quoting the token", "[glance]") {
  Fixture f;
  GlanceOptions o;
  o.api_servers = {"http://a:9292", "http://b:9292"};
  o.token = "s3cr3t-token";
  auto with_token = f.source(o);
  f.http.push(FakeReply::ok("<html><body>401 Unauthorized</body></html>", 401));
  auto r401 = with_token->getRecord(kId);
  CHECK(r401.error().code == ErrorCode::kUnauthorized);
  CHECK_THAT(r401.error().message, Catch::Contains("rejected kiln's token"));
  CHECK_THAT(r401.error().message, !Catch::Contains("s3cr3t"));

  f.http.push(FakeReply::ok("<html><body>Access was denied to this resource.</body></html>", 403));
  auto r403 = with_token->getRecord(kId);
  CHECK(r403.error().code == ErrorCode::kForbidden);
  CHECK_THAT(r403.error().message, Catch::Contains("(HTTP 403): Access was denied"));
  CHECK(f.http.requests().size() == 2);

  Fixture g;
  auto without_token = g.source({"http://a:9292"});
  g.http.push(FakeReply::ok("", 401));
  CHECK_THAT(without_token->getRecord(kId).error().message,
             Catch::Contains("set [glance] token or token_file"));
}

TEST_CASE("Glance's error pages are quoted only as a short, tag-free, one-line excerpt",
          "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292"}, /*retries=*/0);
  std::string page =
      "<html><head><title>500</title><script>alert(1)</script></head><body>"
      "<h1>Internal\r\nServer\x1b[31m Error</h1>" +
      std::string(5000, 'x') + "</body></html>";
  f.http.push(FakeReply::ok(page, 500));
  auto r = source->getRecord(kId);
  REQUIRE_FALSE(r.ok());
  const std::string& m = r.error().message;
  CHECK_THAT(m, Catch::Contains("HTTP 500"));
  CHECK_THAT(m, Catch::Contains("Internal Server [31m Error xxx"));
  CHECK(m.find('<') == std::string::npos);
  CHECK(m.find('\n') == std::string::npos);
  CHECK(m.find('\x1b') == std::string::npos);
  CHECK(m.find("alert") == std::string::npos);
  CHECK(m.size() < 600);
}

TEST_CASE("The token goes out as X-Auth-Token, token_file is read again for every request",
          "[glance]") {
  TempDir dir;
  std::string token_file = dir.path() + "/token";
  Fixture f;
  GlanceOptions o;
  o.api_servers = {"http://a:9292"};
  o.token_file = token_file;
  auto source = f.source(o);

  writeFile(token_file, "first-token\n");
  f.http.push(FakeReply::ok(glanceRecord().dump()));
  REQUIRE(source->getRecord(kId).ok());
  writeFile(token_file, "  second-token  ");
  f.http.push(FakeReply::ok("abc"));
  CHECK(source->download(recordFor("abc"), Collector().sink()).ok());
  auto requests = f.http.requests();
  REQUIRE(requests.size() == 2);
  CHECK(sentHeader(requests[0], "X-Auth-Token") == "first-token");
  CHECK(sentHeader(requests[1], "X-Auth-Token") == "second-token");

  SECTION("an empty or two-line token file fails before any request, quoting no token") {
    writeFile(token_file, "\n\n");
    auto empty = source->getRecord(kId);
    CHECK(empty.error().code == ErrorCode::kUnauthorized);
    CHECK_THAT(empty.error().message, Catch::Contains("is empty"));
    writeFile(token_file, "abc\ninjected: header");
    auto two = source->getRecord(kId);
    CHECK(two.error().code == ErrorCode::kUnauthorized);
    CHECK_THAT(two.error().message, !Catch::Contains("injected"));
    ::unlink(token_file.c_str());
    CHECK(source->getRecord(kId).error().code == ErrorCode::kUnauthorized);
    CHECK(f.http.requests().size() == 2);
  }
  SECTION("a fixed token") {
    Fixture g;
    GlanceOptions t;
    t.api_servers = {"http://a:9292"};
    t.token = "fixed";
    auto fixed = g.source(t);
    g.http.push(FakeReply::ok(glanceRecord().dump()));
    REQUIRE(fixed->getRecord(kId).ok());
    CHECK(sentHeader(g.http.requests().at(0), "X-Auth-Token") == "fixed");
  }
}

TEST_CASE("Unsafe image ids are refused before any request", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292"});
  for (const std::string& id :
       std::vector<std::string>{"", "../../etc/passwd", "a b", "x?y=1", "a/b", "a\nb", ".hidden"}) {
    INFO(id);
    auto r = source->getRecord(id);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().message.find('\n') == std::string::npos);
    ImageRecord record;
    record.id = id;
    CHECK(source->download(record, Collector().sink()).error().code == ErrorCode::kInvalidArgument);
  }
  CHECK(f.http.requests().empty());
}

TEST_CASE("A server with a path prefix keeps it", "[glance]") {
  Fixture f;
  auto source = f.source({"https://cloud.example/image/"});
  f.http.push(FakeReply::ok(glanceRecord("img.v1_2-3").dump()));
  REQUIRE(source->getRecord("img.v1_2-3").ok());
  CHECK(f.http.requests().at(0).url == "https://cloud.example/image/v2/images/img.v1_2-3");
}

TEST_CASE("A record that is not JSON, or is another image's, is refused without retry",
          "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292"});
  f.http.push(FakeReply::ok("<html>proxy login page</html>"));
  CHECK_THAT(source->getRecord(kId).error().message, Catch::Contains("not valid JSON"));
  f.http.push(FakeReply::ok(glanceRecord("other-id").dump()));
  CHECK_THAT(source->getRecord(kId).error().message, Catch::Contains("different id"));
  CHECK(f.http.requests().size() == 2);
}

TEST_CASE("validateGlanceOptions refuses what cannot work", "[glance]") {
  using kiln::imagecache::validateGlanceOptions;
  GlanceOptions ok;
  ok.api_servers = {"http://a:9292"};
  REQUIRE(validateGlanceOptions(ok).ok());

  auto refused = [&](auto mutate, const std::string& fragment) {
    GlanceOptions o = ok;
    mutate(o);
    auto r = validateGlanceOptions(o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains(fragment));
  };
  refused([](GlanceOptions& o) { o.api_servers.clear(); }, "api_servers is empty");
  refused([](GlanceOptions& o) { o.api_servers = {"ftp://a"}; }, "'ftp://a'");
  refused([](GlanceOptions& o) { o.api_servers = {"http://a/?x=1"}; }, "without query");
  refused(
      [](GlanceOptions& o) {
        // Not a one-character token: assigning one draws a false -Wrestrict from GCC 12 at
        // -O3 (GCC bug 105329).
        o.token = "a-token";
        o.token_file = "/b";
      },
      "both set");
  refused([](GlanceOptions& o) { o.token = "a\r\nX-Other: 1"; }, "control character");
  refused([](GlanceOptions& o) { o.allowed_direct_url_schemes = {"rbd"}; }, "'rbd'");
  refused([](GlanceOptions& o) { o.allowed_direct_url_schemes = {"file"}; },
          "direct_download_dirs is empty");
  refused(
      [](GlanceOptions& o) {
        o.allowed_direct_url_schemes = {"file"};
        o.direct_download_dirs = {"relative/dir"};
      },
      "not an absolute path");
  refused([](GlanceOptions& o) { o.stall_timeout = std::chrono::seconds(0); }, "positive");
}

TEST_CASE("download streams GET /v2/images/{id}/file into the sink", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292"});
  std::string image = bytesOf(1000, 'a');
  f.http.push(FakeReply::ok(image));
  Collector got;
  REQUIRE(source->download(recordFor(image), got.sink()).ok());
  CHECK(got.bytes == image);
  auto requests = f.http.requests();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].url == "http://a:9292/v2/images/" + kId + "/file");
  CHECK_FALSE(sentHeader(requests[0], "Range"));
  CHECK(requests[0].total_timeout.count() == 0);  // big images must not hit a deadline
}

TEST_CASE("download retries and fails over while no byte has arrived", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292", "http://b:9292"});
  std::string image = bytesOf(300, 'b');
  f.http.push(FakeReply::refused("http://a:9292"));
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::ok(image));
  Collector got;
  REQUIRE(source->download(recordFor(image), got.sink()).ok());
  CHECK(got.bytes == image);  // the 503 page never reached the sink
  auto requests = f.http.requests();
  REQUIRE(requests.size() == 3);
  CHECK(requests[2].url == "http://a:9292/v2/images/" + kId + "/file");
  CHECK(f.sleeps == std::vector<milliseconds>{milliseconds(1000)});
}

TEST_CASE("A broken download continues with a Range request, feeding no byte twice", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292", "http://b:9292"});
  std::string image = bytesOf(100, 'c');

  SECTION("the server honours the range (206), as Glance does") {
    f.http.push(FakeReply::brokenAfter(image, 30));
    FakeReply rest = FakeReply::ok(image.substr(30), 206);
    rest.headers = {{"content-range", "bytes 30-99/100"}};
    f.http.push(rest);
    Collector got;
    REQUIRE(source->download(recordFor(image), got.sink()).ok());
    CHECK(got.bytes == image);
    auto requests = f.http.requests();
    REQUIRE(requests.size() == 2);
    CHECK_FALSE(sentHeader(requests[0], "Range"));
    CHECK(sentHeader(requests[1], "Range") == "bytes=30-");
    CHECK(requests[1].url == "http://b:9292/v2/images/" + kId + "/file");  // failover too
  }
  SECTION("the server ignores the range (200): the bytes already delivered are dropped") {
    f.http.push(FakeReply::brokenAfter(image, 30));
    f.http.push(FakeReply::brokenAfter(image, 64));
    f.http.push(FakeReply::ok(image));
    Collector got;
    REQUIRE(source->download(recordFor(image), got.sink()).ok());
    CHECK(got.bytes == image);
    CHECK(sentHeader(f.http.requests().at(2), "Range") == "bytes=64-");
  }
  SECTION("a 206 from the wrong offset is refused before any of its bytes") {
    f.http.push(FakeReply::brokenAfter(image, 30));
    FakeReply wrong = FakeReply::ok(image, 206);
    wrong.headers = {{"content-range", "bytes 0-99/100"}};
    f.http.push(wrong);
    Collector got;
    auto r = source->download(recordFor(image), got.sink());
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("Content-Range 'bytes 0-99/100'"));
    CHECK(got.bytes == image.substr(0, 30));
  }
  SECTION("a 416 after the last byte means the image is complete") {
    f.http.push(FakeReply::brokenAfter(image, 100));
    f.http.push(FakeReply::ok("", 416));
    Collector got;
    REQUIRE(source->download(recordFor(image), got.sink()).ok());
    CHECK(got.bytes == image);
  }
  SECTION("retries are still bounded") {
    // A server that ignores the range and keeps breaking: the resent prefix is dropped.
    for (int i = 0; i < 4; ++i) f.http.push(FakeReply::brokenAfter(image, 10));
    Collector got;
    auto r = source->download(recordFor(image), got.sink());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK_THAT(r.error().message, Catch::Contains("after 4 attempt(s)"));
    CHECK(got.bytes == image.substr(0, 10));
  }
}

TEST_CASE("A sink error stops the download and is returned as it is, without retry", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292", "http://b:9292"});
  std::string image = bytesOf(500, 'd');
  f.http.push(FakeReply::ok(image));
  f.http.push(FakeReply::ok(image));  // must stay unused
  std::size_t seen = 0;
  auto r = source->download(recordFor(image), [&](const char*, std::size_t len) -> Result<void> {
    seen += len;
    if (seen > 20) return Error::exhausted("No space left on device writing 'x.part'");
    return kiln::success();
  });
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kResourceExhausted);
  CHECK(r.error().message == "No space left on device writing 'x.part'");
  CHECK(f.http.requests().size() == 1);
  CHECK(f.http.pending() == 1);
}

TEST_CASE("download maps Glance's final answers", "[glance]") {
  Fixture f;
  auto source = f.source({"http://a:9292"});
  std::string image = "abc";
  f.http.push(FakeReply::ok("", 204));
  CHECK(source->download(recordFor(image), Collector().sink()).error().code ==
        ErrorCode::kConflict);
  f.http.push(FakeReply::ok(k404Page, 404));
  CHECK(source->download(recordFor(image), Collector().sink()).error().code ==
        ErrorCode::kNotFound);
  f.http.push(
      FakeReply::ok("<html><body>The requested image has been deactivated. Image data download is "
                    "forbidden.</body></html>",
                    403));
  auto deactivated = source->download(recordFor(image), Collector().sink());
  CHECK(deactivated.error().code == ErrorCode::kForbidden);
  CHECK_THAT(deactivated.error().message, Catch::Contains("has been deactivated"));
  CHECK(f.http.requests().size() == 3);
}

// ---- direct reads of file:// locations ------------------------------------------------------

namespace {

struct DirectFixture : Fixture {
  TempDir tmp;
  std::string store = tmp.path() + "/store";
  std::string outside = tmp.path() + "/outside";
  std::string direct_bytes = bytesOf(3000, 'D');
  std::string http_bytes = bytesOf(3000, 'H');

  DirectFixture() {
    std::filesystem::create_directories(store);
    std::filesystem::create_directories(outside);
    writeFile(store + "/" + kId, direct_bytes);
    writeFile(outside + "/secret", direct_bytes);
  }
  GlanceOptions options(std::vector<std::string> schemes = {"file"}) {
    GlanceOptions o;
    o.api_servers = {"http://a:9292"};
    o.allowed_direct_url_schemes = std::move(schemes);
    o.direct_download_dirs = {store};
    return o;
  }
  // Downloads `location`; returns what the sink got. Sizes are left out of the record so that
  // only the location decides.
  std::string fetch(const std::string& location, std::vector<std::string> schemes = {"file"}) {
    auto source = this->source(options(std::move(schemes)));
    ImageRecord record = recordFor(direct_bytes, {"rbd://pool/x", location});
    record.size.reset();
    Collector got;
    auto r = source->download(record, got.sink());
    REQUIRE(r.ok());
    return got.bytes;
  }
  // The API is scripted to answer; true when it was used instead of the file.
  bool usedHttp(const std::string& location, std::vector<std::string> schemes = {"file"}) {
    std::size_t before = http.requests().size();
    http.push(FakeReply::ok(http_bytes));
    std::string got = fetch(location, std::move(schemes));
    bool via_http = http.requests().size() == before + 1;
    CHECK(got == (via_http ? http_bytes : direct_bytes));
    return via_http;
  }
};

}  // namespace

TEST_CASE("A file:// location under direct_download_dirs is read directly", "[glance][direct]") {
  DirectFixture f;
  auto source = f.source(f.options());
  Collector got;
  REQUIRE(source->download(recordFor(f.direct_bytes, {"file://" + f.store + "/" + kId}), got.sink())
              .ok());
  CHECK(got.bytes == f.direct_bytes);
  CHECK(got.calls == 1);  // 1 MiB chunks
  CHECK(f.http.requests().empty());

  CHECK(f.fetch("file://localhost" + f.store + "/" + kId) == f.direct_bytes);
  // A symlink that stays inside the allowed directory is fine.
  std::filesystem::create_symlink(f.store + "/" + kId, f.store + "/alias");
  CHECK(f.fetch("file://" + f.store + "/alias") == f.direct_bytes);
  // So is an allowed directory that is itself reached through a symlink.
  std::filesystem::create_directory_symlink(f.store, f.tmp.path() + "/store-link");
  GlanceOptions o = f.options();
  o.direct_download_dirs = {f.tmp.path() + "/store-link"};
  auto via_link = f.source(o);
  Collector got2;
  REQUIRE(
      via_link->download(recordFor(f.direct_bytes, {"file://" + f.store + "/" + kId}), got2.sink())
          .ok());
  CHECK(got2.bytes == f.direct_bytes);
  CHECK(f.http.requests().empty());
}

TEST_CASE("A file:// location that may not be read falls back to the API", "[glance][direct]") {
  DirectFixture f;
  SECTION("outside the allowed directories") {
    CHECK(f.usedHttp("file://" + f.outside + "/secret"));
  }
  SECTION("a symlink inside that points outside") {
    std::filesystem::create_symlink(f.outside + "/secret", f.store + "/escape");
    CHECK(f.usedHttp("file://" + f.store + "/escape"));
  }
  SECTION("a path that climbs out with ..") {
    CHECK(f.usedHttp("file://" + f.store + "/../outside/secret"));
  }
  SECTION("a sibling directory whose name merely starts like the allowed one") {
    std::filesystem::create_directories(f.store + "-evil");
    writeFile(f.store + "-evil/img", f.direct_bytes);
    CHECK(f.usedHttp("file://" + f.store + "-evil/img"));
  }
  SECTION("the scheme is not allowed") {
    CHECK(f.usedHttp("file://" + f.store + "/" + kId, /*schemes=*/{}));
  }
  SECTION("a missing file, a directory, a FIFO (which must not hang the open)") {
    CHECK(f.usedHttp("file://" + f.store + "/missing"));
    CHECK(f.usedHttp("file://" + f.store));
    REQUIRE(::mkfifo((f.store + "/fifo").c_str(), 0600) == 0);
    CHECK(f.usedHttp("file://" + f.store + "/fifo"));
  }
  SECTION("a remote host or a relative path") {
    CHECK(f.usedHttp("file://otherhost" + f.store + "/" + kId));
    CHECK(f.usedHttp("file://relative/path"));
  }
  SECTION("a file whose size differs from the record") {
    auto source = f.source(f.options());
    f.http.push(FakeReply::ok(f.http_bytes));
    ImageRecord record = recordFor(f.direct_bytes, {"file://" + f.store + "/" + kId});
    record.size = 5;
    Collector got;
    REQUIRE(source->download(record, got.sink()).ok());
    CHECK(got.bytes == f.http_bytes);
  }
}

TEST_CASE("A sink error during a direct read is returned and the API is not asked",
          "[glance][direct]") {
  DirectFixture f;
  auto source = f.source(f.options());
  auto r = source->download(recordFor(f.direct_bytes, {"file://" + f.store + "/" + kId}),
                            [](const char*, std::size_t) -> Result<void> {
                              return Error::invalid("Image 'x' failed verification");
                            });
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "Image 'x' failed verification");
  CHECK(f.http.requests().empty());
}

namespace {

nlohmann::json ownedRecord(const std::string& owner, const std::string& visibility) {
  nlohmann::json doc = glanceRecord();
  doc["owner"] = owner;
  doc["visibility"] = visibility;
  return doc;
}

std::string membership(const std::string& project, const std::string& status,
                       const std::string& image = kId) {
  return nlohmann::json{{"member_id", project}, {"image_id", image}, {"status", status}}.dump();
}

const std::string kMissing = "Image '" + kId + "' was not found in Glance at 'http://a:9292'";

}  // namespace

TEST_CASE("checkAccess follows Glance's rules on the record asked with kiln's token",
          "[glance][access]") {
  Fixture f;
  GlanceOptions o;
  o.api_servers = {"http://a:9292"};
  o.token = "kiln-token";
  auto source = f.source(o);

  SECTION("the owner's private image") {
    f.http.push(FakeReply::ok(ownedRecord("a", "private").dump()));
    CHECK(source->checkAccess(kId, {"a", ""}).ok());
  }
  SECTION("public and community images, and an image nobody owns") {
    f.http.push(FakeReply::ok(ownedRecord("a", "public").dump()));
    f.http.push(FakeReply::ok(ownedRecord("a", "community").dump()));
    f.http.push(FakeReply::ok(glanceRecord().dump()));  // "owner": null
    CHECK(source->checkAccess(kId, {"b", ""}).ok());
    CHECK(source->checkAccess(kId, {"b", ""}).ok());
    CHECK(source->checkAccess(kId, {"", ""}).ok());
    CHECK(f.http.requests().size() == 3);  // no membership asked
  }
  SECTION("another project's private image reads exactly like a missing one") {
    f.http.push(FakeReply::ok(ownedRecord("a", "private").dump()));
    auto denied = source->checkAccess(kId, {"b", ""});
    REQUIRE_FALSE(denied.ok());
    f.http.push(FakeReply::ok(k404Page, 404));
    auto missing = source->checkAccess(kId, {"b", ""});
    REQUIRE_FALSE(missing.ok());
    CHECK(denied.error().code == ErrorCode::kNotFound);
    CHECK(denied.error().message == missing.error().message);
    CHECK(denied.error().message == kMissing);
  }
  SECTION("an instance without a project gets no private or shared image") {
    f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
    CHECK(source->checkAccess(kId, {"", ""}).error().message == kMissing);
    CHECK(f.http.requests().size() == 1);
  }
  SECTION("a shared image needs an accepted membership") {
    f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
    f.http.push(FakeReply::ok(membership("b", "accepted")));
    CHECK(source->checkAccess(kId, {"b", ""}).ok());
    auto requests = f.http.requests();
    REQUIRE(requests.size() == 2);
    CHECK(requests[1].url == "http://a:9292/v2/images/" + kId + "/members/b");
    CHECK(sentHeader(requests[1], "X-Auth-Token") == "kiln-token");

    for (const char* status : {"pending", "rejected"}) {
      INFO(status);
      f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
      f.http.push(FakeReply::ok(membership("b", status)));
      CHECK(source->checkAccess(kId, {"b", ""}).error().message == kMissing);
    }
    f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
    f.http.push(FakeReply::ok("<html>404 Not Found</html>", 404));
    CHECK(source->checkAccess(kId, {"b", ""}).error().message == kMissing);
  }
  SECTION("another project's or another image's membership grants nothing") {
    f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
    f.http.push(FakeReply::ok(membership("c", "accepted")));
    CHECK_THAT(source->checkAccess(kId, {"b", ""}).error().message,
               Catch::Contains("different membership"));
    f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
    f.http.push(FakeReply::ok(membership("b", "accepted", "other-image")));
    CHECK_FALSE(source->checkAccess(kId, {"b", ""}).ok());
  }
  SECTION("Glance unreachable: no answer is no permission") {
    for (int i = 0; i < 4; ++i) f.http.push(FakeReply::refused());
    auto r = source->checkAccess(kId, {"a", ""});
    CHECK(r.error().code == ErrorCode::kUnavailable);
  }
}

TEST_CASE("checkAccess asks with the caller's token when there is one", "[glance][access]") {
  Fixture f;
  GlanceOptions o;
  o.api_servers = {"http://a:9292"};
  o.token = "kiln-token";
  auto source = f.source(o);

  f.http.push(FakeReply::ok(ownedRecord("b", "private").dump()));
  CHECK(source->checkAccess(kId, {"b", "users-token"}).ok());
  // Glance hides the image from that project: missing, whether it says 404 or 403.
  f.http.push(FakeReply::ok(k404Page, 404));
  CHECK(source->checkAccess(kId, {"b", "users-token"}).error().message == kMissing);
  f.http.push(FakeReply::ok("<html>403 Forbidden</html>", 403));
  auto forbidden = source->checkAccess(kId, {"b", "users-token"});
  CHECK(forbidden.error().code == ErrorCode::kNotFound);
  CHECK(forbidden.error().message == kMissing);
  // The rules still hold on what the token sees (an admin's token sees every image).
  f.http.push(FakeReply::ok(ownedRecord("a", "private").dump()));
  CHECK(source->checkAccess(kId, {"b", "users-token"}).error().message == kMissing);
  // The membership is asked with the same token.
  f.http.push(FakeReply::ok(ownedRecord("a", "shared").dump()));
  f.http.push(FakeReply::ok(membership("b", "accepted")));
  CHECK(source->checkAccess(kId, {"b", "users-token"}).ok());
  // A token Glance does not take is said to be the caller's, not kiln's.
  f.http.push(FakeReply::ok("<html>401</html>", 401));
  auto refused = source->checkAccess(kId, {"b", "users-token"});
  CHECK(refused.error().code == ErrorCode::kUnauthorized);
  CHECK_THAT(refused.error().message, Catch::Contains("caller's token"));

  auto requests = f.http.requests();
  REQUIRE(requests.size() == 7);
  for (const auto& request : requests) {
    INFO(request.url);
    CHECK(sentHeader(request, "X-Auth-Token") == "users-token");
  }
  // kiln's own reads keep kiln's token.
  f.http.push(FakeReply::ok(glanceRecord().dump()));
  REQUIRE(source->getRecord(kId).ok());
  CHECK(sentHeader(f.http.requests().back(), "X-Auth-Token") == "kiln-token");
}

TEST_CASE("A record without an id, or with another image's, is refused and names both",
          "[glance][access]") {
  Fixture f;
  auto source = f.source({"http://a:9292"});
  nlohmann::json no_id = glanceRecord();
  no_id.erase("id");
  f.http.push(FakeReply::ok(no_id.dump()));
  auto r = source->getRecord(kId);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("different id ('none')"));
  f.http.push(FakeReply::ok(glanceRecord("other-id").dump()));
  auto other = source->checkAccess(kId, {"a", ""});
  CHECK_THAT(other.error().message,
             Catch::Contains("'" + kId + "'") && Catch::Contains("different id ('other-id')"));
  CHECK(f.http.requests().size() == 2);  // refused at once, not retried
}
