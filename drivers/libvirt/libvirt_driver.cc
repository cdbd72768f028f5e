#include "drivers/libvirt/libvirt_driver.h"

#include <fmt/format.h>

#include <pugixml.hpp>
#include <thread>

#include <sstream>

#include "common/failpoint.h"
#include "common/log.h"
#include "drivers/libvirt/domain_spec.h"
#include "drivers/libvirt/handles.h"
#include "drivers/libvirt/vir_error.h"

namespace kiln::drivers::libvirt {
namespace {

PowerState fromVirState(int state) {
  switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
      return PowerState::kRunning;
    case VIR_DOMAIN_PAUSED:
      return PowerState::kPaused;
    case VIR_DOMAIN_SHUTDOWN:
      return PowerState::kShutdown;
    case VIR_DOMAIN_SHUTOFF:
      return PowerState::kShutoff;
    case VIR_DOMAIN_CRASHED:
      return PowerState::kCrashed;
    case VIR_DOMAIN_PMSUSPENDED:
      return PowerState::kSuspended;
    default:
      return PowerState::kNoState;
  }
}

// A domain whose QEMU died (killed, or failed) is shut off with reason "crashed" or "failed":
// that is not the same as a guest that powered itself off.
PowerState fromVirStateReason(int state, int reason) {
  if (state == VIR_DOMAIN_SHUTOFF &&
      (reason == VIR_DOMAIN_SHUTOFF_CRASHED || reason == VIR_DOMAIN_SHUTOFF_FAILED)) {
    return PowerState::kCrashed;
  }
  return fromVirState(state);
}

std::string versionString(unsigned long v) {
  return fmt::format("{}.{}.{}", v / 1000000, (v / 1000) % 1000, v % 1000);
}

bool isManagedName(const char* name) {
  return name != nullptr && std::string_view(name).starts_with(kDomainNamePrefix);
}

}  // namespace

LibvirtDriver::LibvirtDriver(LibvirtDriverOptions options)
    : options_(std::move(options)), connection_(options_.connection) {
  connection_.setDeviceRemovedHandler([this](const std::string& uuid, const std::string& alias) {
    {
      std::lock_guard lock(removed_mutex_);
      // Bounded: events nobody waits for (disk unplugs, other tools' detaches) are dropped.
      if (removed_devices_.size() > 256) removed_devices_.clear();
      removed_devices_.insert(uuid + "/" + alias);
    }
    removed_cv_.notify_all();
  });
}

LibvirtDriver::~LibvirtDriver() { stop(); }

Result<void> LibvirtDriver::start() { return connection_.start(); }
void LibvirtDriver::stop() { connection_.stop(); }

Error LibvirtDriver::failed(std::string_view what) {
  Error e = takeLastError(what);
  connection_.reportFailure(e);
  return e;
}

Result<std::string> LibvirtDriver::domainXml(const InstanceSpec& spec) const {
  DomainOptions options;
  options.domain_type = options_.virt_type;
  options.machine_type = options_.machine_type;
  options.cpu_mode = options_.cpu_mode;
  if (spec.hardware.firmware == hardware::FirmwareType::kUefi) {
    auto firmware = chooseUefiFirmware(options_.firmware_dirs, spec.hardware.secure_boot,
                                       options_.uefi_loader, options_.uefi_nvram_template);
    if (!firmware) return firmware.error();
    log::debug("Instance '{}' uses UEFI firmware '{}' ({})", spec.uuid, firmware->loader_path,
               firmware->descriptor_path.empty() ? "configured" : firmware->descriptor_path);
    options.firmware = *firmware;
    options.nvram_path = spec.nvram_path;
  }
  options.cdrom_path = spec.cdrom_path;
  auto domain = domainSpecFor(spec, spec.hardware, options);
  if (!domain) return domain.error();
  return renderDomainXml(*domain);
}

Result<std::string> LibvirtDriver::capabilities(virConnectPtr conn) {
  std::lock_guard lock(caps_mutex_);
  if (!caps_xml_.empty()) return caps_xml_;
  LibvirtString caps(virConnectGetCapabilities(conn));
  if (!caps) return failed("Reading the host's capabilities");
  caps_xml_ = caps.get();
  return caps_xml_;
}

