#include "tests/integration/orphans.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <optional>
#include <sstream>

#include "common/command_runner.h"

namespace kiln::testing {
namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::size_t kUuidLength = 36;

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) {
    out.push_back(e.path().filename().string());
  }
  return out;
}

// A command's stdout, or nothing when it cannot run or fails.
std::optional<std::string> runText(const std::vector<std::string>& argv) {
  PosixCommandRunner runner;
  CommandSpec spec;
  spec.argv = argv;
  spec.timeout = std::chrono::seconds(30);
  auto out = runner.run(spec);
  if (!out || !out->succeeded()) return std::nullopt;
  return out->stdout_text;
}

}  // namespace

std::vector<std::string> findOrphans(KilndHarness& kilnd, const OrphanScope& scope) {
  auto listed = kilnd.api("GET", "/v1/instances");
  REQUIRE(listed.status == 200);
  const std::string instances_dir = kilnd.statePath() + "/instances";
  // An instance whose launch failed was rolled back: it owns nothing, so anything left of it is
  // debris too.
  std::set<std::string> owners;
  std::set<std::string> chap_usages;
  std::set<std::string> session_links;
  std::set<std::string> taps;  // the devnames of the listed instances' interfaces
  for (const auto& inst : listed.json["instances"]) {
    const std::string uuid = inst["uuid"];
    for (const auto& i : inst.value("interfaces", json::array())) taps.insert(i["devname"]);
    bool rolled_back = inst["state"] == "error" && inst["disks"].empty() && inst["volumes"].empty();
    if (!rolled_back) owners.insert(uuid);
    for (const auto& v : inst["volumes"]) {
      if (v["connector"] == "native" && v["auth_method"] == "CHAP") {
        chap_usages.insert("kiln-" + uuid + "-" + v["volume_id"].get<std::string>());
      }
      if (v["connector"] == "kernel") session_links.insert(v["device_path"].get<std::string>());
    }
  }

  std::vector<std::string> debris;
  // Libvirt domains: kiln's by name, this kilnd's by the files they use.
  if (auto names = virsh({"list", "--all", "--name"})) {
    for (const auto& name : lines(*names)) {
      if (!name.starts_with("kiln-")) continue;
      std::string uuid = name.substr(5);
      auto xml = virsh({"dumpxml", name});
      bool ours =
          scope.uuids.count(uuid) || (xml && xml->find(kilnd.statePath()) != std::string::npos);
      if (ours && !owners.count(uuid)) debris.push_back("domain " + name + ": no instance owns it");
    }
  } else {
    debris.push_back("virsh list failed: libvirtd unreachable, nothing could be checked");
  }
  // Disk files, console logs and NVRAM under state_path/instances.
  for (const auto& name : entries(instances_dir)) {
    if (!owners.count(name)) {
      debris.push_back("directory " + instances_dir + "/" + name + ": no instance owns it");
    }
  }
  // NVRAM files libvirt keeps itself (when a domain names no path of its own).
  for (const auto& name : entries("/var/lib/libvirt/qemu/nvram")) {
    if (!name.starts_with("kiln-") || name.size() < 5 + kUuidLength) continue;
    std::string uuid = name.substr(5, kUuidLength);
    if (scope.uuids.count(uuid) && !owners.count(uuid)) {
      debris.push_back("NVRAM file /var/lib/libvirt/qemu/nvram/" + name + ": no instance owns it");
    }
  }
  // Libvirt secrets: "UUID  iscsi kiln-<uuid>-<volume>" or "UUID  volume <path>".
  if (auto secrets = virsh({"secret-list"})) {
    for (const auto& line : lines(*secrets)) {
      std::istringstream words(line);
      std::string secret_uuid, type, usage;
      if (!(words >> secret_uuid >> type >> usage)) continue;
      if (type == "iscsi" && usage.starts_with("kiln-") && usage.size() > 5 + kUuidLength) {
        if (scope.uuids.count(usage.substr(5, kUuidLength)) && !chap_usages.count(usage)) {
          debris.push_back("secret " + type + " " + usage + ": no volume attachment owns it");
        }
      } else if (type == "volume" && usage.starts_with(instances_dir + "/")) {
        std::string rest = usage.substr(instances_dir.size() + 1);
        if (!owners.count(rest.substr(0, rest.find('/')))) {
          debris.push_back("secret " + type + " " + usage + ": no instance owns it");
        }
      }
    }
  } else {
    debris.push_back("virsh secret-list failed");
  }
  // iSCSI sessions of the stand-in iscsiadm: one /dev/disk/by-path link per logged-in target.
  if (!scope.stand_in_devdir.empty()) {
    for (const auto& name : entries(scope.stand_in_devdir)) {
      std::string link = scope.stand_in_devdir + "/" + name;
      if (!session_links.count(link)) {
        debris.push_back("iSCSI session " + link + ": no volume attachment owns it");
      }
    }
  }
  // Taps kiln made (their alias is kiln's mark, "kiln:<uuid>:<port>") for this test's instances.
  if (auto links = runText({"ip", "-j", "link", "show"})) {
    for (const auto& link : json::parse(*links, nullptr, false)) {
      const std::string alias = link.value("ifalias", "");
      if (!alias.starts_with("kiln:") || alias.size() < 5 + kUuidLength) continue;
      const std::string name = link.value("ifname", "");
      if (scope.uuids.count(alias.substr(5, kUuidLength)) && !taps.count(name)) {
        debris.push_back("tap " + name + " (" + alias + "): no instance's interface names it");
      }
    }
  } else {
    debris.push_back("ip link show failed");
  }
  // Anti-spoofing chains in kiln's nftables table, for the test's tap names (knt...).
  if (auto ruleset = runText({"nft", "-j", "list", "table", "netdev", "kiln"})) {
    for (const auto& item :
         json::parse(*ruleset, nullptr, false).value("nftables", json::array())) {
      if (!item.contains("chain")) continue;
      const std::string chain = item["chain"].value("name", "");
      if (!chain.starts_with("vif-knt")) continue;
      if (!taps.count(chain.substr(4))) {
        debris.push_back("nftables chain netdev kiln " + chain +
                         ": no instance's interface names it");
      }
    }
  }
  // Half-made snapshots: the capture's temporary files and markers, and images the local
  // uploader created but never filled.
  for (const auto& name : entries(kilnd.statePath() + "/snapshots")) {
    debris.push_back("snapshot file " + kilnd.statePath() + "/snapshots/" + name + " left behind");
  }
  for (const auto& name : entries(kilnd.imagesDir())) {
    if (name.starts_with(".")) {
      debris.push_back("half-made image " + kilnd.imagesDir() + "/" + name + " left behind");
    }
  }
  return debris;
}

}  // namespace kiln::testing
