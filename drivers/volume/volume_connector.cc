#include "drivers/volume/volume_connector.h"

#include <fmt/format.h>

#include <filesystem>
#include <thread>

#include "common/fs.h"
#include "common/log.h"

namespace kiln::drivers::volume {

using nlohmann::json;

namespace {

std::string portalOf(const IscsiPath& p) {
  bool v6 = p.host.find(':') != std::string::npos;
  return v6 ? fmt::format("[{}]:{}", p.host, p.port) : fmt::format("{}:{}", p.host, p.port);
}

bool sameTarget(const Attachment& a, const Attachment& b) {
  if (a.paths.empty() || b.paths.empty()) return false;
  return a.paths[0].iqn == b.paths[0].iqn && a.paths[0].host == b.paths[0].host &&
         a.paths[0].port == b.paths[0].port;
}

// What every connector records about a volume; each adds its own fields.
Attachment baseAttachment(const char* connector, const std::string& volume_id,
                          const std::string& device, bool boot, const IscsiTarget& target) {
  Attachment a;
  a.volume_id = volume_id;
  a.device = device;
  a.connector = connector;
  a.boot = boot;
  a.read_only = target.read_only;
  a.paths = target.paths;
  a.auth_method = target.auth_method;
  a.auth_username = target.auth_username;
  return a;
}

}  // namespace

json attachmentToJson(const Attachment& a) {
  json paths = json::array();
  for (const auto& p : a.paths) {
    paths.push_back({{"host", p.host}, {"port", p.port}, {"iqn", p.iqn}, {"lun", p.lun}});
  }
  return {{"volume_id", a.volume_id},       {"device", a.device},
          {"connector", a.connector},       {"boot", a.boot},
          {"read_only", a.read_only},       {"paths", paths},
          {"auth_method", a.auth_method},   {"auth_username", a.auth_username},
          {"secret_usage", a.secret_usage}, {"device_path", a.device_path}};
}

Result<Attachment> attachmentFromJson(const json& j) {
  try {
    Attachment a;
    a.volume_id = j.at("volume_id").get<std::string>();
    a.device = j.at("device").get<std::string>();
    a.connector = j.at("connector").get<std::string>();
    a.boot = j.at("boot").get<bool>();
    a.read_only = j.at("read_only").get<bool>();
    for (const auto& p : j.at("paths")) {
      a.paths.push_back({p.at("host").get<std::string>(), p.at("port").get<std::uint16_t>(),
                         p.at("iqn").get<std::string>(), p.at("lun").get<unsigned>()});
    }
    a.auth_method = j.at("auth_method").get<std::string>();
    a.auth_username = j.at("auth_username").get<std::string>();
    a.secret_usage = j.at("secret_usage").get<std::string>();
    a.device_path = j.at("device_path").get<std::string>();
    return a;
  } catch (const json::exception& e) {
    return Error::internal(fmt::format("A stored volume attachment is unreadable: {}", e.what()));
  }
}

DiskSpec diskFor(const Attachment& a) {
  DiskSpec disk;
  disk.device = a.device;
  disk.format = "raw";
  disk.read_only = a.read_only;
  disk.serial = a.volume_id.substr(0, 20);  // virtio-blk serials hold 20 bytes
  disk.boot = a.boot;
  if (a.connector == "kernel") {
    disk.source = DiskSpec::Source::kBlock;
    disk.path = a.device_path;
  } else {
    disk.source = DiskSpec::Source::kIscsi;
    if (!a.paths.empty()) {
      disk.iscsi_name = fmt::format("{}/{}", a.paths[0].iqn, a.paths[0].lun);
      disk.iscsi_hosts.push_back({a.paths[0].host, a.paths[0].port});
    }
    disk.auth_username = a.auth_username;
    disk.secret_usage = a.secret_usage;
  }
  return disk;
}

// --- native -------------------------------------------------------------------------------

Attachment NativeIscsiConnector::plan(const std::string& instance_uuid,
                                      const std::string& volume_id, const std::string& device,
                                      bool boot, const IscsiTarget& target) {
  Attachment a = baseAttachment("native", volume_id, device, boot, target);
  if (target.auth_method == "CHAP") {
    // libvirt forbids "/" in a usage name.
    a.secret_usage = fmt::format("kiln-{}-{}", instance_uuid, volume_id);
  }
  return a;
}

Result<DiskSpec> NativeIscsiConnector::connect(const Attachment& attachment,
                                               const IscsiTarget& target) {
  if (!attachment.secret_usage.empty()) {
    if (auto r = driver_.defineSecret(attachment.secret_usage, target.auth_password); !r) {
      return r.error();
    }
  }
  // QEMU connects when the domain starts or the disk is hot-plugged; that is where a wrong
  // portal or password shows.
  return diskFor(attachment);
}

Result<void> NativeIscsiConnector::disconnect(const Attachment& attachment,
                                              const std::vector<Attachment>&) {
  if (attachment.secret_usage.empty()) return success();
  return driver_.undefineSecret(attachment.secret_usage);
}

Result<void> NativeIscsiConnector::restore(const Attachment& attachment,
                                           const std::string& password) {
  if (attachment.secret_usage.empty()) return success();
  auto exists = driver_.secretExists(attachment.secret_usage);
  if (!exists) return exists.error();
  if (*exists) return success();
  log::info("Re-creating the CHAP secret of volume '{}' (libvirtd lost it)", attachment.volume_id);
  return driver_.defineSecret(attachment.secret_usage, password);
}

// --- kernel -------------------------------------------------------------------------------

Result<CommandOutput> KernelIscsiConnector::iscsiadm(std::vector<std::string> args,
                                                     bool allow_fail) {
  CommandSpec spec;
  spec.argv.push_back(options_.iscsiadm);
  for (auto& a : args) spec.argv.push_back(std::move(a));
  spec.timeout = std::chrono::seconds(120);
  auto out = runner_.run(spec);
  if (!out) return out.error();
  if (!out->succeeded() && !allow_fail) {
    // describeFailure names the program and its first argument only: the argument list may hold
    // a CHAP password.
    std::string err = out->stderr_text.substr(0, 300);
    return Error::unavailable(
        fmt::format("iscsiadm {} failed (exit {}): {}", spec.argv[1], out->exit_code, err));
  }
  return out;
}

Attachment KernelIscsiConnector::plan(const std::string&, const std::string& volume_id,
                                      const std::string& device, bool boot,
                                      const IscsiTarget& target) {
  Attachment a = baseAttachment("kernel", volume_id, device, boot, target);
  const IscsiPath& p = target.paths.front();
  a.device_path =
      fmt::format("{}/ip-{}-iscsi-{}-lun-{}", options_.device_dir, portalOf(p), p.iqn, p.lun);
  return a;
}

Result<DiskSpec> KernelIscsiConnector::connect(const Attachment& attachment,
                                               const IscsiTarget& target) {
  const IscsiPath& p = target.paths.front();
  const std::string portal = portalOf(p);
  if (auto r = iscsiadm({"-m", "discovery", "-t", "sendtargets", "-p", portal}); !r) {
    return r.error();
  }
  if (auto r = iscsiadm({"-m", "node", "-T", p.iqn, "-p", portal, "--op", "new"}); !r) {
    return r.error();
  }
  auto update = [&](const char* name, const std::string& value) {
    return iscsiadm(
        {"-m", "node", "-T", p.iqn, "-p", portal, "--op", "update", "-n", name, "-v", value});
  };
  if (target.auth_method == "CHAP") {
    for (auto [name, value] :
         {std::pair<const char*, std::string>{"node.session.auth.authmethod", "CHAP"},
          {"node.session.auth.username", target.auth_username}}) {
      if (auto r = update(name, value); !r) return r.error();
    }
    if (auto r = writeRecordPassword(p, target.auth_password); !r) return r.error();
  }
  auto login = iscsiadm({"-m", "node", "-T", p.iqn, "-p", portal, "--login"}, true);
  if (!login) return login.error();
  // Exit 15: a session to this target exists already (another volume on it).
  if (!login->succeeded() && login->exit_code != 15) {
    return Error::unavailable(fmt::format("iSCSI login to '{}' at {} failed (exit {}): {}", p.iqn,
                                          portal, login->exit_code,
                                          login->stderr_text.substr(0, 300)));
  }
  auto deadline = std::chrono::steady_clock::now() + options_.device_wait;
  std::error_code ec;
  while (!std::filesystem::exists(attachment.device_path, ec)) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Error::unavailable(fmt::format("The device '{}' of volume '{}' did not appear",
                                            attachment.device_path, attachment.volume_id));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return diskFor(attachment);
}

// The CHAP password goes into iscsiadm's node record itself, never on its command line, where
// every local user reads it in /proc/<pid>/cmdline. The record is the root-only file iscsiadm
// keeps, "name = value" lines between "# BEGIN RECORD" and "# END RECORD": for a target found by
// discovery <node_dir>/<iqn>/<host>,<port>,<tpgt>/<iface>, else <node_dir>/<iqn>/<host>,<port>.
// iscsiadm reads a line written there, and keeps it when it rewrites the record (checked with
// open-iscsi 2.1.8: `iscsiadm -m node ... -S` shows it, an --op update preserves it).
Result<void> KernelIscsiConnector::writeRecordPassword(const IscsiPath& path,
                                                       const std::string& password) {
  namespace stdfs = std::filesystem;
  std::string host = path.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string portal = fmt::format("{},{}", host, path.port);
  const stdfs::path target_dir = stdfs::path(options_.node_dir) / path.iqn;
  std::vector<stdfs::path> records;
  std::error_code ec;
  for (const auto& entry : stdfs::directory_iterator(target_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != portal && !name.starts_with(portal + ",")) continue;
    if (entry.is_regular_file()) {
      records.push_back(entry.path());
    } else if (entry.is_directory()) {
      for (const auto& iface : stdfs::directory_iterator(entry.path(), ec)) {
        if (iface.is_regular_file()) records.push_back(iface.path());
      }
    }
  }
  if (records.empty()) {
    return Error::unavailable(fmt::format(
        "iscsiadm made no node record for '{}' at {} under '{}' ([libvirt] iscsi_node_dir)",
        path.iqn, portal, options_.node_dir));
  }
  constexpr std::string_view kKey = "node.session.auth.password =";
  for (const auto& record : records) {
    auto text = fs::readFile(record, 1 << 20);
    if (!text) return text.error();
    std::string out;
    bool written = false;
    std::size_t at = 0;
    while (at < text->size()) {
      std::size_t end = text->find('\n', at);
      if (end == std::string::npos) end = text->size();
      std::string_view line(text->data() + at, end - at);
      at = end + 1;
      if (line.starts_with(kKey)) continue;  // an older password
      if (!written && line.starts_with("# END RECORD")) {
        out += fmt::format("{} {}\n", kKey, password);
        written = true;
      }
      out += line;
      out += '\n';
    }
    if (!written) out += fmt::format("{} {}\n", kKey, password);
    if (auto w = fs::writeFileAtomically(record, out, 0600); !w) return w;
  }
  return success();
}

Result<void> KernelIscsiConnector::disconnect(const Attachment& attachment,
                                              const std::vector<Attachment>& others) {
  if (attachment.paths.empty()) return success();
  for (const auto& other : others) {
    if (other.connector == "kernel" && sameTarget(attachment, other)) {
      // Another attachment on this host uses the same session: logging out would cut it off.
      return success();
    }
  }
  const IscsiPath& p = attachment.paths.front();
  const std::string portal = portalOf(p);
  auto logout = iscsiadm({"-m", "node", "-T", p.iqn, "-p", portal, "--logout"}, true);
  if (!logout) return logout.error();
  // Exit 21: no session (never logged in, or already out): nothing to undo.
  if (!logout->succeeded() && logout->exit_code != 21) {
    return Error::unavailable(
        fmt::format("iSCSI logout from '{}' failed (exit {})", p.iqn, logout->exit_code));
  }
  auto removed = iscsiadm({"-m", "node", "-T", p.iqn, "-p", portal, "--op", "delete"}, true);
  if (!removed) return removed.error();
  return success();
}

}  // namespace kiln::drivers::volume
