#pragma once
// A network for one integration test, made by the test itself and torn down by its destructor
// (also when the test fails): a Linux bridge on the host and a network namespace joined to it by
// a veth pair, the namespace's end holding an address from a documentation range
// (198.51.100.0/24 or 203.0.113.0/24). No uplink, no default route: nothing the guest sends can
// leave the bridge. Optionally dnsmasq serves DHCP inside the namespace, and an nftables table
// there counts what arrives from a given source, so a test sees what the guest really sent.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/command_runner.h"

namespace kiln::testing {

class TestNetwork {
 public:
  // `tag` (a digit or two) keeps two networks of one test apart: bridge kntbr<tag>, namespace
  // knt-ns<tag>, veth kntv<tag>h/kntv<tag>n. `address` is the namespace's, with its prefix.
  TestNetwork(std::string tag, std::string address)
      : tag_(std::move(tag)),
        bridge_("kntbr" + tag_),
        ns_("knt-ns" + tag_),
        veth_host_("kntv" + tag_ + "h"),
        veth_ns_("kntv" + tag_ + "n"),
        address_(std::move(address)) {
    teardown();  // what a killed earlier run left
    must({"ip", "link", "add", bridge_, "type", "bridge"});
    must({"ip", "link", "set", bridge_, "up"});
    must({"ip", "netns", "add", ns_});
    must({"ip", "link", "add", veth_host_, "type", "veth", "peer", "name", veth_ns_});
    must({"ip", "link", "set", veth_ns_, "netns", ns_});
    must({"ip", "link", "set", veth_host_, "master", bridge_});
    must({"ip", "link", "set", veth_host_, "up"});
    inNs({"ip", "link", "set", "lo", "up"});
    inNs({"ip", "addr", "add", address_, "dev", veth_ns_});
    inNs({"ip", "link", "set", veth_ns_, "up"});
  }
  ~TestNetwork() { teardown(); }
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;

  const std::string& bridge() const { return bridge_; }
  std::string ip() const { return address_.substr(0, address_.find('/')); }

  // Runs `argv` inside the namespace; fails the test when it cannot run or exits non-zero.
  std::string inNs(std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", ns_});
    return must(argv);
  }
  bool pingFromNs(const std::string& target, int count = 3) {
    // busybox's ping: the test guest's own, so the host needs no iputils.
    auto out = run({"ip", "netns", "exec", ns_, "busybox", "ping", "-c", std::to_string(count),
                    "-W", "2", target});
    return out && out->succeeded();
  }

  // dnsmasq in the namespace, handing `ip` to `mac` only (as Neutron's DHCP agent hands a port its
  // fixed IP). It runs until the destructor.
  void startDhcp(const std::string& mac, const std::string& ip) {
    const std::string base = "/tmp/" + ns_;
    lease_file_ = base + ".leases";
    pid_file_ = base + ".pid";
    const std::string prefix = ip.substr(0, ip.rfind('.'));
    must({"ip", "netns", "exec", ns_, "dnsmasq", "--conf-file=/dev/null", "--port=0",
          "--interface=" + veth_ns_, "--bind-interfaces", "--except-interface=lo",
          "--dhcp-range=" + prefix + ".0,static,255.255.255.0,120", "--dhcp-host=" + mac + "," + ip,
          "--dhcp-leasefile=" + lease_file_, "--pid-file=" + pid_file_, "--dhcp-authoritative",
          "--no-resolv", "--no-hosts"});
  }

  // Counts, in the namespace, frames arriving from source MAC `mac` and packets (IPv4 or ARP)
  // from source address `ip`.
  void watchSources(const std::string& mac, const std::string& ip) {
    using nlohmann::json;
    json rules = json::array();
    auto add = [&](const char* name, json match) {
      rules.push_back(
          {{"counter", {{"family", "netdev"}, {"table", "knt_watch"}, {"name", name}}}});
      rules.push_back({{"rule",
                        {{"family", "netdev"},
                         {"table", "knt_watch"},
                         {"chain", "in"},
                         {"expr", json::array({match, {{"counter", name}}})}}}});
    };
    json doc = {{"nftables",
                 json::array({{{"add", {{"table", {{"family", "netdev"}, {"name", "knt_watch"}}}}}},
                              {{"add",
                                {{"chain",
                                  {{"family", "netdev"},
                                   {"table", "knt_watch"},
                                   {"name", "in"},
                                   {"type", "filter"},
                                   {"hook", "ingress"},
                                   {"dev", veth_ns_},
                                   {"prio", 0},
                                   {"policy", "accept"}}}}}}})}};
    add("from_mac", {{"match",
                      {{"op", "=="},
                       {"left", {{"payload", {{"protocol", "ether"}, {"field", "saddr"}}}}},
                       {"right", mac}}}});
    add("from_ip", {{"match",
                     {{"op", "=="},
                      {"left", {{"payload", {{"protocol", "ip"}, {"field", "saddr"}}}}},
                      {"right", ip}}}});
    add("from_arp_ip", {{"match",
                         {{"op", "=="},
                          {"left", {{"payload", {{"protocol", "arp"}, {"field", "saddr ip"}}}}},
                          {"right", ip}}}});
    for (auto& r : rules) doc["nftables"].push_back({{"add", r}});
    const std::string path = "/tmp/" + ns_ + ".nft.json";
    std::ofstream(path) << doc.dump();
    inNs({"nft", "-j", "-f", path});
  }
  // The packets a watchSources counter saw.
  std::uint64_t counted(const std::string& name) {
    auto out = inNs({"nft", "-j", "list", "counter", "netdev", "knt_watch", name});
    auto doc = nlohmann::json::parse(out);
    for (const auto& item : doc["nftables"]) {
      if (item.contains("counter")) return item["counter"]["packets"].get<std::uint64_t>();
    }
    FAIL("no counter " << name << " in " << out);
    return 0;
  }

 private:
  std::optional<CommandOutput> run(const std::vector<std::string>& argv) {
    CommandSpec spec;
    spec.argv = argv;
    spec.timeout = std::chrono::seconds(30);
    auto out = runner_.run(spec);
    if (!out) return std::nullopt;
    return *out;
  }
  std::string must(const std::vector<std::string>& argv) {
    CommandSpec spec;
    spec.argv = argv;
    spec.timeout = std::chrono::seconds(30);
    auto out = runner_.run(spec);
    REQUIRE(out);
    INFO(describeFailure(spec, *out));
    REQUIRE(out->succeeded());
    return out->stdout_text;
  }
  void teardown() {
    if (!pid_file_.empty()) {
      std::ifstream in(pid_file_);
      pid_t pid = 0;
      if (in >> pid && pid > 1) ::kill(pid, SIGTERM);
      ::unlink(pid_file_.c_str());
      ::unlink(lease_file_.c_str());
    }
    // Deleting the namespace removes its end of the veth pair, and with it the host's end.
    if (auto pids = run({"ip", "netns", "pids", ns_}); pids && pids->succeeded()) {
      std::istringstream list(pids->stdout_text);
      pid_t pid = 0;
      while (list >> pid) ::kill(pid, SIGKILL);
    }
    (void)run({"ip", "netns", "delete", ns_});
    (void)run({"ip", "link", "delete", veth_host_});
    (void)run({"ip", "link", "delete", bridge_});
  }

  PosixCommandRunner runner_;
  std::string tag_, bridge_, ns_, veth_host_, veth_ns_, address_;
  std::string lease_file_, pid_file_;
};

}  // namespace kiln::testing
