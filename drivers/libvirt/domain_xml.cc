#include <pugixml.hpp>

#include <sstream>

#include "drivers/libvirt/domain_spec.h"

namespace kiln::drivers::libvirt {
namespace {

// libvirt's <title> must be a single line.
std::string singleLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return text;
}

void textChild(pugi::xml_node parent, const char* name, const std::string& text) {
  parent.append_child(name).text().set(text.c_str());
}

void addDisk(pugi::xml_node devices, const DiskSpec& disk) {
  auto node = devices.append_child("disk");
  auto driver = [&] {
    auto d = node.append_child("driver");
    d.append_attribute("name") = "qemu";
    d.append_attribute("type") = disk.format.c_str();
    return d;
  };
  switch (disk.source) {
    case DiskSpec::Source::kFile: {
      node.append_attribute("type") = "file";
      node.append_attribute("device") = "disk";
      driver().append_attribute("discard") = "unmap";
      node.append_child("source").append_attribute("file") = disk.path.c_str();
      // The backing chain is spelled out so libvirt never probes a format (the base is raw or
      // qcow2 as recorded by the image cache, and it is never written by a guest).
      auto chain = node.append_child("backingStore");
      if (!disk.backing_path.empty()) {
        chain.append_attribute("type") = "file";
        chain.append_child("format").append_attribute("type") = disk.backing_format.c_str();
        auto source = chain.append_child("source");
        source.append_attribute("file") = disk.backing_path.c_str();
        // Bases are shared and world-readable; libvirt must not chown them to one guest's user
        // (it does not give shared backing files back), so the cached base stays as verified.
        auto label = source.append_child("seclabel");
        label.append_attribute("model") = "dac";
        label.append_attribute("relabel") = "no";
        chain.append_child("backingStore");
      }
      break;
    }
    case DiskSpec::Source::kIscsi: {
      // QEMU's own initiator: no host block device, no iscsiadm session to leak.
      node.append_attribute("type") = "network";
      node.append_attribute("device") = "disk";
      auto d = driver();
      d.append_attribute("cache") = "none";
      d.append_attribute("io") = "native";
      auto source = node.append_child("source");
      source.append_attribute("protocol") = "iscsi";
      source.append_attribute("name") = disk.iscsi_name.c_str();
      for (const auto& host : disk.iscsi_hosts) {
        auto h = source.append_child("host");
        h.append_attribute("name") = host.name.c_str();
        h.append_attribute("port") = std::to_string(host.port).c_str();
      }
      if (!disk.secret_usage.empty()) {
        auto auth = source.append_child("auth");
        auth.append_attribute("username") = disk.auth_username.c_str();
        auto secret = auth.append_child("secret");
        secret.append_attribute("type") = "iscsi";
        secret.append_attribute("usage") = disk.secret_usage.c_str();
      }
      break;
    }
    case DiskSpec::Source::kBlock: {
      node.append_attribute("type") = "block";
      node.append_attribute("device") = "disk";
      auto d = driver();
      d.append_attribute("cache") = "none";
      d.append_attribute("io") = "native";
      node.append_child("source").append_attribute("dev") = disk.path.c_str();
      break;
    }
  }
  auto target = node.append_child("target");
  target.append_attribute("dev") = disk.device.c_str();
  target.append_attribute("bus") = "virtio";
  if (disk.boot) node.append_child("boot").append_attribute("order") = "1";
  if (disk.read_only) node.append_child("readonly");
  textChild(node, "serial", disk.serial.empty() ? disk.device : disk.serial);
}

}  // namespace

DomainSpec domainSpecFor(const InstanceSpec& instance, const std::string& domain_type,
                         const std::string& machine_type, const std::string& cpu_mode) {
  DomainSpec spec;
  spec.domain_type = domain_type;
  spec.name = std::string(kDomainNamePrefix) + instance.uuid;
  spec.uuid = instance.uuid;
  spec.title = singleLine(instance.display_name);
  spec.memory_mib = instance.memory_mb;
  spec.vcpus = instance.vcpus;
  spec.machine_type = machine_type;
  if (cpu_mode.empty()) {
    // QEMU's TCG cannot do host-model; KVM guests get the host's model as nova's default.
    spec.cpu_mode = domain_type == "kvm" ? "host-model" : "";
  } else if (cpu_mode != "none") {
    spec.cpu_mode = cpu_mode;
  }
  spec.disks = instance.disks;
  spec.console_log_path = instance.console_log_path;
  spec.image_id = instance.image_id;
  spec.flavor_name = instance.flavor_name;
  spec.created_at = instance.created_at;
  return spec;
}