Result<void> LibvirtDriver::spawn(const InstanceSpec& spec, Timeline& timeline) {
  auto session = connection_.session();
  if (!session) return session.error();
  virConnectPtr conn = (*session)->get();
  auto xml_or = domainXml(spec);
  if (!xml_or) return xml_or.error();
  const std::string& xml = *xml_or;
  if (!spec.hardware.machine_type.empty()) {
    auto caps = capabilities(conn);
    if (!caps) return caps.error();
    if (!machineSupported(*caps, "x86_64", options_.virt_type, spec.hardware.machine_type)) {
      return Error::invalid(
          fmt::format("Machine type '{}' is not available for {} guests on this host",
                      spec.hardware.machine_type, options_.virt_type));
    }
  }
  DomainHandle dom;
  {
    auto step = timeline.step("domain.define");
    dom.reset(virDomainDefineXMLFlags(conn, xml.c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
    if (!dom) {
      step.fail();
      return failed(fmt::format("Defining domain for instance '{}'", spec.uuid));
    }
  }
  auto undefine = [&] {
    // Never leave a half-made instance behind: a domain that did not start is undefined.
    if (virDomainUndefineFlags(dom.get(),
                               VIR_DOMAIN_UNDEFINE_NVRAM | VIR_DOMAIN_UNDEFINE_MANAGED_SAVE) < 0) {
      Error e = takeLastError("Undefining a domain that failed to start");
      log::error("{}", e.message);
    }
  };
  if (auto fp = failpoint("launch.after_define"); !fp) {
    undefine();
    return fp.error();
  }
  {
    auto step = timeline.step("domain.start");
    if (virDomainCreate(dom.get()) < 0) {
      step.fail();
      Error e = failed(fmt::format("Starting instance '{}'", spec.uuid));
      undefine();
      return e;
    }
  }
  return success();
}

Result<void> LibvirtDriver::destroy(const std::string& uuid) {
  auto found = lookup(uuid);
  if (!found) {
    if (found.error().code == ErrorCode::kNotFound) return success();
    return found.error();
  }
  DomainHandle dom = std::move(found).value();
  int state = 0;
  int reason = 0;
  if (virDomainGetState(dom.get(), &state, &reason, 0) < 0) {
    return failed(fmt::format("Reading the state of instance '{}'", uuid));
  }
  if (state != VIR_DOMAIN_SHUTOFF) {
    if (virDomainDestroy(dom.get()) < 0) {
      Error e = failed(fmt::format("Powering off instance '{}'", uuid));
      // It may have stopped by itself between the two calls.
      if (e.code != ErrorCode::kConflict) return e;
    }
  }
  // NVRAM goes with the domain: a firmware-variables file must not outlive its instance.
  unsigned flags = VIR_DOMAIN_UNDEFINE_NVRAM | VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                   VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                   VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;
  if (virDomainUndefineFlags(dom.get(), flags) < 0) {
    Error e = failed(fmt::format("Undefining instance '{}'", uuid));
    // A driver without NVRAM or checkpoint support (libvirt's test driver) refuses those flags;
    // such a domain has no firmware variables to remove.
    if (e.code == ErrorCode::kInvalidArgument &&
        virDomainUndefineFlags(dom.get(), VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                              VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA) == 0) {
      return success();
    }
    if (e.code != ErrorCode::kNotFound) return e;
  }
  return success();
}

Result<DomainHandle> LibvirtDriver::lookup(const std::string& uuid) {
  auto session = connection_.session();
  if (!session) return session.error();
  DomainHandle dom(virDomainLookupByUUIDString((*session)->get(), uuid.c_str()));
  if (!dom) return failed(fmt::format("Looking up instance '{}'", uuid));
  return dom;
}

Result<bool> LibvirtDriver::powerOff(const std::string& uuid, std::chrono::seconds grace) {
  auto dom = lookup(uuid);
  if (!dom) return dom.error();
  if (virDomainIsActive(dom->get()) != 1) return true;
  if (grace.count() > 0 && virDomainShutdown(dom->get()) == 0) {
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
      if (virDomainIsActive(dom->get()) == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } else {
    virResetLastError();
  }
  if (virDomainDestroy(dom->get()) < 0) {
    Error e = failed(fmt::format("Powering off instance '{}'", uuid));
    if (e.code != ErrorCode::kConflict) return e;  // it stopped on its own meanwhile
  }
  return false;
}

Result<void> LibvirtDriver::powerOn(const std::string& uuid) {
  auto dom = lookup(uuid);
  if (!dom) return dom.error();
  if (virDomainIsActive(dom->get()) == 1) return success();
  if (virDomainCreate(dom->get()) < 0) return failed(fmt::format("Starting instance '{}'", uuid));
  return success();
}

Result<bool> LibvirtDriver::reboot(const std::string& uuid, bool hard, std::chrono::seconds grace) {
  auto off = powerOff(uuid, hard ? std::chrono::seconds(0) : grace);
  if (!off) return off.error();
  if (auto on = powerOn(uuid); !on) return on.error();
  return !hard && *off;
}

Result<bool> LibvirtDriver::pause(const std::string& uuid) {
  auto dom = lookup(uuid);
  if (!dom) return dom.error();
  int state = 0;
  int reason = 0;
  if (virDomainGetState(dom->get(), &state, &reason, 0) < 0) {
    return failed(fmt::format("Reading the state of instance '{}'", uuid));
  }
  if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_BLOCKED) return false;
  if (virDomainSuspend(dom->get()) < 0) return failed(fmt::format("Pausing instance '{}'", uuid));
  return true;
}

Result<void> LibvirtDriver::resume(const std::string& uuid) {
  auto dom = lookup(uuid);
  if (!dom) return dom.error();
  if (virDomainResume(dom->get()) < 0) return failed(fmt::format("Resuming instance '{}'", uuid));
  return success();
}

Result<std::optional<PowerState>> LibvirtDriver::powerState(const std::string& uuid) {
  auto found = lookup(uuid);
  if (!found) {
    if (found.error().code == ErrorCode::kNotFound) return std::optional<PowerState>{};
    return found.error();
  }
  DomainHandle dom = std::move(found).value();
  int state = 0;
  int reason = 0;
  if (virDomainGetState(dom.get(), &state, &reason, 0) < 0) {
    Error e = failed(fmt::format("Reading the state of instance '{}'", uuid));
    if (e.code == ErrorCode::kNotFound) return std::optional<PowerState>{};
    return e;
  }
  return std::optional<PowerState>(fromVirStateReason(state, reason));
}

Result<std::vector<DomainStatus>> LibvirtDriver::listManaged() {
  auto session = connection_.session();
  if (!session) return session.error();
  virDomainPtr* domains = nullptr;
  int n = virConnectListAllDomains((*session)->get(), &domains, 0);
  if (n < 0) return failed("Listing domains");
  std::vector<DomainHandle> owned;
  owned.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) owned.emplace_back(domains[i]);
  std::free(domains);
  std::vector<DomainStatus> out;
  for (auto& dom : owned) {
    if (!isManagedName(virDomainGetName(dom.get()))) continue;
    char uuid[VIR_UUID_STRING_BUFLEN];
    int state = 0;
    int reason = 0;
    if (virDomainGetUUIDString(dom.get(), uuid) < 0 ||
        virDomainGetState(dom.get(), &state, &reason, 0) < 0) {
      Error e = takeLastError("Reading a domain while listing");
      if (e.code == ErrorCode::kNotFound) continue;  // undefined while we looked
      connection_.reportFailure(e);
      return e;
    }
    out.push_back({uuid, fromVirStateReason(state, reason)});
  }
  return out;
}

Result<HypervisorInfo> LibvirtDriver::hypervisorInfo() {
  auto session = connection_.session();
  if (!session) return session.error();
  virConnectPtr conn = (*session)->get();
  HypervisorInfo info;
  const char* type = virConnectGetType(conn);
  if (type == nullptr) return failed("Reading the hypervisor type");
  info.type = type;
  unsigned long hv_version = 0;
  unsigned long lib_version = 0;
  if (virConnectGetVersion(conn, &hv_version) < 0) return failed("Reading the hypervisor version");
  if (virConnectGetLibVersion(conn, &lib_version) < 0) return failed("Reading the libvirt version");
  info.version = versionString(hv_version);
  info.version_number = hv_version;
  info.libvirt_version = versionString(lib_version);
  virNodeInfo node{};
  if (virNodeGetInfo(conn, &node) < 0) return failed("Reading the host's CPUs and memory");
  info.cpus = node.cpus;
  info.memory_mb = node.memory / 1024;
  auto caps = capabilities(conn);
  if (!caps) return caps.error();
  pugi::xml_document doc;
  if (!doc.load_string(caps->c_str()))
    return Error::internal("libvirt's capabilities XML is not XML");
  const pugi::xml_node cpu = doc.child("capabilities").child("host").child("cpu");
  info.cpu_arch = cpu.child_value("arch");
  info.cpu_model = cpu.child_value("model");
  info.cpu_vendor = cpu.child_value("vendor");
  const pugi::xml_node topology = cpu.child("topology");
  info.cpu_sockets = topology.attribute("sockets").as_uint();
  info.cpu_cores = topology.attribute("cores").as_uint();
  info.cpu_threads = topology.attribute("threads").as_uint();
  for (const pugi::xml_node feature : cpu.children("feature"))
    info.cpu_features.emplace_back(feature.attribute("name").value());
  return info;
}

Result<void> LibvirtDriver::defineSecretOf(int usage_type, const std::string& usage,
                                           const std::string& uuid, const char* description,
                                           const std::string& value) {
  // A secret left by an interrupted attach or launch is replaced, not duplicated.
  if (auto r = undefineSecretOf(usage_type, usage); !r) return r;
  auto session = connection_.session();
  if (!session) return session.error();
  if (!uuid.empty()) {
    // The uuid may still name a secret for another usage (a disk whose path changed).
    SecretHandle old(virSecretLookupByUUIDString((*session)->get(), uuid.c_str()));
    if (old) {
      virSecretUndefine(old.get());
    } else {
      virResetLastError();
    }
  }
  const bool volume = usage_type == VIR_SECRET_USAGE_TYPE_VOLUME;
  pugi::xml_document doc;
  auto secret = doc.append_child("secret");
  // ephemeral: libvirtd never writes it to disk; private: no API call can read it back.
  secret.append_attribute("ephemeral") = "yes";
  secret.append_attribute("private") = "yes";
  if (!uuid.empty()) secret.append_child("uuid").text().set(uuid.c_str());
  // The owner in the description lets the orphan sweep tell this kilnd's secrets from others'.
  std::string text = description;
  if (!options_.secret_owner.empty()) text += " of " + options_.secret_owner;
  secret.append_child("description").text().set(text.c_str());
  auto use = secret.append_child("usage");
  use.append_attribute("type") = volume ? "volume" : "iscsi";
  use.append_child(volume ? "volume" : "target").text().set(usage.c_str());
  std::ostringstream xml;
  doc.save(xml, "", pugi::format_raw | pugi::format_no_declaration);
  SecretHandle handle(virSecretDefineXML((*session)->get(), xml.str().c_str(), 0));
  if (!handle) return failed(fmt::format("Defining the secret '{}'", usage));
  if (virSecretSetValue(handle.get(), reinterpret_cast<const unsigned char*>(value.data()),
                        value.size(), 0) < 0) {
    Error e = failed(fmt::format("Setting the value of secret '{}'", usage));
    virSecretUndefine(handle.get());
    return e;
  }
  return success();
}

Result<void> LibvirtDriver::defineSecret(const std::string& usage, const std::string& value) {
  return defineSecretOf(VIR_SECRET_USAGE_TYPE_ISCSI, usage, "", "kiln iSCSI CHAP secret", value);
}

Result<void> LibvirtDriver::defineDiskSecret(const std::string& uuid, const std::string& disk_path,
                                             const std::string& passphrase) {
  return defineSecretOf(VIR_SECRET_USAGE_TYPE_VOLUME, disk_path, uuid,
                        "kiln disk encryption passphrase", passphrase);
}

Result<SecretHandle> LibvirtDriver::lookupSecret(int usage_type, const std::string& usage) {
  auto session = connection_.session();
  if (!session) return session.error();
  SecretHandle handle(virSecretLookupByUsage((*session)->get(), usage_type, usage.c_str()));
  if (!handle) {
    Error e = failed(fmt::format("Looking up the secret '{}'", usage));
    if (e.code != ErrorCode::kNotFound) return e;
  }
  return handle;  // empty when there is no such secret
}

Result<void> LibvirtDriver::undefineSecretOf(int usage_type, const std::string& usage) {
  auto handle = lookupSecret(usage_type, usage);
  if (!handle) return handle.error();
  if (!*handle) return success();
  if (virSecretUndefine(handle->get()) < 0) {
    Error e = failed(fmt::format("Removing the secret '{}'", usage));
    if (e.code != ErrorCode::kNotFound) return e;
  }
  return success();
}

Result<void> LibvirtDriver::undefineSecret(const std::string& usage) {
  return undefineSecretOf(VIR_SECRET_USAGE_TYPE_ISCSI, usage);
}

Result<void> LibvirtDriver::undefineDiskSecret(const std::string& disk_path) {
  return undefineSecretOf(VIR_SECRET_USAGE_TYPE_VOLUME, disk_path);
}

Result<bool> LibvirtDriver::secretExists(const std::string& usage) {
  auto handle = lookupSecret(VIR_SECRET_USAGE_TYPE_ISCSI, usage);
  if (!handle) return handle.error();
  return static_cast<bool>(*handle);
}

Result<bool> LibvirtDriver::diskSecretExists(const std::string& disk_path) {
  auto handle = lookupSecret(VIR_SECRET_USAGE_TYPE_VOLUME, disk_path);
  if (!handle) return handle.error();
  return static_cast<bool>(*handle);
}

Result<std::vector<SecretInfo>> LibvirtDriver::listSecrets() {
  auto session = connection_.session();
  if (!session) return session.error();
  virSecretPtr* secrets = nullptr;
  int n = virConnectListAllSecrets((*session)->get(), &secrets, 0);
  if (n < 0) return failed("Listing secrets");
  std::vector<SecretHandle> owned;
  owned.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) owned.emplace_back(secrets[i]);
  std::free(secrets);
  std::vector<SecretInfo> out;
  for (auto& secret : owned) {
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virSecretGetUUIDString(secret.get(), uuid) < 0) continue;
    // The XML of a private secret still describes it; only the value stays unreadable.
    LibvirtString xml(virSecretGetXMLDesc(secret.get(), 0));
    if (!xml) {
      virResetLastError();  // removed while we looked
      continue;
    }
    pugi::xml_document doc;
    if (!doc.load_string(xml.get())) continue;
    auto root = doc.child("secret");
    SecretInfo info;
    info.uuid = uuid;
    info.description = root.child_value("description");
    auto usage = root.child("usage");
    info.usage_type = usage.attribute("type").value();
    for (const char* field : {"target", "volume", "name"}) {
      if (usage.child(field)) info.usage_id = usage.child_value(field);
    }
    out.push_back(std::move(info));
  }
  return out;
}

