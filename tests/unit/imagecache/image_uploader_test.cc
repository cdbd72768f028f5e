// The snapshot uploaders: GlanceUploader against a scripted HttpClient (what it sends, how it
// retries, and that a failed upload never leaves an image behind), LocalDirUploader against a
// real directory read back through LocalDirSource.

#include "imagecache/image_uploader.h"

#include <signal.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "common/uuid.h"
#include "imagecache/stream_hasher.h"
#include "tests/fakes/fake_http_client.h"
#include "tests/support/temp_dir.h"

namespace {

using kiln::Error;
using kiln::ErrorCode;
using kiln::Result;
using kiln::imagecache::ByteSink;
using kiln::imagecache::GlanceOptions;
using kiln::imagecache::GlanceUploader;
using kiln::imagecache::HttpRequestSpec;
using kiln::imagecache::HttpResult;
using kiln::imagecache::LocalDirSource;
using kiln::imagecache::LocalDirUploader;
using kiln::imagecache::NewImage;
using kiln::imagecache::ResponseHook;
using kiln::imagecache::StreamHasher;
using kiln::testing::FakeHttpClient;
using kiln::testing::FakeReply;
using kiln::testing::sentHeader;
using kiln::testing::TempDir;
using std::chrono::milliseconds;

std::string hexDigest(const std::string& algo, const std::string& bytes) {
  auto hasher = StreamHasher::create(algo);
  REQUIRE(hasher.ok());
  hasher->update(bytes.data(), bytes.size());
  return hasher->finalHex();
}

std::string bytesOf(std::size_t n, std::uint64_t seed = 88172645463325252ull) {
  std::string s(n, '\0');
  for (char& c : s) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    c = static_cast<char>(seed);
  }
  return s;
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

NewImage snapshotImage() {
  NewImage image;
  image.name = "web-1 snapshot";
  image.disk_format = "qcow2";
  image.properties = {{"image_type", "snapshot"},
                      {"instance_uuid", "0b7c4b4c-7f4c-4a43-a2a5-2f8d1c5e9a11"},
                      {"hw_disk_bus", "virtio"},
                      {"os_distro", "debian"}};
  return image;
}

// Glance's answer to a GET of the image once `bytes` were uploaded to it.
std::string activeRecord(const std::string& id, const std::string& bytes,
                         const std::string& status = "active") {
  nlohmann::json doc = {{"id", id},
                        {"name", "web-1 snapshot"},
                        {"status", status},
                        {"disk_format", "qcow2"},
                        {"container_format", "bare"},
                        {"visibility", "private"},
                        {"size", bytes.size()},
                        {"checksum", hexDigest("md5", bytes)},
                        {"os_hash_algo", "sha512"},
                        {"os_hash_value", hexDigest("sha512", bytes)},
                        {"image_type", "snapshot"}};
  if (status != "active") {
    doc["size"] = nullptr;
    doc["checksum"] = nullptr;
    doc["os_hash_algo"] = nullptr;
    doc["os_hash_value"] = nullptr;
  }
  return doc.dump();
}

const std::string k503Page =
    "<html>\n <head>\n  <title>503 Service Unavailable</title>\n </head>\n <body>\n"
    "  <h1>503 Service Unavailable</h1>\n  The server is currently unavailable.<br /><br />\n"
    " </body>\n</html>";
const std::string k409Page =
    "<html>\n <head>\n  <title>409 Conflict</title>\n </head>\n <body>\n  <h1>409 Conflict</h1>\n"
    "  Image status transition from saving to saving is not allowed<br /><br />\n\n\n\n"
    " </body>\n</html>";

struct GlanceFixture {
  FakeHttpClient http;
  std::vector<milliseconds> sleeps;
  TempDir dir;

