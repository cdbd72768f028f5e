// The HTTP server's TLS and unix-socket listeners, and its startup checks. The certificates are
// made at test time by the openssl command (tests/support/test_pki.h).

#include <curl/curl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/rpc/http_server.h"
#include "agent/rpc/json_response.h"
#include "common/unique_fd.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_http_client.h"
#include "tests/support/test_pki.h"

namespace kiln::rpc {
namespace {

using namespace std::chrono_literals;
using kiln::testing::TempDir;
using kiln::testing::TestPki;
using testing::makeRequest;
using testing::TestClient;
using testing::TestResponse;
using testing::TlsClientOptions;

HttpResponse echoPeer(const HttpRequest& request) {
  return jsonResponse(200, {{"path", request.path}, {"peer", request.peer}});
}

// One set of certificates for the whole binary: making them takes a few openssl runs.
const TestPki& pki() {
  static TempDir dir;
  static const TestPki made = kiln::testing::makeTestPki(dir.path());
  return made;
}

TlsSettings serverTls(bool client_certificates = false) {
  return {pki().server_cert, pki().server_key, client_certificates ? pki().ca_cert : ""};
}

TlsClientOptions trusting() { return {pki().ca_cert, "", "", "127.0.0.1"}; }
TlsClientOptions withClientCertificate() {
  return {pki().ca_cert, pki().client_cert, pki().client_key, "127.0.0.1"};
}

std::unique_ptr<HttpServer> startServer(ListenSettings listen, ServerLimits limits = {},
                                        RequestHandler handler = echoPeer) {
  auto server = std::make_unique<HttpServer>(std::move(listen), limits, std::move(handler));
  Result<void> started = server->start();
  INFO((started ? std::string() : started.error().message));
  REQUIRE(started.ok());
  return server;
}

std::unique_ptr<HttpServer> startTls(TlsSettings tls, ServerLimits limits = {},
                                     RequestHandler handler = echoPeer) {
  ListenSettings listen;
  listen.tls = std::move(tls);
  auto server = startServer(std::move(listen), limits, std::move(handler));
  REQUIRE(server->port() != 0);
  return server;
}

std::string startError(ListenSettings listen) {
  HttpServer server(std::move(listen), {}, echoPeer);
  Result<void> started = server.start();
  REQUIRE_FALSE(started.ok());
  return started.error().message;
}

std::optional<TestResponse> tlsRoundTrip(std::uint16_t port, const TlsClientOptions& options,
                                         const std::string& request) {
  TestClient client = TestClient::connectTls(port, options);
  if (!client.valid() || !client.send(request)) return std::nullopt;
  return client.readResponse();
}

struct CurlResult {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string error;
};

// GET `url` with libcurl, the client a scheduler would use; `setup` adds the options of a test.
CurlResult curlGet(const std::string& url, const std::function<void(CURL*)>& setup) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  REQUIRE(curl);
  CurlResult result;
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(
      curl.get(), CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t count, void* out) {
        static_cast<std::string*>(out)->append(data, size * count);
        return size * count;
      });
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &result.body);
  setup(curl.get());
  result.code = curl_easy_perform(curl.get());
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &result.status);
  result.error = error;
  return result;
}

void requireJsonStatus(const std::optional<TestResponse>& response, int status) {
  REQUIRE(response.has_value());
  CHECK(response->status == status);
  nlohmann::json body = nlohmann::json::parse(response->body);
  CHECK(body["error"]["code"] == status);
}

