// CurlClient against a loopback server: real sockets, real libcurl, scripted answers.

#include "imagecache/curl_client.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <string>

#include "tests/support/loopback_http_server.h"
#include "tests/support/temp_dir.h"

namespace {

using kiln::Error;
using kiln::ErrorCode;
using kiln::Result;
using kiln::imagecache::CurlClient;
using kiln::imagecache::HttpRequestSpec;
using kiln::imagecache::HttpResult;
using kiln::testing::LoopbackHttpServer;
using Server = kiln::testing::LoopbackHttpServer;

std::string response(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n" +
         extra + "\r\n" + body;
}

HttpRequestSpec specFor(const std::string& url) {
  HttpRequestSpec spec;
  spec.url = url;
  spec.connect_timeout = std::chrono::seconds(2);
  spec.low_speed_time = std::chrono::seconds(5);
  return spec;
}

kiln::imagecache::ByteSink appendTo(std::string& out) {
  return [&out](const char* data, std::size_t len) -> Result<void> {
    out.append(data, len);
    return kiln::success();
  };
}

}  // namespace

TEST_CASE("CurlClient::get returns status, lower-cased headers and body", "[glance][curl]") {
  Server server([](const std::string&, int fd) {
    Server::send(fd,
                 response(200, R"({"id": "x"})",
                          "Content-Type: application/json\r\nX-Openstack-Request-Id: req-1\r\n"));
  });
  CurlClient client;
  HttpRequestSpec spec = specFor(server.url("/v2/images/x"));
  spec.headers = {{"X-Auth-Token", "tok-123"}, {"Accept", "application/json"}};
  auto r = client.get(spec);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == R"({"id": "x"})");
  CHECK(r->header("content-type") == "application/json");
  CHECK(r->header("x-openstack-request-id") == "req-1");
  CHECK_FALSE(r->header("X-Openstack-Request-Id"));
  auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  CHECK_THAT(requests[0], Catch::StartsWith("GET /v2/images/x HTTP/1.1\r\n"));
  CHECK_THAT(requests[0], Catch::Contains("\r\nX-Auth-Token: tok-123\r\n"));
  CHECK_THAT(requests[0], Catch::Contains("\r\nUser-Agent: kiln/"));
}

TEST_CASE("CurlClient::get bounds the body", "[glance][curl]") {
  Server server([](const std::string&, int fd) {
    Server::send(fd, response(200, std::string(100000, 'x')));
  });
  CurlClient client;
  HttpRequestSpec spec = specFor(server.url("/big"));
  spec.max_body_bytes = 1000;
  auto r = client.get(spec);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kTooLarge);
  CHECK_THAT(r.error().message, Catch::Contains("larger than the 1000 bytes allowed"));
}

TEST_CASE("CurlClient::stream hands a 2xx body to the sink after the hook saw the head",
          "[glance][curl]") {
  std::string body(3 << 20, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7);
  Server server([&](const std::string&, int fd) {
    Server::send(fd, response(206, body, "Content-Range: bytes 5-3145732/3145733\r\n"));
  });
  CurlClient client;
  std::string got;
  std::size_t bytes_at_hook = 99;
  long status_at_hook = 0;
  auto r = client.stream(specFor(server.url("/file")), appendTo(got),
                         [&](const HttpResult& head) -> Result<void> {
                           bytes_at_hook = got.size();
                           status_at_hook = head.status;
                           CHECK(head.header("content-range") == "bytes 5-3145732/3145733");
                           return kiln::success();
                         });
  REQUIRE(r.ok());
  CHECK(r->status == 206);
  CHECK(r->body.empty());
  CHECK(got == body);
  CHECK(bytes_at_hook == 0);
  CHECK(status_at_hook == 206);
}