  std::unique_ptr<GlanceUploader> uploader(std::vector<std::string> servers = {"http://a:9292"},
                                           unsigned retries = 3, std::string token = "") {
    GlanceOptions o;
    o.api_servers = std::move(servers);
    o.num_retries = retries;
    o.token = std::move(token);
    auto u =
        GlanceUploader::make(std::move(o), http, [this](milliseconds d) { sleeps.push_back(d); });
    REQUIRE(u.ok());
    return std::move(u).value();
  }
  std::string file(const std::string& bytes) {
    std::string path = dir.path() + "/snapshot.qcow2";
    writeFile(path, bytes);
    return path;
  }
};

const std::string kId = "5d3a1c0e-9a55-4b8e-8a55-37c1e3b4f6a0";

// An upload whose connection breaks after `after` bytes of the file went out.
FakeReply brokenUpload(std::size_t after) {
  FakeReply r;
  r.error = Error::unavailable("The request failed: Connection reset by peer (curl error 55)");
  r.fail_after = after;
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// GlanceUploader

TEST_CASE("GlanceUploader::create POSTs the image with its properties as top-level strings",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader({"http://a:9292/"}, 3, "s3cr3t");
  f.http.push(FakeReply::ok(R"({"status": "queued"})", 201));

  auto id = uploader->create(snapshotImage());
  REQUIRE(id.ok());
  CHECK(kiln::canonicalUuid(*id) == *id);

  auto requests = f.http.requests();
  auto sent = f.http.sent();
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].url == "http://a:9292/v2/images");
  CHECK(sent[0].method == "POST");
  CHECK(sentHeader(requests[0], "Content-Type") == "application/json");
  CHECK(sentHeader(requests[0], "X-Auth-Token") == "s3cr3t");
  CHECK(requests[0].total_timeout > milliseconds(0));  // a small request must not hang forever
  auto body = nlohmann::json::parse(sent[0].body);
  CHECK(body == nlohmann::json{{"id", *id},
                               {"name", "web-1 snapshot"},
                               {"disk_format", "qcow2"},
                               {"container_format", "bare"},
                               {"visibility", "private"},
                               {"image_type", "snapshot"},
                               {"instance_uuid", "0b7c4b4c-7f4c-4a43-a2a5-2f8d1c5e9a11"},
                               {"hw_disk_bus", "virtio"},
                               {"os_distro", "debian"}});
}

TEST_CASE("GlanceUploader::create fails over to the next server at once", "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader({"http://a:9292", "http://b:9292"});
  f.http.push(FakeReply::refused("http://a:9292"));
  f.http.push(FakeReply::ok("{}", 201));
  f.http.push(FakeReply::ok("", 204));  // the next call starts at the server that answered

  auto id = uploader->create(snapshotImage());
  REQUIRE(id.ok());
  REQUIRE(uploader->discard(*id).ok());
  auto requests = f.http.requests();
  REQUIRE(requests.size() == 3);
  CHECK(requests[0].url == "http://a:9292/v2/images");
  CHECK(requests[1].url == "http://b:9292/v2/images");
  CHECK(requests[2].url == "http://b:9292/v2/images/" + *id);
  CHECK(f.http.sent()[2].method == "DELETE");
  CHECK(f.sleeps.empty());
  // Both attempts asked for the same id: a retry never makes a second image.
  CHECK(f.http.sent()[0].body == f.http.sent()[1].body);
}

// Answers GET with the queued record of whatever id the last POST asked for: the uploader picks
// the id, so the script cannot know it in advance.
class EchoingClient final : public kiln::imagecache::HttpClient {
 public:
  explicit EchoingClient(FakeHttpClient& inner) : inner_(inner) {}
  std::string posted_id;

  Result<HttpResult> get(const HttpRequestSpec& spec) override {
    auto r = inner_.get(spec);
    if (r.ok() && r->status == 200 && r->body.empty()) {
      r->body = activeRecord(posted_id, "", "queued");
    }
    return r;
  }
  Result<HttpResult> stream(const HttpRequestSpec& spec, const ByteSink& sink,
                            const ResponseHook& hook) override {
    return inner_.stream(spec, sink, hook);
  }
  Result<HttpResult> send(const HttpRequestSpec& spec, const std::string& method,
                          const std::string& body) override {
    if (method == "POST") posted_id = nlohmann::json::parse(body).at("id");
    return inner_.send(spec, method, body);
  }
  Result<HttpResult> upload(const HttpRequestSpec& spec, const std::string& method,
                            const std::string& path, const ByteSink& on_read) override {
    return inner_.upload(spec, method, path, on_read);
  }