TEST_CASE("HttpServer serves HTTPS to a client that verifies its certificate", "[rpc][http][tls]") {
  auto server = startTls(serverTls());
  TestClient client = TestClient::connectTls(server->port(), trusting());
  INFO(TestClient::tlsError());
  REQUIRE(client.valid());
  for (const char* path : {"/first", "/second"}) {  // kept alive across requests
    REQUIRE(client.send(makeRequest("GET", path)));
    auto response = client.readResponse();
    REQUIRE(response.has_value());
    CHECK(response->status == 200);
    auto body = nlohmann::json::parse(response->body);
    CHECK(body["path"] == path);
    CHECK(body["peer"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
  }
  SECTION("and by the name localhost, as libcurl checks it") {
    CurlResult result =
        curlGet(fmt::format("https://localhost:{}/curl", server->port()), [&](CURL* curl) {
          curl_easy_setopt(curl, CURLOPT_CAINFO, pki().ca_cert.c_str());
          curl_easy_setopt(curl, CURLOPT_SSLVERSION, CURL_SSLVERSION_TLSv1_2);
        });
    INFO(result.error);
    CHECK(result.code == CURLE_OK);
    CHECK(result.status == 200);
  }
  SECTION("but not below TLS 1.2") {
    CurlResult result =
        curlGet(fmt::format("https://127.0.0.1:{}/old", server->port()), [&](CURL* curl) {
          curl_easy_setopt(curl, CURLOPT_CAINFO, pki().ca_cert.c_str());
          long versions = static_cast<long>(CURL_SSLVERSION_TLSv1_0) |
                          static_cast<long>(CURL_SSLVERSION_MAX_TLSv1_1);
          curl_easy_setopt(curl, CURLOPT_SSLVERSION, versions);
          // The client's own policy would refuse TLS 1.1 first; lift it so the server decides.
          curl_easy_setopt(curl, CURLOPT_SSL_CIPHER_LIST, "DEFAULT:@SECLEVEL=0");
        });
    CHECK(result.code != CURLE_OK);
    CHECK(result.status == 0);
  }
}

TEST_CASE("HttpServer answers plain HTTP on its TLS port with a plain 400 and closes",
          "[rpc][http][tls]") {
  auto server = startTls(serverTls());
  TestClient client = TestClient::connect(server->port());
  REQUIRE(client.send(makeRequest("GET", "/v1/host")));
  auto response = client.readResponse();
  requireJsonStatus(response, 400);
  CHECK_THAT(response->body, Catch::Contains("HTTPS"));
  CHECK(client.waitForClose(3s));
  // The server is unharmed.
  auto after = tlsRoundTrip(server->port(), trusting(), makeRequest("GET", "/after"));
  REQUIRE(after.has_value());
  CHECK(after->status == 200);
}

TEST_CASE("HttpServer with a ca_file serves only clients with a certificate from that CA",
          "[rpc][http][tls]") {
  auto server = startTls(serverTls(/*client_certificates=*/true));

  SECTION("a certificate from the CA") {
    auto response = tlsRoundTrip(server->port(), withClientCertificate(), makeRequest("GET", "/"));
    REQUIRE(response.has_value());
    CHECK(response->status == 200);
    CurlResult result =
        curlGet(fmt::format("https://127.0.0.1:{}/curl", server->port()), [&](CURL* curl) {
          curl_easy_setopt(curl, CURLOPT_CAINFO, pki().ca_cert.c_str());
          curl_easy_setopt(curl, CURLOPT_SSLCERT, pki().client_cert.c_str());
          curl_easy_setopt(curl, CURLOPT_SSLKEY, pki().client_key.c_str());
        });
    INFO(result.error);
    CHECK(result.status == 200);
  }
  SECTION("no certificate") {
    CHECK_FALSE(tlsRoundTrip(server->port(), trusting(), makeRequest("GET", "/")).has_value());
    CurlResult result =
        curlGet(fmt::format("https://127.0.0.1:{}/curl", server->port()),
                [&](CURL* curl) { curl_easy_setopt(curl, CURLOPT_CAINFO, pki().ca_cert.c_str()); });
    CHECK(result.code != CURLE_OK);
    CHECK(result.status == 0);
  }
  SECTION("a certificate from another CA") {
    TlsClientOptions other = {pki().ca_cert, pki().other_client_cert, pki().other_client_key,
                              "127.0.0.1"};
    CHECK_FALSE(tlsRoundTrip(server->port(), other, makeRequest("GET", "/")).has_value());
    CurlResult result =
        curlGet(fmt::format("https://127.0.0.1:{}/curl", server->port()), [&](CURL* curl) {
          curl_easy_setopt(curl, CURLOPT_CAINFO, pki().ca_cert.c_str());
          curl_easy_setopt(curl, CURLOPT_SSLCERT, pki().other_client_cert.c_str());
          curl_easy_setopt(curl, CURLOPT_SSLKEY, pki().other_client_key.c_str());
        });
    CHECK(result.code != CURLE_OK);
    CHECK(result.status == 0);
  }
  // Refused handshakes leave the server serving.
  auto after = tlsRoundTrip(server->port(), withClientCertificate(), makeRequest("GET", "/"));
  REQUIRE(after.has_value());
  CHECK(after->status == 200);
}

TEST_CASE("HttpServer closes a TLS connection that does not finish its handshake in time",
          "[rpc][http][tls]") {
  ServerLimits limits;
  limits.read_timeout = 300ms;
  auto server = startTls(serverTls(), limits);  // one I/O thread: blocking anywhere would show
  TestClient silent = TestClient::connect(server->port());
  REQUIRE(silent.valid());
  SECTION("silent from the start") {}
  SECTION("stalled inside the ClientHello") { REQUIRE(silent.send("\x16\x03\x01\x02\x00\x01")); }
  auto stalled_at = std::chrono::steady_clock::now();

  auto other = tlsRoundTrip(server->port(), trusting(), makeRequest("GET", "/other"));
  REQUIRE(other.has_value());
  CHECK(other->status == 200);

  CHECK(silent.waitForClose(5s));
  auto held = std::chrono::steady_clock::now() - stalled_at;
  CHECK(held >= 250ms);
  CHECK(held < 3s);
}

TEST_CASE("HttpServer: the TLS handshake counts against header_timeout", "[rpc][http][tls]") {
  ServerLimits limits;
  limits.header_timeout = 300ms;
  limits.read_timeout = 30s;
  auto server = startTls(serverTls(), limits);
  TestClient silent = TestClient::connect(server->port());
  REQUIRE(silent.valid());
  auto start = std::chrono::steady_clock::now();
  CHECK(silent.waitForClose(5s));
  auto held = std::chrono::steady_clock::now() - start;
  CHECK(held >= 250ms);
  CHECK(held < 3s);
  // A client that completes its handshake and request in time is served as before.
  auto served = tlsRoundTrip(server->port(), trusting(), makeRequest("GET", "/in-time"));
  REQUIRE(served.has_value());
  CHECK(served->status == 200);
}

TEST_CASE("HttpServer keeps its limits under TLS", "[rpc][http][tls]") {
  ServerLimits limits;
  limits.max_header_bytes = 1024;
  limits.max_body_bytes = 1024;
  limits.read_timeout = 300ms;
  limits.max_connections_per_peer = 2;
  const std::string big(16 * 1024 * 1024, 'x');  // far more than the socket buffers hold
  auto server = startTls(serverTls(), limits, [&big](const HttpRequest& request) {
    if (request.path == "/big") return HttpResponse{200, "text/plain", big};
    return echoPeer(request);
  });

  SECTION("431 for headers over the limit") {
    auto response =
        tlsRoundTrip(server->port(), trusting(),
                     makeRequest("GET", "/", {}, "X-Big: " + std::string(4096, 'h') + "\r\n"));
    requireJsonStatus(response, 431);
  }
  SECTION("413 for a body over the limit, before it is sent") {
    auto response =
        tlsRoundTrip(server->port(), trusting(),
                     "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1073741824\r\n\r\n");
    requireJsonStatus(response, 413);
  }
  SECTION("a trickling client is cut off at the deadline") {
    TestClient slow = TestClient::connectTls(server->port(), trusting());
    REQUIRE(slow.valid());
    REQUIRE(slow.send("GET / HTTP/1.1\r\nX-Slow: "));
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 40 && slow.send("a"); ++i) std::this_thread::sleep_for(50ms);
    CHECK(slow.waitForClose(5s));
    CHECK(std::chrono::steady_clock::now() - start < 3s);
  }
  SECTION("a client that never reads its response is dropped at the deadline") {
    TestClient never_reads = TestClient::connectTls(server->port(), trusting());
    REQUIRE(never_reads.send(makeRequest("GET", "/big")));
    // Served once, then idle: this one keeps its place for idle_timeout (a minute).
    TestClient idle = TestClient::connectTls(server->port(), trusting());
    REQUIRE(idle.send(makeRequest("GET", "/")));
    REQUIRE(idle.readResponse().has_value());
    // Both places are taken...
    CHECK_FALSE(tlsRoundTrip(server->port(), trusting(), makeRequest("GET", "/")).has_value());
    // ...until the stalled write passes its deadline.
    std::optional<TestResponse> freed;
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!freed && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      freed = tlsRoundTrip(server->port(), trusting(), makeRequest("GET", "/"));
    }
    REQUIRE(freed.has_value());
    CHECK(freed->status == 200);
  }
  SECTION("connections per peer") {
    TestClient first = TestClient::connectTls(server->port(), trusting());
    TestClient second = TestClient::connectTls(server->port(), trusting());
    REQUIRE(first.valid());
    REQUIRE(second.valid());
    // Over the limit a TLS client is closed without a handshake.
    CHECK_FALSE(TestClient::connectTls(server->port(), trusting()).valid());
  }
}

