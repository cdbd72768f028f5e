#include "tests/support/test_http_client.h"

#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

#include <fmt/format.h>

namespace kiln::rpc::testing {

std::string TestResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

TestClient TestClient::connect(std::uint16_t port, const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return TestClient(UniqueFd());
  }
  UniqueFd fd(::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  bool connected = fd.valid() && ::connect(fd.get(), found->ai_addr, found->ai_addrlen) == 0;
  ::freeaddrinfo(found);
  if (!connected) return TestClient(UniqueFd());
  timeval send_timeout{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  return TestClient(std::move(fd));
}

void TestClient::SslFree::operator()(ssl_st* ssl) const { SSL_free(ssl); }

TestClient TestClient::connectUnix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (!fd.valid() || path.size() >= sizeof address.sun_path) return TestClient(UniqueFd());
  std::copy(path.begin(), path.end(), address.sun_path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    return TestClient(UniqueFd());
  }
  timeval send_timeout{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  return TestClient(std::move(fd));
}

std::string TestClient::tlsError() {
  unsigned long code = ERR_peek_last_error();
  char text[256] = "no OpenSSL error";
  if (code != 0) ERR_error_string_n(code, text, sizeof text);
  ERR_clear_error();
  return text;
}

TestClient TestClient::connectTls(std::uint16_t port, const TlsClientOptions& options,
                                  const std::string& host) {
  // OpenSSL writes with write(2): a server that hung up must fail the write, not kill the test.
  static const bool sigpipe_ignored = ::signal(SIGPIPE, SIG_IGN) != SIG_ERR;
  (void)sigpipe_ignored;
  TestClient client = connect(port, host);
  if (!client.valid()) return client;
  // A receive timeout too: SSL_read blocks until a whole record is in.
  timeval receive_timeout{5, 0};
  ::setsockopt(client.fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        &SSL_CTX_free);
  if (!ctx || SSL_CTX_load_verify_locations(ctx.get(), options.ca_file.c_str(), nullptr) != 1) {
    return TestClient(UniqueFd());
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (!options.cert_file.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx.get(), options.cert_file.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx.get(), options.key_file.c_str(), SSL_FILETYPE_PEM) != 1)) {
    return TestClient(UniqueFd());
  }
  client.tls_.reset(SSL_new(ctx.get()));  // holds its own reference to ctx
  SSL* ssl = client.tls_.get();
  if (ssl == nullptr) return TestClient(UniqueFd());
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (options.server_name.find_first_not_of("0123456789.:") == std::string::npos) {
    X509_VERIFY_PARAM_set1_ip_asc(param, options.server_name.c_str());
  } else {
    X509_VERIFY_PARAM_set1_host(param, options.server_name.c_str(), 0);
    SSL_set_tlsext_host_name(ssl, options.server_name.c_str());
  }
  SSL_set_fd(ssl, client.fd_.get());
  if (SSL_connect(ssl) != 1) return TestClient(UniqueFd());
  return client;
}

bool TestClient::send(std::string_view data) {
  if (tls_) {
    while (!data.empty()) {
      int n = SSL_write(tls_.get(), data.data(), static_cast<int>(data.size()));
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  while (!data.empty()) {
    ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool TestClient::receiveMore(std::chrono::steady_clock::time_point deadline) {
  if (closed_ || !fd_.valid()) return false;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  if (!tls_ || SSL_pending(tls_.get()) == 0) {
    pollfd pfd{fd_.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready <= 0) return false;
  }
  char chunk[8192];
  ssize_t n =
      tls_ ? SSL_read(tls_.get(), chunk, sizeof chunk) : ::recv(fd_.get(), chunk, sizeof chunk, 0);
  if (n <= 0) {
    closed_ = true;
    return false;
  }
  buffer_.append(chunk, static_cast<std::size_t>(n));
  return true;
}

std::optional<TestResponse> TestClient::readResponse(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t head_end;
  while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (!receiveMore(deadline)) return std::nullopt;
  }
  std::string head = buffer_.substr(0, head_end);
  buffer_.erase(0, head_end + 4);

  TestResponse response;
  std::size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12 || status_line.compare(0, 5, "HTTP/") != 0) return std::nullopt;
  response.status = std::stoi(status_line.substr(9, 3));
  while (line_end != std::string::npos) {
    std::size_t start = line_end + 2;
    line_end = head.find("\r\n", start);
    std::string line =
        head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
    std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::size_t value_start = line.find_first_not_of(' ', colon + 1);
    response.headers[name] = value_start == std::string::npos ? "" : line.substr(value_start);
  }
  // 1xx answers (100 Continue) have no body.
  if (response.status >= 200 && response.status != 204) {
    std::size_t length = std::stoul(
        response.header("content-length").empty() ? "0" : response.header("content-length"));
    while (buffer_.size() < length) {
      if (!receiveMore(deadline)) return std::nullopt;
    }
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
  }
  return response;
}

bool TestClient::waitForClose(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!closed_) {
    if (!receiveMore(deadline) && !closed_) return false;
    buffer_.clear();
  }
  return true;
}

std::string makeRequest(std::string_view method, std::string_view target, std::string_view body,
                        std::string_view extra_headers) {
  std::string request =
      fmt::format("{} {} HTTP/1.1\r\nHost: test\r\n{}", method, target, extra_headers);
  if (!body.empty()) request += fmt::format("Content-Length: {}\r\n", body.size());
  request += "\r\n";
  request += body;
  return request;
}

std::optional<TestResponse> roundTrip(std::uint16_t port, const std::string& request) {
  TestClient client = TestClient::connect(port);
  if (!client.valid() || !client.send(request)) return std::nullopt;
  return client.readResponse();
}

}  // namespace kiln::rpc::testing
