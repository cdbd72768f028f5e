// transport_url as nova.conf writes it: one broker or a cluster, percent-encoded credentials, the
// virtual host, TLS; and what must never be logged.

#include <catch2/catch.hpp>

#include "openstack/messaging/transport_url.h"

namespace {

using kiln::openstack::messaging::describeBroker;
using kiln::openstack::messaging::parseTransportUrl;
using kiln::openstack::messaging::redactTransportUrl;

TEST_CASE("transport_url: one broker with credentials and the default virtual host") {
  auto url = parseTransportUrl("rabbit://openstack:s3cret@10.0.0.5:5672/");
  REQUIRE(url.ok());
  REQUIRE(url->brokers.size() == 1);
  CHECK(url->brokers[0].host == "10.0.0.5");
  CHECK(url->brokers[0].port == 5672);
  CHECK(url->brokers[0].username == "openstack");
  CHECK(url->brokers[0].password == "s3cret");
  CHECK(url->virtual_host == "/");
  CHECK_FALSE(url->ssl);
}

TEST_CASE("transport_url: a cluster, a named virtual host, percent-encoding and IPv6") {
  auto url = parseTransportUrl(
      "rabbit://nova:p%40ss%3Aw@rmq1:5673,nova:other@[fd00::2]:5674/nova%2Fprod?ssl=1");
  REQUIRE(url.ok());
  REQUIRE(url->brokers.size() == 2);
  CHECK(url->brokers[0].host == "rmq1");
  CHECK(url->brokers[0].port == 5673);
  CHECK(url->brokers[0].password == "p@ss:w");
  CHECK(url->brokers[1].host == "fd00::2");
  CHECK(url->brokers[1].port == 5674);
  CHECK(describeBroker(url->brokers[1]) == "[fd00::2]:5674");
  CHECK(url->virtual_host == "nova/prod");
  CHECK(url->ssl);
}

TEST_CASE("transport_url: the port defaults to 5672, or 5671 with TLS") {
  CHECK(parseTransportUrl("rabbit://u:p@host/")->brokers[0].port == 5672);
  CHECK(parseTransportUrl("rabbit://u:p@host/?ssl=1")->brokers[0].port == 5671);
}

TEST_CASE("transport_url: what is refused, with a reason") {
  const char* bad[] = {
      "amqp://u:p@host/",      // another driver
      "rabbit:///",            // no host
      "rabbit://u:p@host:0/",  // port 0
      "rabbit://u:p@host:99999/",
      "rabbit://u:p@host:56x/",
      "rabbit://u:p@[::1/",
      "rabbit://u:p%zz@host/",
      "rabbit://u:p@ho st/",
  };
  for (const char* text : bad) {
    INFO(text);
    auto url = parseTransportUrl(text);
    REQUIRE_FALSE(url.ok());
    CHECK_FALSE(url.error().message.empty());
    // The refusal never quotes a password.
    CHECK(url.error().message.find("p%zz") == std::string::npos);
  }
}

TEST_CASE("transport_url: redaction hides every password and keeps the rest") {
  CHECK(redactTransportUrl("rabbit://nova:s3cret@rmq1:5672,nova:other@rmq2:5672/vh?ssl=1") ==
        "rabbit://nova:***@rmq1:5672,nova:***@rmq2:5672/vh?ssl=1");
  CHECK(redactTransportUrl("rabbit://rmq1:5672/") == "rabbit://rmq1:5672/");
  CHECK(redactTransportUrl("rabbit://guest@rmq1/") == "rabbit://guest@rmq1/");
  CHECK(redactTransportUrl("not a url") == "(not a URL)");
}

}  // namespace