TEST_CASE("HttpServer refuses TLS files it cannot use, naming the file and the reason",
          "[rpc][http][tls]") {
  TempDir dir;
  auto copy = [&](const std::string& from, const std::string& name, mode_t mode) {
    std::string to = dir.path() + "/" + name;
    std::filesystem::copy_file(from, to);
    ::chmod(to.c_str(), mode);
    return to;
  };
  ListenSettings listen;
  std::string expected;
  SECTION("a missing certificate") {
    listen.tls = {dir.path() + "/absent.pem", pki().server_key, ""};
    expected = "[api] cert_file '" + dir.path() + "/absent.pem': No such file or directory";
  }
  SECTION("a key readable by others") {
    std::string key = copy(pki().server_key, "open.key", 0644);
    listen.tls = {pki().server_cert, key, ""};
    expected = "[api] key_file '" + key + "' has mode 0644";
  }
  SECTION("a key readable by the group") {
    std::string key = copy(pki().server_key, "group.key", 0640);
    listen.tls = {pki().server_cert, key, ""};
    expected = "chmod 600";
  }
  SECTION("a key that belongs to another certificate") {
    listen.tls = {pki().server_cert, pki().client_key, ""};
    expected = "does not match the certificate in [api] cert_file '" + pki().server_cert + "'";
  }
  SECTION("a certificate file that holds no certificate") {
    std::string junk = dir.path() + "/junk.pem";
    std::ofstream(junk) << "not a certificate\n";
    listen.tls = {junk, pki().server_key, ""};
    expected = "[api] cert_file '" + junk + "' holds no usable PEM certificate";
  }
  SECTION("a key file that holds no key") {
    std::string key = copy(pki().server_cert, "cert-as.key", 0600);
    listen.tls = {pki().server_cert, key, ""};
    expected = "[api] key_file '" + key + "' holds no usable";
  }
  SECTION("a CA file that holds no certificate") {
    std::string junk = dir.path() + "/ca.pem";
    std::ofstream(junk) << "\n";
    listen.tls = {pki().server_cert, pki().server_key, junk};
    expected = "[api] ca_file '" + junk + "' holds no PEM certificate";
  }
  SECTION("a missing CA file") {
    listen.tls = {pki().server_cert, pki().server_key, dir.path() + "/none.pem"};
    expected = "[api] ca_file '" + dir.path() + "/none.pem'";
  }
  SECTION("a certificate without its key") {
    listen.tls = {pki().server_cert, "", ""};
    expected = "[api] key_file is not";
  }
  CHECK_THAT(startError(listen), Catch::Contains(expected));
}