 private:
  FakeHttpClient& inner_;
};

TEST_CASE("GlanceUploader::create recognises its own image after a lost answer",
          "[glance][upload]") {
  GlanceFixture f;
  EchoingClient http(f.http);
  GlanceOptions o;
  o.api_servers = {"http://a:9292"};
  auto uploader = GlanceUploader::make(o, http, [&](milliseconds d) { f.sleeps.push_back(d); });
  REQUIRE(uploader.ok());
  // The first POST reached Glance but its answer was lost (here a 503 from a proxy); the second
  // finds the id taken (409); the GET shows the queued image the first one made.
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::ok("<html>Image with identifier already exists</html>", 409));
  f.http.push(FakeReply::ok(""));

  auto id = (*uploader)->create(snapshotImage());
  REQUIRE(id.ok());
  CHECK(*id == http.posted_id);
  auto sent = f.http.sent();
  REQUIRE(sent.size() == 3);
  CHECK(sent[0].method == "POST");
  CHECK(sent[1].method == "POST");
  CHECK(sent[0].body == sent[1].body);
  CHECK(sent[2].method == "GET");
  CHECK(f.http.requests()[2].url == "http://a:9292/v2/images/" + *id);

  SECTION("a 409 on the first attempt is not taken for ours") {
    f.http.push(FakeReply::ok("<html>exists</html>", 409));
    auto again = (*uploader)->create(snapshotImage());
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == ErrorCode::kConflict);
    CHECK(f.http.requests().size() == 4);  // no GET, no DELETE
  }
  SECTION("when every attempt fails, the image an attempt may have made is deleted") {
    FakeHttpClient& fake = f.http;
    for (int i = 0; i < 4; ++i) fake.push(FakeReply::ok(k503Page, 503));
    fake.push(FakeReply::ok("", 404));  // the DELETE: it was never made
    auto failed = (*uploader)->create(snapshotImage());
    REQUIRE_FALSE(failed.ok());
    CHECK(failed.error().code == ErrorCode::kUnavailable);
    CHECK(fake.sent().back().method == "DELETE");
    CHECK(fake.requests().back().url == "http://a:9292/v2/images/" + http.posted_id);
    CHECK(fake.pending() == 0);
  }
}

TEST_CASE("GlanceUploader::create refuses bad images before any request and maps Glance's 400",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader();
  auto refused = [&](auto mutate, const std::string& fragment) {
    NewImage image = snapshotImage();
    mutate(image);
    auto r = uploader->create(image);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Contains(fragment));
  };
  refused([](NewImage& i) { i.disk_format = "vmdk"; }, "'vmdk'");
  refused([](NewImage& i) { i.container_format = "ovf"; }, "'ovf'");
  refused([](NewImage& i) { i.name = ""; }, "1 to 255 characters");
  refused([](NewImage& i) { i.name = std::string(256, 'n'); }, "1 to 255 characters");
  refused([](NewImage& i) { i.name = "a\nb"; }, "control characters");
  refused([](NewImage& i) { i.name = "\xff\xfe"; }, "UTF-8");
  refused([](NewImage& i) { i.properties["size"] = "1"; }, "'size' of new image");
  refused([](NewImage& i) { i.properties["locations"] = "x"; }, "Glance field or reserved");
  refused([](NewImage& i) { i.properties["os_glance_import_task"] = "x"; }, "reserved");
  refused([](NewImage& i) { i.properties["HW_DISK_BUS"] = "virtio"; }, "[a-z0-9_:.-]");
  refused([](NewImage& i) { i.properties["a b"] = "x"; }, "[a-z0-9_:.-]");
  refused([](NewImage& i) { i.properties[std::string(256, 'k')] = "x"; }, "[a-z0-9_:.-]");
  refused([](NewImage& i) { i.properties["hw_vif_multiqueue_enabled"] = true; }, "not a string");
  refused([](NewImage& i) { i.properties["hw_numa_nodes"] = 2; }, "not a string");
  refused([](NewImage& i) { i.properties = nlohmann::json::array(); }, "not a JSON object");
  refused([](NewImage& i) { i.properties["x"] = std::string(70000, 'v'); }, "longer than");
  CHECK(f.http.requests().empty());

  NewImage plain = snapshotImage();
  plain.properties = nullptr;  // no properties at all is fine
  plain.name = "snapshot \xc3\xa9t\xc3\xa9";
  CHECK(kiln::imagecache::validateNewImage(plain).ok());

  f.http.push(FakeReply::ok("<html><body>400 Bad Request: Invalid os_type</body></html>", 400));
  auto r = uploader->create(snapshotImage());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(r.error().message, Catch::Contains("HTTP 400"));
  CHECK_THAT(r.error().message, Catch::Contains("Invalid os_type"));
  CHECK(f.http.requests().size() == 1);

  // Asked for JSON, Glance words its errors as {"message": ...}: the message is what is quoted.
  f.http.push(FakeReply::ok(
      R"({"message": "Provided object does not match schema 'image':\n\n'x' is bad", "code": "400 Bad Request", "title": "Bad Request"})",
      400));
  auto json_error = uploader->create(snapshotImage());
  CHECK_THAT(
      json_error.error().message,
      Catch::EndsWith("(HTTP 400): Provided object does not match schema 'image': 'x' is bad"));
}