Result<void> LibvirtDriver::removeSecret(const std::string& secret_uuid) {
  auto session = connection_.session();
  if (!session) return session.error();
  SecretHandle handle(virSecretLookupByUUIDString((*session)->get(), secret_uuid.c_str()));
  if (!handle || virSecretUndefine(handle.get()) < 0) {
    Error e = failed(fmt::format("Removing the secret '{}'", secret_uuid));
    if (e.code != ErrorCode::kNotFound) return e;
  }
  return success();
}

Result<std::optional<DomainDevices>> LibvirtDriver::domainDevices(const std::string& uuid) {
  auto found = lookup(uuid);
  if (!found) {
    if (found.error().code == ErrorCode::kNotFound) return std::optional<DomainDevices>{};
    return found.error();
  }
  DomainDevices devices;
  // Live and persistent definitions differ while a device change is half done: a disk counts
  // as the domain's while either still has it.
  for (unsigned flags : {0U, static_cast<unsigned>(VIR_DOMAIN_XML_INACTIVE)}) {
    LibvirtString xml(virDomainGetXMLDesc(found->get(), flags));
    if (!xml) {
      Error e = failed(fmt::format("Reading the definition of instance '{}'", uuid));
      if (e.code == ErrorCode::kNotFound) return std::optional<DomainDevices>{};
      return e;
    }
    pugi::xml_document doc;
    if (!doc.load_string(xml.get())) {
      return Error::internal(fmt::format("libvirt returned unreadable XML for '{}'", uuid));
    }
    for (auto disk : doc.select_nodes("/domain/devices/disk")) {
      auto node = disk.node();
      devices.disk_targets.insert(node.child("target").attribute("dev").value());
      auto source = node.child("source");
      for (const char* attr : {"file", "dev"}) {
        if (source.attribute(attr)) devices.files.push_back(source.attribute(attr).value());
      }
    }
    if (auto nvram = doc.select_node("/domain/os/nvram")) {
      devices.files.push_back(nvram.node().child_value());
    }
    for (auto log : doc.select_nodes("/domain/devices/serial/log")) {
      devices.files.push_back(log.node().attribute("file").value());
    }
  }
  return std::optional<DomainDevices>(std::move(devices));
}