TEST_CASE("HttpServer refuses plain HTTP on an address that is not loopback", "[rpc][http]") {
  ListenSettings listen;
  listen.host = GENERATE(std::string("0.0.0.0"), std::string("::"));
  std::string message = startError(listen);
  CHECK_THAT(message, Catch::Contains("allow_insecure_http"));
  CHECK_THAT(message, Catch::Contains("cert_file"));
  // Loopback needs no flag (the other tests), nor does a name that resolves to it.
  listen.host = "localhost";
  auto server = startServer(listen);
  CHECK(server->port() != 0);
}

// ---- The unix socket ----

mode_t modeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode;
}

// A socket file with nobody listening, as a killed kilnd leaves behind.
void makeStaleSocket(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), address.sun_path);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
}

ListenSettings unixOnly(const std::string& path, unsigned mode = 0660) {
  ListenSettings listen;
  listen.host.clear();
  listen.unix_socket.path = path;
  listen.unix_socket.mode = mode;
  return listen;
}

TEST_CASE("HttpServer serves a unix socket with the configured mode", "[rpc][http][unix]") {
  TempDir dir;
  std::string path = dir.path() + "/api.sock";
  unsigned mode = GENERATE(0660U, 0600U, 0666U);
  auto server = startServer(unixOnly(path, mode));
  CHECK(server->port() == 0);  // no TCP listener
  CHECK(S_ISSOCK(modeOf(path)));
  CHECK((modeOf(path) & 07777) == mode);

  TestClient client = TestClient::connectUnix(path);
  REQUIRE(client.valid());
  REQUIRE(client.send(makeRequest("GET", "/v1/host")));
  auto response = client.readResponse();
  REQUIRE(response.has_value());
  CHECK(response->status == 200);
  CHECK(nlohmann::json::parse(response->body)["peer"] ==
        fmt::format("unix:uid={},pid={}", ::getuid(), ::getpid()));

  CurlResult result = curlGet("http://localhost/curl", [&](CURL* curl) {
    curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, path.c_str());
  });
  INFO(result.error);
  CHECK(result.status == 200);

  server->stop();
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(path)));
}

