#pragma once
// A tiny blocking HTTP client over raw sockets for the server tests. Raw sockets let a test send
// exactly the bytes it wants (half a header, a broken request line) and see exactly what comes
// back. Every socket call has a timeout, so a server bug fails a test instead of hanging it.
// The same client speaks TLS (through OpenSSL, verifying the server) and over a unix socket.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

struct ssl_st;

namespace kiln::rpc::testing {

struct TlsClientOptions {
  std::string ca_file;    // the CA the server's certificate must chain to
  std::string cert_file;  // a client certificate (and key) to present; empty: none
  std::string key_file;
  std::string server_name = "127.0.0.1";  // the name or IP address checked in its certificate
};

struct TestResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;

  std::string header(const std::string& lower_name) const;
};

class TestClient {
 public:
  // An unconnected client (valid() is false) when the connection fails.
  static TestClient connect(std::uint16_t port, const std::string& host = "127.0.0.1");
  static TestClient connectUnix(const std::string& path);
  // Connects and completes the TLS handshake; unconnected when either fails, with the reason in
  // tlsError(). Under TLS 1.3 a server refuses a client certificate only after the client's
  // handshake is done, so that refusal shows as a failed request instead.
  static TestClient connectTls(std::uint16_t port, const TlsClientOptions& options,
                               const std::string& host = "127.0.0.1");
  static std::string tlsError();  // OpenSSL's last error on this thread

  bool valid() const { return fd_.valid(); }
  bool send(std::string_view data);
  // nullopt when the connection closes or times out before a whole response arrives.
  std::optional<TestResponse> readResponse(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads until the server closes the connection; false on timeout. Any unread bytes are dropped.
  bool waitForClose(std::chrono::milliseconds timeout);
  void close() {
    tls_.reset();
    fd_.reset();
  }

 private:
  struct SslFree {
    void operator()(ssl_st* ssl) const;
  };

  explicit TestClient(UniqueFd fd) : fd_(std::move(fd)) {}
  // Appends what arrives before the deadline; false on close, error or timeout.
  bool receiveMore(std::chrono::steady_clock::time_point deadline);

  UniqueFd fd_;
  std::unique_ptr<ssl_st, SslFree> tls_;
  std::string buffer_;
  bool closed_ = false;
};

// "METHOD TARGET HTTP/1.1" with Host, optional extra header lines ("Name: value\r\n" each) and a
// Content-Length for a non-empty body.
std::string makeRequest(std::string_view method, std::string_view target,
                        std::string_view body = {}, std::string_view extra_headers = {});

// A whole exchange on a fresh connection.
std::optional<TestResponse> roundTrip(std::uint16_t port, const std::string& request);

}  // namespace kiln::rpc::testing