Result<std::optional<DomainDescription>> LibvirtDriver::describe(const std::string& uuid) {
  auto found = lookup(uuid);
  if (!found) {
    if (found.error().code == ErrorCode::kNotFound) return std::optional<DomainDescription>{};
    return found.error();
  }
  LibvirtString xml(virDomainGetXMLDesc(found->get(), VIR_DOMAIN_XML_INACTIVE));
  if (!xml) return failed(fmt::format("Reading the definition of instance '{}'", uuid));
  auto described = describeDomainXml(xml.get());
  if (!described) return described.error();
  auto power = powerState(uuid);
  if (!power) return power.error();
  described->power = power->value_or(PowerState::kNoState);
  return std::optional<DomainDescription>(std::move(described).value());
}

Result<std::string> LibvirtDriver::liveXml(virDomainPtr dom) {
  LibvirtString xml(virDomainGetXMLDesc(dom, 0));
  if (!xml) return failed("Reading a domain's XML");
  return std::string(xml.get());
}

Result<void> LibvirtDriver::attachDisk(const std::string& uuid, const DiskSpec& disk) {
  auto found = lookup(uuid);
  if (!found) return found.error();
  DomainHandle dom = std::move(found).value();
  std::string xml = renderDiskXml(disk);
  int active = virDomainIsActive(dom.get());
  unsigned flags = VIR_DOMAIN_AFFECT_CONFIG | (active == 1 ? VIR_DOMAIN_AFFECT_LIVE : 0);
  if (virDomainAttachDeviceFlags(dom.get(), xml.c_str(), flags) < 0) {
    return failed(fmt::format("Attaching {} to instance '{}'", disk.device, uuid));
  }
  return success();
}