TEST_CASE("CurlClient::stream keeps an error page out of the sink, bounded", "[glance][curl]") {
  Server server([](const std::string&, int fd) {
    Server::send(fd, response(503, "<html>" + std::string(1 << 20, 'e') + "</html>"));
  });
  CurlClient client;
  HttpRequestSpec spec = specFor(server.url("/file"));
  spec.max_body_bytes = 1000;
  std::string got;
  auto r = client.stream(spec, appendTo(got), {});
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  CHECK(r->body.size() == 1000);
  CHECK_THAT(r->body, Catch::StartsWith("<html>eee"));
  CHECK(got.empty());
}

TEST_CASE("CurlClient::stream aborts when the sink or the hook fails and returns that error",
          "[glance][curl]") {
  Server server([](const std::string&, int fd) {
    std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n";
    Server::send(fd, head);
    std::string chunk(1 << 16, 'z');
    // Up to 1 GiB unless the client hangs up, which it must do at once.
    for (int i = 0; i < (1 << 14); ++i) {
      if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) return;
    }
  });
  CurlClient client;
  auto started = std::chrono::steady_clock::now();
  std::size_t seen = 0;
  auto r = client.stream(specFor(server.url("/file")),
                         [&](const char*, std::size_t len) -> Result<void> {
                           seen += len;
                           if (seen > (1 << 20))
                             return Error::exhausted("No space left on device writing 'b.part'");
                           return kiln::success();
                         },
                         {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kResourceExhausted);
  CHECK(r.error().message == "No space left on device writing 'b.part'");
  CHECK(seen < (8 << 20));
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(30));

  std::string got;
  auto hooked = client.stream(specFor(server.url("/file")), appendTo(got),
                              [](const HttpResult&) -> Result<void> {
                                return Error::unavailable("Content-Range does not fit");
                              });
  REQUIRE_FALSE(hooked.ok());
  CHECK(hooked.error().message == "Content-Range does not fit");
  CHECK(got.empty());
}

TEST_CASE("CurlClient aborts a stalled transfer and a truncated one", "[glance][curl]") {
  Server server([](const std::string& request, int fd) {
    if (request.find("GET /stall") == 0) {
      Server::send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
      Server::waitForClose(fd, std::chrono::seconds(20));
    } else {
      Server::send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
    }
  });
  CurlClient client;
  HttpRequestSpec spec = specFor(server.url("/stall"));
  spec.low_speed_time = std::chrono::seconds(1);
  auto started = std::chrono::steady_clock::now();
  std::string got;
  auto r = client.stream(spec, appendTo(got), {});
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnavailable);
  CHECK_THAT(r.error().message, Catch::Contains("timed out or stalled"));
  CHECK(got == "0123456789");
  // libcurl averages the speed over ~5 s: the 10 bytes before the stall keep it above 1 B/s
  // for a while (measured: 7 s for a 1 s low_speed_time). The bound only proves the transfer is
  // abandoned rather than waited on forever; it is loose so a loaded machine cannot fail it.
  CHECK(took < std::chrono::seconds(45));

  std::string truncated;
  auto cut = client.stream(specFor(server.url("/cut")), appendTo(truncated), {});
  REQUIRE_FALSE(cut.ok());
  CHECK(cut.error().code == ErrorCode::kUnavailable);
  CHECK(truncated == "0123456789");
}