TEST_CASE("HttpServer sets the unix socket's group", "[rpc][http][unix]") {
  TempDir dir;
  std::string path = dir.path() + "/api.sock";
  ListenSettings listen = unixOnly(path);
  // A group the test may give files to: its own (by number), or by name.
  gid_t gid = ::getgid();
  listen.unix_socket.group = std::to_string(gid);
  SECTION("by number") {}
  SECTION("by name") {
    struct group* entry = ::getgrgid(gid);
    if (entry == nullptr) return;
    listen.unix_socket.group = entry->gr_name;
  }
  auto server = startServer(listen);
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(st.st_gid == gid);

  listen.unix_socket.path = dir.path() + "/other.sock";
  listen.unix_socket.group = "no-such-group-kiln";
  CHECK_THAT(startError(listen), Catch::Contains("'no-such-group-kiln' is not a known group"));
}

TEST_CASE("HttpServer replaces a stale unix socket but nothing else", "[rpc][http][unix]") {
  TempDir dir;
  std::string path = dir.path() + "/api.sock";

  SECTION("a stale socket is replaced") {
    makeStaleSocket(path);
    REQUIRE(S_ISSOCK(modeOf(path)));
    auto server = startServer(unixOnly(path));
    auto client = TestClient::connectUnix(path);
    REQUIRE(client.send(makeRequest("GET", "/")));
    auto response = client.readResponse();
    REQUIRE(response.has_value());
    CHECK(response->status == 200);
  }
  SECTION("a regular file is left alone") {
    std::ofstream(path) << "precious\n";
    CHECK_THAT(startError(unixOnly(path)), Catch::Contains("exists and is not a socket"));
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    CHECK(line == "precious");
  }
  SECTION("a directory is left alone") {
    std::filesystem::create_directory(path);
    CHECK_THAT(startError(unixOnly(path)), Catch::Contains("exists and is not a socket"));
    CHECK(std::filesystem::is_directory(path));
  }
  SECTION("a live socket belongs to another server") {
    auto first = startServer(unixOnly(path));
    CHECK_THAT(startError(unixOnly(path)), Catch::Contains("Another process is listening"));
    // The first server keeps its socket.
    auto client = TestClient::connectUnix(path);
    REQUIRE(client.send(makeRequest("GET", "/")));
    CHECK(client.readResponse().has_value());
  }
  SECTION("a path that is too long") {
    std::string long_path = dir.path() + "/" + std::string(120, 's');
    CHECK_THAT(startError(unixOnly(long_path)), Catch::Contains("shorter than"));
  }
}

TEST_CASE("HttpServer counts unix peers by user id", "[rpc][http][unix]") {
  TempDir dir;
  std::string path = dir.path() + "/api.sock";
  ServerLimits limits;
  limits.max_connections_per_peer = 2;
  auto server = startServer(unixOnly(path), limits);
  TestClient first = TestClient::connectUnix(path);
  TestClient second = TestClient::connectUnix(path);
  for (TestClient* client : {&first, &second}) {
    REQUIRE(client->send(makeRequest("GET", "/")));
    auto response = client->readResponse();
    REQUIRE(response.has_value());
    CHECK(response->status == 200);
  }
  TestClient third = TestClient::connectUnix(path);
  REQUIRE(third.valid());
  requireJsonStatus(third.readResponse(), 503);
}

TEST_CASE("HttpServer serves TCP and the unix socket together", "[rpc][http][unix]") {
  TempDir dir;
  ListenSettings listen;
  listen.unix_socket.path = dir.path() + "/api.sock";
  auto server = startServer(listen);
  REQUIRE(server->port() != 0);
  auto tcp = testing::roundTrip(server->port(), makeRequest("GET", "/tcp"));
  REQUIRE(tcp.has_value());
  CHECK(tcp->status == 200);
  TestClient local = TestClient::connectUnix(listen.unix_socket.path);
  REQUIRE(local.send(makeRequest("GET", "/unix")));
  auto response = local.readResponse();
  REQUIRE(response.has_value());
  CHECK(response->status == 200);
}

TEST_CASE("HttpServer needs something to listen on", "[rpc][http]") {
  ListenSettings listen;
  listen.host.clear();
  CHECK_THAT(startError(listen), Catch::Contains("nothing to listen on"));
}

}  // namespace
}  // namespace kiln::rpc