Result<void> LibvirtDriver::detachDisk(const std::string& uuid, const DiskSpec& disk) {
  auto found = lookup(uuid);
  if (!found) return found.error();
  DomainHandle dom = std::move(found).value();
  std::string xml = renderDiskXml(disk);
  int active = virDomainIsActive(dom.get());
  // The persistent definition first: a domain restarted later must not bring the disk back.
  if (virDomainDetachDeviceFlags(dom.get(), xml.c_str(), VIR_DOMAIN_AFFECT_CONFIG) < 0) {
    Error e = failed(fmt::format("Detaching {} from instance '{}'", disk.device, uuid));
    if (e.code != ErrorCode::kInvalidArgument && e.code != ErrorCode::kNotFound) return e;
  }
  if (active != 1) return success();
  if (virDomainDetachDeviceFlags(dom.get(), xml.c_str(), VIR_DOMAIN_AFFECT_LIVE) < 0) {
    Error e = failed(fmt::format("Detaching {} from instance '{}'", disk.device, uuid));
    if (e.code != ErrorCode::kInvalidArgument && e.code != ErrorCode::kNotFound) return e;
  }
  // The guest acknowledges the unplug asynchronously (ACPI); QEMU keeps the iSCSI session until
  // it does. Wait until the disk has left the live XML, as nova waits for device-removed.
  for (int i = 0; i < 300; ++i) {
    auto live = liveXml(dom.get());
    if (!live) return live.error();
    pugi::xml_document doc;
    doc.load_string(live->c_str());
    std::string query = "/domain/devices/disk/target[@dev='" + disk.device + "']";
    if (!doc.select_node(query.c_str())) return success();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Error::unavailable(
      fmt::format("The guest of instance '{}' did not release {} within 30 s", uuid, disk.device));
}

Result<void> LibvirtDriver::attachInterface(const std::string& uuid, const NicSpec& nic) {
  auto found = lookup(uuid);
  if (!found) return found.error();
  DomainHandle dom = std::move(found).value();
  std::string xml = renderInterfaceXml(nic);
  int active = virDomainIsActive(dom.get());
  unsigned flags = VIR_DOMAIN_AFFECT_CONFIG | (active == 1 ? VIR_DOMAIN_AFFECT_LIVE : 0);
  if (virDomainAttachDeviceFlags(dom.get(), xml.c_str(), flags) < 0) {
    return failed(fmt::format("Attaching port '{}' to instance '{}'", nic.port_id, uuid));
  }
  return success();
}

Result<void> LibvirtDriver::detachInterface(const std::string& uuid, const NicSpec& nic,
                                            std::chrono::milliseconds timeout) {
  auto found = lookup(uuid);
  if (!found) return found.error();
  DomainHandle dom = std::move(found).value();
  std::string xml = renderInterfaceXml(nic);
  const std::string key = uuid + "/ua-" + nic.port_id;
  auto stillPlugged = [&]() -> Result<bool> {
    auto live = liveXml(dom.get());
    if (!live) return live.error();
    pugi::xml_document doc;
    doc.load_string(live->c_str());
    for (auto node : doc.select_nodes("/domain/devices/interface/mac")) {
      if (nic.mac == node.node().attribute("address").value()) return true;
    }
    return false;
  };
  // libvirt matches the NIC by its MAC; "not found" means it is gone from that definition.
  auto detach = [&](unsigned flags) -> Result<void> {
    if (virDomainDetachDeviceFlags(dom.get(), xml.c_str(), flags) == 0) return success();
    Error e = failed(fmt::format("Detaching port '{}' from instance '{}'", nic.port_id, uuid));
    if (e.code == ErrorCode::kInvalidArgument || e.code == ErrorCode::kNotFound) return success();
    return e;
  };
  {
    std::lock_guard lock(removed_mutex_);
    removed_devices_.erase(key);
  }
  // The persistent definition first: a domain started later must not bring the NIC back.
  if (auto r = detach(VIR_DOMAIN_AFFECT_CONFIG); !r) return r;
  if (virDomainIsActive(dom.get()) != 1) return success();
  auto plugged = stillPlugged();
  if (!plugged) return plugged.error();
  if (!*plugged) return success();
  if (auto r = detach(VIR_DOMAIN_AFFECT_LIVE); !r) return r;
  // The guest acknowledges the unplug (ACPI) when it likes; libvirt says so with device-removed.
  // The live definition is read again now and then in case the event was lost (a reconnect).
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    {
      std::unique_lock lock(removed_mutex_);
      auto wait_until =
          std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
      if (removed_cv_.wait_until(lock, wait_until, [&] { return removed_devices_.count(key); })) {
        removed_devices_.erase(key);
        return success();
      }
    }
    plugged = stillPlugged();
    if (!plugged) return plugged.error();
    if (!*plugged) return success();
    if (std::chrono::steady_clock::now() >= deadline) break;
  }
  return Error::unavailable(fmt::format(
      "The guest of instance '{}' did not release port '{}' within {} ms; it is still plugged",
      uuid, nic.port_id, timeout.count()));
}