TEST_CASE("CurlClient follows no redirect and speaks only http and https", "[glance][curl]") {
  Server server([&](const std::string&, int fd) {
    Server::send(fd, response(302, "", "Location: file:///etc/passwd\r\n"));
  });
  CurlClient client;
  auto r = client.get(specFor(server.url("/redirect")));
  REQUIRE(r.ok());
  CHECK(r->status == 302);
  CHECK(r->body.empty());
  CHECK(server.requests().size() == 1);

  for (const char* url :
       {"file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/", "dict://127.0.0.1/"}) {
    INFO(url);
    auto refused = client.get(specFor(url));
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("CurlClient reports an unreachable server as kUnavailable", "[glance][curl]") {
  std::string url;
  {
    Server gone([](const std::string&, int) {});
    url = gone.url("/v2/images/x");
  }  // the port is closed again
  CurlClient client;
  auto r = client.get(specFor(url));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kUnavailable);
  CHECK_THAT(r.error().message, Catch::Contains(url));
}

TEST_CASE("CurlClient refuses header injection without quoting the value", "[glance][curl]") {
  CurlClient client;
  HttpRequestSpec spec = specFor("http://127.0.0.1:9/");
  spec.headers = {{"X-Auth-Token", "secret\r\nX-Evil: 1"}};
  auto r = client.get(spec);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK_THAT(r.error().message, !Catch::Contains("secret"));
}

TEST_CASE("redactUrl drops credentials only", "[glance][curl]") {
  using kiln::imagecache::redactUrl;
  CHECK(redactUrl("http://user:pw@glance:9292/v2/images") == "http://glance:9292/v2/images");
  CHECK(redactUrl("https://glance/v2/images/x?a=b@c") == "https://glance/v2/images/x?a=b@c");
  CHECK(redactUrl("http://glance:9292") == "http://glance:9292");
  CHECK(redactUrl("not a url") == "not a url");
}

namespace {

// The request body that follows `head` on `fd` (Content-Length bytes), answering an
// Expect: 100-continue first the way Glance's eventlet server does.
std::string readBody(const std::string& head, int fd) {
  auto end = head.find("\r\n\r\n");
  std::string body = end == std::string::npos ? "" : head.substr(end + 4);
  auto at = head.find("Content-Length: ");
  if (at == std::string::npos) return body;
  std::size_t length = std::stoul(head.substr(at + 16));
  if (head.find("Expect: 100-continue") != std::string::npos) {
    Server::send(fd, "HTTP/1.1 100 Continue\r\n\r\n");
  }
  char buf[65536];
  while (body.size() < length) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    body.append(buf, static_cast<std::size_t>(n));
  }
  return body;
}

}  // namespace

TEST_CASE("CurlClient::send POSTs a body with the caller's content type and no Expect",
          "[glance][curl]") {
  std::string received;
  Server server([&](const std::string& head, int fd) {
    received = readBody(head, fd);
    Server::send(fd, response(201, R"({"id": "x", "status": "queued"})"));
  });
  CurlClient client;
  HttpRequestSpec spec = specFor(server.url("/v2/images"));
  spec.headers = {{"Content-Type", "application/json"}, {"X-Auth-Token", "tok"}};
  std::string body = R"({"name": "snap", "x": ")" + std::string(3000, 'y') + "\"}";
  auto r = client.send(spec, "POST", body);
  REQUIRE(r.ok());
  CHECK(r->status == 201);
  CHECK(r->body == R"({"id": "x", "status": "queued"})");
  CHECK(received == body);
  auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  CHECK_THAT(requests[0], Catch::StartsWith("POST /v2/images HTTP/1.1\r\n"));
  CHECK_THAT(requests[0], Catch::Contains("\r\nContent-Type: application/json\r\n"));
  CHECK_THAT(requests[0], Catch::Contains("\r\nContent-Length: " + std::to_string(body.size())));
  CHECK_THAT(requests[0], !Catch::Contains("Expect:"));
  CHECK_THAT(requests[0], !Catch::Contains("x-www-form-urlencoded"));
}

TEST_CASE("CurlClient::send DELETEs without a body and refuses odd methods", "[glance][curl]") {
  Server server([&](const std::string&, int fd) { Server::send(fd, response(204, "")); });
  CurlClient client;
  auto r = client.send(specFor(server.url("/v2/images/x")), "DELETE", "");
  REQUIRE(r.ok());
  CHECK(r->status == 204);
  auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  CHECK_THAT(requests[0], Catch::StartsWith("DELETE /v2/images/x HTTP/1.1\r\n"));
  CHECK_THAT(requests[0], !Catch::Contains("Content-Length"));
  CHECK_THAT(requests[0], !Catch::Contains("Content-Type"));

  for (const char* method : {"", "delete", "GET /x HTTP/1.0\r\n", "PO ST"}) {
    INFO(method);
    CHECK(client.send(specFor(server.url("/x")), method, "").error().code ==
          ErrorCode::kInvalidArgument);
  }
  CHECK(server.requests().size() == 1);
}