TEST_CASE("GlanceUploader::upload PUTs the file as octet-stream, then checks the record",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader({"http://a:9292"}, 3, "s3cr3t");
  std::string bytes = bytesOf(100'003);
  f.http.push(FakeReply::ok("", 204));
  f.http.push(FakeReply::ok(activeRecord(kId, bytes)));

  REQUIRE(uploader->upload(kId, f.file(bytes)).ok());
  auto requests = f.http.requests();
  auto sent = f.http.sent();
  REQUIRE(requests.size() == 2);
  CHECK(sent[0].method == "PUT");
  CHECK(requests[0].url == "http://a:9292/v2/images/" + kId + "/file");
  CHECK(sentHeader(requests[0], "Content-Type") == "application/octet-stream");
  CHECK(sentHeader(requests[0], "X-Auth-Token") == "s3cr3t");
  CHECK(sent[0].file_path == f.dir.path() + "/snapshot.qcow2");
  CHECK(sent[0].body == bytes);
  CHECK(requests[0].total_timeout.count() == 0);  // a big upload must not hit a deadline
  CHECK(sent[1].method == "GET");
  CHECK(requests[1].url == "http://a:9292/v2/images/" + kId);
}

TEST_CASE("GlanceUploader::upload retries a broken PUT from the first byte", "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader({"http://a:9292", "http://b:9292"});
  std::string bytes = bytesOf(50'000);
  f.http.push(brokenUpload(20'000));
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::ok("", 204));
  f.http.push(FakeReply::ok(activeRecord(kId, bytes)));

  REQUIRE(uploader->upload(kId, f.file(bytes)).ok());
  auto sent = f.http.sent();
  auto requests = f.http.requests();
  REQUIRE(sent.size() == 4);
  CHECK(sent[0].body == bytes.substr(0, 20'000));
  CHECK(requests[0].url == "http://a:9292/v2/images/" + kId + "/file");
  CHECK(requests[1].url == "http://b:9292/v2/images/" + kId + "/file");
  CHECK(sent[2].body == bytes);  // the whole file again, not a continuation
  CHECK(requests[2].url == "http://a:9292/v2/images/" + kId + "/file");
  CHECK(f.sleeps == std::vector<milliseconds>{milliseconds(1000)});
}

TEST_CASE("A failed upload deletes the image", "[glance][upload]") {
  GlanceFixture f;
  std::string bytes = bytesOf(10'000);

  SECTION("retries run out") {
    auto uploader = f.uploader({"http://a:9292"}, /*retries=*/1);
    f.http.push(FakeReply::ok(k503Page, 503));
    f.http.push(FakeReply::refused());
    f.http.push(FakeReply::ok("", 204));  // DELETE
    auto r = uploader->upload(kId, f.file(bytes));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kUnavailable);
    CHECK_THAT(r.error().message, Catch::Contains("after 2 attempt(s)"));
    auto sent = f.http.sent();
    REQUIRE(sent.size() == 3);
    CHECK(sent[2].method == "DELETE");
    CHECK(f.http.requests()[2].url == "http://a:9292/v2/images/" + kId);
  }
  SECTION("a final answer (413 over quota)") {
    auto uploader = f.uploader();
    f.http.push(FakeReply::ok("<html><body>Image exceeds the storage quota</body></html>", 413));
    f.http.push(FakeReply::ok("", 204));
    auto r = uploader->upload(kId, f.file(bytes));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kTooLarge);
    CHECK_THAT(r.error().message, Catch::Contains("storage quota"));
    CHECK(f.http.sent().at(1).method == "DELETE");
  }
  SECTION("the file is missing") {
    auto uploader = f.uploader();
    f.http.push(FakeReply::ok("", 204));
    auto r = uploader->upload(kId, f.dir.path() + "/gone.qcow2");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kNotFound);
    REQUIRE(f.http.sent().size() == 1);
    CHECK(f.http.sent()[0].method == "DELETE");
  }
  SECTION("Glance stored something else than was sent") {
    auto uploader = f.uploader();
    f.http.push(FakeReply::ok("", 204));
    f.http.push(FakeReply::ok(activeRecord(kId, bytes.substr(1))));
    f.http.push(FakeReply::ok("", 204));
    auto r = uploader->upload(kId, f.file(bytes));
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("does not hold what was uploaded"));
    CHECK(f.http.sent().at(2).method == "DELETE");
  }
  SECTION("the delete fails too: the message says the image is left") {
    auto uploader = f.uploader({"http://a:9292"}, /*retries=*/0, "s3cr3t");
    f.http.push(FakeReply::ok("<html>denied</html>", 403));
    f.http.push(FakeReply::ok("<html>denied</html>", 403));
    auto r = uploader->upload(kId, f.file(bytes));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kForbidden);
    CHECK_THAT(r.error().message, Catch::Contains("left in Glance"));
    CHECK_THAT(r.error().message, !Catch::Contains("s3cr3t"));
  }
}

TEST_CASE("A 409 after a partial upload deletes the image, after a complete one it checks",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader();
  std::string bytes = bytesOf(30'000);

  SECTION("partial: Glance is still 'saving' the broken attempt") {
    f.http.push(brokenUpload(12'000));
    f.http.push(FakeReply::ok(k409Page, 409));
    f.http.push(FakeReply::ok(activeRecord(kId, bytes, "saving")));
    f.http.push(FakeReply::ok("", 204));
    auto r = uploader->upload(kId, f.file(bytes));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kConflict);
    CHECK_THAT(r.error().message, Catch::Contains("HTTP 409"));
    CHECK_THAT(r.error().message, Catch::Contains("'saving'"));
    auto sent = f.http.sent();
    REQUIRE(sent.size() == 4);
    CHECK(sent[3].method == "DELETE");
  }
  SECTION("complete: the first attempt's answer was lost but Glance has all of it") {
    f.http.push(brokenUpload(bytes.size()));
    f.http.push(FakeReply::ok(k409Page, 409));
    f.http.push(FakeReply::ok(activeRecord(kId, bytes)));
    REQUIRE(uploader->upload(kId, f.file(bytes)).ok());
    CHECK(f.http.sent().size() == 3);  // no DELETE
  }
}

TEST_CASE("A repeated upload of the same file to an active image succeeds without a delete",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader();
  std::string bytes = bytesOf(9'000);
  f.http.push(FakeReply::ok(k409Page, 409));
  f.http.push(FakeReply::ok(activeRecord(kId, bytes)));
  REQUIRE(uploader->upload(kId, f.file(bytes)).ok());
  CHECK(f.http.sent().size() == 2);

  // Another file: the image is not this one's, and goes.
  f.http.push(FakeReply::ok(k409Page, 409));
  f.http.push(FakeReply::ok(activeRecord(kId, bytes)));
  f.http.push(FakeReply::ok("", 204));
  auto other = uploader->upload(kId, f.file(bytesOf(9'000, 7)));
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().code == ErrorCode::kConflict);
  CHECK(f.http.sent().back().method == "DELETE");
}

TEST_CASE("GlanceUploader::discard DELETEs, an image already gone is fine", "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader();
  f.http.push(FakeReply::ok("", 204));
  f.http.push(FakeReply::ok("<html>404 Not Found</html>", 404));
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::ok("", 204));
  CHECK(uploader->discard(kId).ok());
  CHECK(uploader->discard(kId).ok());
  CHECK(uploader->discard(kId).ok());  // after one retry
  CHECK(f.http.requests().size() == 4);
  for (const auto& sent : f.http.sent()) CHECK(sent.method == "DELETE");
  CHECK(uploader->discard("../etc").error().code == ErrorCode::kInvalidArgument);
  CHECK(f.http.requests().size() == 4);
}

TEST_CASE("GlanceUploader::adopt gives a queued image its formats with a JSON patch",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader();
  f.http.push(FakeReply::ok(activeRecord(kId, "", "queued")));
  f.http.push(FakeReply::ok(k503Page, 503));
  f.http.push(FakeReply::ok(activeRecord(kId, "", "queued")));
  REQUIRE(uploader->adopt(kId, "qcow2", "bare").ok());
  const auto sent = f.http.sent();  // copies: the fake hands out its lists by value
  const auto specs = f.http.requests();
  REQUIRE(sent.size() == 3);
  CHECK(sent[0].method == "GET");
  for (std::size_t i : {1u, 2u}) {
    const auto& patch = sent[i];
    const auto& spec = specs[i];
    CHECK(patch.method == "PATCH");
    CHECK(spec.url == "http://a:9292/v2/images/" + kId);
    CHECK(sentHeader(spec, "Content-Type") == "application/openstack-images-v2.1-json-patch");
    CHECK(nlohmann::json::parse(patch.body) ==
          nlohmann::json::parse(R"([{"op":"replace","path":"/disk_format","value":"qcow2"},
                                    {"op":"replace","path":"/container_format","value":"bare"}])"));
  }
}

TEST_CASE("GlanceUploader::adopt takes only a queued image and deletes nothing",
          "[glance][upload]") {
  GlanceFixture f;
  auto uploader = f.uploader();
  f.http.push(FakeReply::ok(activeRecord(kId, "bytes")));
  auto active = uploader->adopt(kId, "qcow2", "bare");
  REQUIRE_FALSE(active.ok());
  CHECK(active.error().code == ErrorCode::kConflict);
  CHECK(active.error().message.find("is active, not queued") != std::string::npos);
  f.http.push(FakeReply::ok("<html>404 Not Found</html>", 404));
  CHECK(uploader->adopt(kId, "qcow2", "bare").error().code == ErrorCode::kNotFound);
  CHECK(uploader->adopt("../etc", "qcow2", "bare").error().code == ErrorCode::kInvalidArgument);
  const auto sent = f.http.sent();
  REQUIRE(sent.size() == 2);
  for (const auto& request : sent) CHECK(request.method == "GET");
}

// ---------------------------------------------------------------------------------------------
// LocalDirUploader

namespace {

std::set<std::string> filesIn(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

struct LocalFixture {
  TempDir tmp;
  std::string images = tmp.path() + "/images";
  std::string work = tmp.path() + "/work";
  LocalFixture() {
    std::filesystem::create_directory(images);
    std::filesystem::create_directory(work);
  }
  std::string file(const std::string& bytes, const std::string& name = "snap.qcow2") {
    std::string path = work + "/" + name;
    writeFile(path, bytes);
    return path;
  }
};

}  // namespace

TEST_CASE("LocalDirUploader writes bytes and a record that LocalDirSource reads back",
          "[upload][local]") {
  LocalFixture f;
  LocalDirUploader uploader(f.images);
  std::string bytes = bytesOf((3 << 20) + 17);

  auto id = uploader.create(snapshotImage());
  REQUIRE(id.ok());
  LocalDirSource source(f.images);
  // Created, not yet uploaded: invisible to the source.
  CHECK(source.getRecord(*id).error().code == ErrorCode::kNotFound);

  REQUIRE(uploader.upload(*id, f.file(bytes)).ok());
  auto record = source.getRecord(*id);
  REQUIRE(record.ok());
  CHECK(record->status == "active");
  CHECK(record->name == "web-1 snapshot");
  CHECK(record->disk_format == "qcow2");
  CHECK(record->container_format == "bare");
  CHECK(record->size == bytes.size());
  CHECK(record->checksum == hexDigest("md5", bytes));
  CHECK(record->os_hash_algo == "sha512");
  CHECK(record->os_hash_value == hexDigest("sha512", bytes));
  CHECK(record->properties == snapshotImage().properties);

  auto hasher = StreamHasher::create("sha512");
  REQUIRE(hasher.ok());
  std::string got;
  REQUIRE(source
              .download(*record,
                        [&](const char* data, std::size_t len) -> Result<void> {
                          hasher->update(data, len);
                          got.append(data, len);
                          return kiln::success();
                        })
              .ok());
  CHECK(got == bytes);
  CHECK(hasher->finalHex() == *record->os_hash_value);
  CHECK(filesIn(f.images) == std::set<std::string>{*id + ".img", *id + ".json"});

  SECTION("a repeated upload of the same file succeeds and changes nothing") {
    REQUIRE(uploader.upload(*id, f.file(bytes)).ok());
    CHECK(filesIn(f.images) == std::set<std::string>{*id + ".img", *id + ".json"});
  }
  SECTION("a repeated upload of another file fails and removes the image") {
    auto r = uploader.upload(*id, f.file(bytesOf(100, 3), "other"));
    CHECK(r.error().code == ErrorCode::kConflict);
    CHECK(filesIn(f.images).empty());
  }
  SECTION("discard removes an active image too, and may be repeated") {
    REQUIRE(uploader.discard(*id).ok());
    REQUIRE(uploader.discard(*id).ok());
    CHECK(filesIn(f.images).empty());
    CHECK(source.getRecord(*id).error().code == ErrorCode::kNotFound);
  }
}

TEST_CASE("LocalDirUploader: the record appears only after the complete bytes", "[upload][local]") {
  LocalFixture f;
  LocalDirUploader uploader(f.images);
  std::string bytes = bytesOf(5 << 20);
  auto id = uploader.create(snapshotImage());
  REQUIRE(id.ok());

  // inotify shows every name that appears in the directory, in order.
  kiln::UniqueFd watch(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  REQUIRE(watch.valid());
  REQUIRE(::inotify_add_watch(watch.get(), f.images.c_str(),
                              IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) >= 0);
  REQUIRE(uploader.upload(*id, f.file(bytes)).ok());

  std::vector<std::string> events;
  alignas(inotify_event) char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(watch.get(), buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      std::string name = e->len > 0 ? std::string(e->name) : "";
      std::string kind = (e->mask & IN_CREATE)     ? "create "
                         : (e->mask & IN_MOVED_TO) ? "rename-to "
                                                   : "closed ";
      events.push_back(kind + name);
      p += sizeof(inotify_event) + e->len;
    }
  }
  INFO(nlohmann::json(events).dump());
  auto position = [&](const std::string& event) {
    return std::find(events.begin(), events.end(), event) - events.begin();
  };
  const auto end = static_cast<std::ptrdiff_t>(events.size());
  REQUIRE(position("rename-to " + *id + ".img") < end);
  REQUIRE(position("rename-to " + *id + ".json") < end);
  // Both final names arrive by rename only, of files already complete, the record last.
  CHECK(position("create " + *id + ".img") == end);
  CHECK(position("create " + *id + ".json") == end);
  CHECK(position("rename-to " + *id + ".img") < position("rename-to " + *id + ".json"));
  CHECK(std::filesystem::file_size(f.images + "/" + *id + ".img") == bytes.size());
}

TEST_CASE("LocalDirUploader: a failing copy leaves no file behind", "[upload][local]") {
  LocalFixture f;
  LocalDirUploader uploader(f.images);

  SECTION("the disk fills up mid-copy") {
    std::string bytes = bytesOf(4 << 20);
    std::string path = f.file(bytes);
    auto id = uploader.create(snapshotImage());
    REQUIRE(id.ok());
    // RLIMIT_FSIZE makes write() fail with EFBIG past 1 MiB, as a full disk would mid-copy.
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 1 << 20;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    auto r = uploader.upload(*id, path);
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_handler);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::kResourceExhausted);
    CHECK_THAT(r.error().message, Catch::Contains(*id));
    CHECK(filesIn(f.images).empty());
    // The image is gone, not merely empty: nothing left to upload to.
    CHECK(uploader.upload(*id, path).error().code == ErrorCode::kNotFound);
  }
  SECTION("the file is missing or not a regular file") {
    for (const std::string& path : {f.work + "/gone.qcow2", f.work}) {
      auto id = uploader.create(snapshotImage());
      REQUIRE(id.ok());
      auto r = uploader.upload(*id, path);
      REQUIRE_FALSE(r.ok());
      CHECK(filesIn(f.images).empty());
    }
  }
  SECTION("discard removes a created image and an interrupted copy's leftovers") {
    auto id = uploader.create(snapshotImage());
    REQUIRE(id.ok());
    writeFile(f.images + "/." + *id + ".img.tmp-1234abcd", "half");  // a crash mid-copy
    writeFile(f.images + "/other.img", "unrelated");
    REQUIRE(uploader.discard(*id).ok());
    CHECK(filesIn(f.images) == std::set<std::string>{"other.img"});
  }
}

TEST_CASE("LocalDirUploader cannot adopt an image another service made", "[upload][local]") {
  LocalFixture f;
  LocalDirUploader uploader(f.images);
  auto adopted = uploader.adopt("0b7c4b4c-7f4c-4a43-a2a5-2f8d1c5e9a11", "qcow2", "bare");
  REQUIRE_FALSE(adopted.ok());
  CHECK(adopted.error().message.find("[glance] api_servers") != std::string::npos);
  CHECK(filesIn(f.images).empty());
}

TEST_CASE("LocalDirUploader refuses bad ids and bad images", "[upload][local]") {
  LocalFixture f;
  LocalDirUploader uploader(f.images);
  NewImage bad = snapshotImage();
  bad.properties["checksum"] = "x";
  CHECK(uploader.create(bad).error().code == ErrorCode::kInvalidArgument);
  for (const std::string& id : {std::string("../x"), std::string(".hidden"), std::string("")}) {
    CHECK(uploader.upload(id, "/etc/hostname").error().code == ErrorCode::kInvalidArgument);
    CHECK(uploader.discard(id).error().code == ErrorCode::kInvalidArgument);
  }
  CHECK(filesIn(f.images).empty());
}

TEST_CASE("A snapshot is its project's: owner set, private, in Glance and in the local directory",
          "[upload][access]") {
  NewImage image = snapshotImage();
  image.owner = "project-b";

  GlanceFixture g;
  auto uploader = g.uploader();
  g.http.push(FakeReply::ok(R"({"status": "queued"})", 201));
  REQUIRE(uploader->create(image).ok());
  auto body = nlohmann::json::parse(g.http.sent().at(0).body);
  CHECK(body["owner"] == "project-b");
  CHECK(body["visibility"] == "private");

  LocalFixture l;
  LocalDirUploader local(l.images);
  auto id = local.create(image);
  REQUIRE(id.ok());
  REQUIRE(local.upload(*id, l.file(bytesOf(4096))).ok());
  LocalDirSource source(l.images);
  auto record = source.getRecord(*id);
  REQUIRE(record.ok());
  CHECK(record->owner == "project-b");
  CHECK(record->visibility == "private");
  CHECK(source.checkAccess(*id, {"project-b", ""}).ok());
  CHECK(source.checkAccess(*id, {"project-c", ""}).error().code == ErrorCode::kNotFound);

  // An instance without a project names no owner: Glance decides (the uploader's project).
  g.http.push(FakeReply::ok(R"({"status": "queued"})", 201));
  REQUIRE(uploader->create(snapshotImage()).ok());
  CHECK_FALSE(nlohmann::json::parse(g.http.sent().at(1).body).contains("owner"));

  image.owner = "a\nb";
  CHECK_THAT(kiln::imagecache::validateNewImage(image).error().message,
             Catch::Contains("control characters"));
}
