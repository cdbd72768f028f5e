// kilnd's API over TLS with client certificates, and over a unix socket: the listeners the
// scheduler and local tools use besides plain HTTP on loopback.

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/integration/kilnd_harness.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace kiln::testing {
namespace {

using rpc::testing::makeRequest;
using rpc::testing::TestClient;
using rpc::testing::TlsClientOptions;

std::optional<rpc::testing::TestResponse> exchange(TestClient client, const std::string& request) {
  if (!client.valid() || !client.send(request)) return std::nullopt;
  return client.readResponse();
}

TEST_CASE("kilnd serves its API over TLS to clients with a certificate from its CA",
          "[integration][tls]") {
  TempDir certificates;
  TestPki pki = makeTestPki(certificates.path());
  KilndHarness kilnd("[api]\ncert_file = " + pki.server_cert + "\nkey_file = " + pki.server_key +
                     "\nca_file = " + pki.ca_cert + "\n");
  TlsClientOptions scheduler{pki.ca_cert, pki.client_cert, pki.client_key, "127.0.0.1"};
  kilnd.setTransport([&](const std::string& request) {
    return exchange(TestClient::connectTls(kilnd.port(), scheduler), request);
  });
  kilnd.start();

  ApiResponse host = kilnd.api("GET", "/v1/host");
  INFO(host.body);
  CHECK(host.status == 200);
  CHECK(host.json.contains("hostname"));
  CHECK(kilnd.api("GET", "/v1/host", "", /*with_token=*/false).status == 401);

  // Without a certificate, or in plain HTTP, nothing gets through.
  std::string request =
      makeRequest("GET", "/v1/host", {}, "Authorization: Bearer " + kilnd.token() + "\r\n");
  TlsClientOptions anonymous{pki.ca_cert, "", "", "127.0.0.1"};
  CHECK_FALSE(exchange(TestClient::connectTls(kilnd.port(), anonymous), request).has_value());
  auto plain = rpc::testing::roundTrip(kilnd.port(), request);
  REQUIRE(plain.has_value());
  CHECK(plain->status == 400);
  CHECK(kilnd.logText().find("client certificates required") != std::string::npos);
}

TEST_CASE("kilnd refuses to start with a private key that others can read", "[integration][tls]") {
  TempDir certificates;
  TestPki pki = makeTestPki(certificates.path());
  ::chmod(pki.server_key.c_str(), 0644);
  KilndHarness kilnd("[api]\ncert_file = " + pki.server_cert + "\nkey_file = " + pki.server_key +
                     "\n");
  CHECK_FALSE(kilnd.tryStart());
  INFO(kilnd.logText());
  CHECK(kilnd.logText().find("[api] key_file '" + pki.server_key + "' has mode 0644") !=
        std::string::npos);
}

TEST_CASE("kilnd serves its API on a unix socket beside TCP", "[integration][unix]") {
  TempDir run;
  std::string socket_path = run.path() + "/kilnd.sock";
  KilndHarness kilnd("[api]\nlisten_unix_socket = " + socket_path + "\nunix_socket_mode = 0600\n");
  kilnd.start();  // the health check goes over TCP

  struct stat st {};
  REQUIRE(::lstat(socket_path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);

  kilnd.setTransport([&](const std::string& request) {
    return exchange(TestClient::connectUnix(socket_path), request);
  });
  ApiResponse host = kilnd.api("GET", "/v1/host");
  INFO(host.body);
  CHECK(host.status == 200);
  CHECK(host.json.contains("hostname"));
  CHECK(kilnd.api("GET", "/v1/host", "", /*with_token=*/false).status == 401);

  kilnd.stop();
  CHECK_FALSE(std::filesystem::exists(std::filesystem::symlink_status(socket_path)));
}

}  // namespace
}  // namespace kiln::testing