TEST_CASE("CurlClient::upload streams the file as the PUT body, each byte seen once",
          "[glance][curl]") {
  kiln::testing::TempDir dir;
  std::string bytes((5 << 20) + 321, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 31) ^ (i >> 9));
  std::string path = dir.path() + "/snap.qcow2";
  std::ofstream(path, std::ios::binary) << bytes;

  std::string received;
  Server server([&](const std::string& head, int fd) {
    received = readBody(head, fd);
    Server::send(fd, response(204, ""));
  });
  CurlClient client;
  HttpRequestSpec spec = specFor(server.url("/v2/images/x/file"));
  spec.headers = {{"Content-Type", "application/octet-stream"}};
  std::string seen;
  std::size_t largest_piece = 0;
  auto r = client.upload(spec, "PUT", path, [&](const char* data, std::size_t len) {
    seen.append(data, len);
    largest_piece = std::max(largest_piece, len);
    return kiln::success();
  });
  REQUIRE(r.ok());
  CHECK(r->status == 204);
  CHECK(received == bytes);
  CHECK(seen == bytes);
  CHECK(largest_piece <= (1u << 20));  // streamed in pieces, never the whole file
  auto requests = server.requests();
  REQUIRE(requests.size() == 1);
  CHECK_THAT(requests[0], Catch::StartsWith("PUT /v2/images/x/file HTTP/1.1\r\n"));
  CHECK_THAT(requests[0], Catch::Contains("\r\nContent-Type: application/octet-stream\r\n"));
  CHECK_THAT(requests[0], Catch::Contains("\r\nContent-Length: " + std::to_string(bytes.size())));
  // The server may refuse before the bytes go out.
  CHECK_THAT(requests[0], Catch::Contains("\r\nExpect: 100-continue\r\n"));
}

TEST_CASE("CurlClient::upload: an early refusal sends no bytes, file problems are not retryable",
          "[glance][curl]") {
  kiln::testing::TempDir dir;
  std::string path = dir.path() + "/snap.qcow2";
  std::ofstream(path, std::ios::binary) << std::string(3 << 20, 'q');
  Server server([&](const std::string& head, int fd) {
    if (head.find("PUT /refuse") == 0) {
      Server::send(fd, response(409, "<html>Image status is saving</html>"));
      return;
    }
    (void)readBody(head, fd);
    Server::send(fd, response(204, ""));
  });
  CurlClient client;

  std::size_t seen = 0;
  auto counting = [&](const char*, std::size_t len) {
    seen += len;
    return kiln::success();
  };
  auto refused = client.upload(specFor(server.url("/refuse")), "PUT", path, counting);
  REQUIRE(refused.ok());
  CHECK(refused->status == 409);
  CHECK(refused->body == "<html>Image status is saving</html>");
  CHECK(seen == 0);

  auto missing = client.upload(specFor(server.url("/x")), "PUT", dir.path() + "/gone", counting);
  CHECK(missing.error().code == ErrorCode::kNotFound);
  auto directory = client.upload(specFor(server.url("/x")), "PUT", dir.path(), counting);
  CHECK(directory.error().code == ErrorCode::kInvalidArgument);

  // The observer's error aborts the transfer and is returned as it is.
  auto aborted = client.upload(specFor(server.url("/x")), "PUT", path,
                               [](const char*, std::size_t) -> Result<void> {
                                 return Error::exhausted("Hash context out of memory");
                               });
  CHECK(aborted.error().message == "Hash context out of memory");

  // A file that shrinks while it is being sent cannot fill its Content-Length.
  auto shrunk =
      client.upload(specFor(server.url("/x")), "PUT", path, [&](const char*, std::size_t) {
        REQUIRE(::truncate(path.c_str(), 0) == 0);
        return kiln::success();
      });
  REQUIRE_FALSE(shrunk.ok());
  CHECK(shrunk.error().code == ErrorCode::kInternal);
  CHECK_THAT(shrunk.error().message, Catch::Contains("ended after"));
}
