#pragma once
// oslo.messaging's transport_url for the rabbit driver, as nova.conf's [DEFAULT] transport_url
// writes it:
//
//   rabbit://USER:PASS@HOST:PORT[,USER:PASS@HOST2:PORT2...]/VHOST[?QUERY]
//
// Several hosts are brokers of one cluster, tried in turn. User, password and virtual host are
// percent-decoded; an empty virtual host is RabbitMQ's default "/". The password is a secret: only
// redactTransportUrl() may be logged.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kiln::openstack::messaging {

struct BrokerAddress {
  std::string host;  // a name, an IPv4 address, or an IPv6 address without brackets
  std::uint16_t port = 5672;
  std::string username;
  std::string password;
};

struct TransportUrl {
  std::vector<BrokerAddress> brokers;  // at least one
  std::string virtual_host = "/";
  bool ssl = false;  // ?ssl=1 (kombu's spelling); [oslo_messaging_rabbit] ssl also turns it on
};

Result<TransportUrl> parseTransportUrl(std::string_view url);

// `url` with every password replaced by "***", for logs and messages.
std::string redactTransportUrl(std::string_view url);

// "host:port" ("[v6]:port"), for logs.
std::string describeBroker(const BrokerAddress& broker);

}  // namespace kiln::openstack::messaging