std::string renderDiskXml(const DiskSpec& disk) {
  pugi::xml_document doc;
  addDisk(doc, disk);
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

std::string renderDomainXml(const DomainSpec& spec) {
  pugi::xml_document doc;
  auto domain = doc.append_child("domain");
  domain.append_attribute("type") = spec.domain_type.c_str();
  textChild(domain, "name", spec.name);
  textChild(domain, "uuid", spec.uuid);
  if (!spec.title.empty()) textChild(domain, "title", spec.title);

  auto meta = domain.append_child("metadata").append_child("kiln:instance");
  meta.append_attribute("xmlns:kiln") = kMetadataNamespace;
  textChild(meta, "kiln:display_name", spec.title);
  meta.append_child("kiln:image").append_attribute("id") = spec.image_id.c_str();
  meta.append_child("kiln:flavor").append_attribute("name") = spec.flavor_name.c_str();
  textChild(meta, "kiln:created_at", spec.created_at);

  auto memory = domain.append_child("memory");
  memory.append_attribute("unit") = "MiB";
  memory.text().set(std::to_string(spec.memory_mib).c_str());
  auto current = domain.append_child("currentMemory");
  current.append_attribute("unit") = "MiB";
  current.text().set(std::to_string(spec.memory_mib).c_str());
  auto vcpu = domain.append_child("vcpu");
  vcpu.append_attribute("placement") = "static";
  vcpu.text().set(std::to_string(spec.vcpus).c_str());

  auto sysinfo = domain.append_child("sysinfo");
  sysinfo.append_attribute("type") = "smbios";
  auto system = sysinfo.append_child("system");
  for (auto [key, value] : {std::pair<const char*, std::string>{"manufacturer", "kiln"},
                            {"product", "kiln compute"},
                            {"serial", spec.uuid},
                            {"uuid", spec.uuid}}) {
    auto entry = system.append_child("entry");
    entry.append_attribute("name") = key;
    entry.text().set(value.c_str());
  }

  auto os = domain.append_child("os");
  auto type = os.append_child("type");
  type.append_attribute("arch") = spec.arch.c_str();
  type.append_attribute("machine") = spec.machine_type.c_str();
  type.text().set("hvm");
  os.append_child("smbios").append_attribute("mode") = "sysinfo";

  auto features = domain.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");
  if (!spec.cpu_mode.empty()) {
    domain.append_child("cpu").append_attribute("mode") = spec.cpu_mode.c_str();
  }
  auto clock = domain.append_child("clock");
  clock.append_attribute("offset") = "utc";
  for (auto [name, policy] : {std::pair{"rtc", "catchup"}, std::pair{"pit", "delay"}}) {
    auto timer = clock.append_child("timer");
    timer.append_attribute("name") = name;
    timer.append_attribute("tickpolicy") = policy;
  }
  auto hpet = clock.append_child("timer");
  hpet.append_attribute("name") = "hpet";
  hpet.append_attribute("present") = "no";

  textChild(domain, "on_poweroff", "destroy");
  textChild(domain, "on_reboot", "restart");
  textChild(domain, "on_crash", "destroy");

  auto devices = domain.append_child("devices");
  for (const auto& disk : spec.disks) addDisk(devices, disk);
  if (!spec.console_log_path.empty()) {
    // virtlogd writes the serial output to the log, so it survives a kilnd restart and QEMU
    // never holds the file itself.
    auto serial = devices.append_child("serial");
    serial.append_attribute("type") = "pty";
    auto log = serial.append_child("log");
    log.append_attribute("file") = spec.console_log_path.c_str();
    log.append_attribute("append") = "on";
    serial.append_child("target").append_attribute("port") = "0";
    auto console = devices.append_child("console");
    console.append_attribute("type") = "pty";
    auto target = console.append_child("target");
    target.append_attribute("type") = "serial";
    target.append_attribute("port") = "0";
  }
  auto balloon = devices.append_child("memballoon");
  balloon.append_attribute("model") = "virtio";

  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

}  // namespace kiln::drivers::libvirt