void LibvirtDriver::setEventSink(std::function<void(const DomainEvent&)> sink) {
  connection_.setLifecycleHandler(
      [sink = std::move(sink)](const std::string& uuid, int event, int detail) {
        DomainEvent ev;
        ev.uuid = uuid;
        switch (event) {
          case VIR_DOMAIN_EVENT_STARTED:
          case VIR_DOMAIN_EVENT_RESUMED:
            ev.power = PowerState::kRunning;
            break;
          case VIR_DOMAIN_EVENT_SUSPENDED:
            ev.power = PowerState::kPaused;
            break;
          case VIR_DOMAIN_EVENT_STOPPED:
            ev.power = detail == VIR_DOMAIN_EVENT_STOPPED_CRASHED ||
                               detail == VIR_DOMAIN_EVENT_STOPPED_FAILED
                           ? PowerState::kCrashed
                           : PowerState::kShutoff;
            break;
          case VIR_DOMAIN_EVENT_SHUTDOWN:
            ev.power = PowerState::kShutdown;
            break;
          case VIR_DOMAIN_EVENT_CRASHED:
            ev.power = PowerState::kCrashed;
            break;
          case VIR_DOMAIN_EVENT_UNDEFINED:
            ev.undefined = true;
            break;
          default:
            return;  // defined, pmsuspended: nothing to report
        }
        sink(ev);
      });
}

void LibvirtDriver::setReconnectHook(std::function<void()> hook) {
  connection_.setReconnectHook(std::move(hook));
}

}  // namespace kiln::drivers::libvirt
