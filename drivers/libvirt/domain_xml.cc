#include <fmt/format.h>

#include <pugixml.hpp>
#include <set>
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

using hardware::DiskBus;
using hardware::FirmwareType;
using hardware::HardwareSpec;

void addDisk(pugi::xml_node devices, const DomainDisk& entry) {
  const DiskSpec& disk = entry.disk;
  const bool cdrom = entry.device == DomainDisk::Device::kCdrom;
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
      node.append_attribute("device") = cdrom ? "cdrom" : "disk";
      auto d = driver();
      if (!cdrom) d.append_attribute("discard") = "unmap";
      auto file_source = node.append_child("source");
      file_source.append_attribute("file") = disk.path.c_str();
      if (!disk.encryption_secret_uuid.empty()) {
        // qcow2's own LUKS layer; the passphrase is in libvirtd's memory, named by uuid only.
        auto encryption = file_source.append_child("encryption");
        encryption.append_attribute("format") = "luks";
        auto secret = encryption.append_child("secret");
        secret.append_attribute("type") = "passphrase";
        secret.append_attribute("uuid") = disk.encryption_secret_uuid.c_str();
      }
      if (cdrom && !entry.instance_private) {
        // The CD-ROM is the cached base itself: shared, verified, never chowned to one guest.
        auto label = file_source.append_child("seclabel");
        label.append_attribute("model") = "dac";
        label.append_attribute("relabel") = "no";
      }
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
  target.append_attribute("bus") = entry.bus.c_str();
  if (entry.boot_order != 0) {
    node.append_child("boot").append_attribute("order") = std::to_string(entry.boot_order).c_str();
  }
  if (disk.read_only || cdrom) node.append_child("readonly");
  if (!cdrom) textChild(node, "serial", disk.serial.empty() ? disk.device : disk.serial);
}

// A tap kiln made (drivers/network): libvirt opens it by name and neither creates nor removes
// it (managed='no'), so the tap and its anti-spoofing filter outlive the guest's power cycles.
void addInterface(pugi::xml_node devices, const NicSpec& nic) {
  auto node = devices.append_child("interface");
  node.append_attribute("type") = "ethernet";
  node.append_child("mac").append_attribute("address") = nic.mac.c_str();
  auto target = node.append_child("target");
  target.append_attribute("dev") = nic.devname.c_str();
  target.append_attribute("managed") = "no";
  node.append_child("model").append_attribute("type") = nic.model.c_str();
  if (nic.model == "virtio" && nic.queues > 1) {
    auto driver = node.append_child("driver");
    driver.append_attribute("queues") = nic.queues;
  }
  // virtio-net tells the guest the MTU (host_mtu), so the guest's eth0 has the network's MTU;
  // libvirt refuses <mtu> for the emulated models, whose guests take it from DHCP or the config
  // drive (the tap has the MTU either way).
  if (nic.mtu != 0 && nic.model == "virtio") {
    node.append_child("mtu").append_attribute("size") = nic.mtu;
  }
  // A user alias names the device by its port, for the operator reading `virsh dumpxml`.
  node.append_child("alias").append_attribute("name") = ("ua-" + nic.port_id).c_str();
}

// The target-name prefix guests and operators expect for a bus.
std::string devicePrefix(DiskBus bus) {
  switch (bus) {
    case DiskBus::kVirtio:
      return "vd";
    case DiskBus::kIde:
      return "hd";
    case DiskBus::kScsi:
    case DiskBus::kSata:
    case DiskBus::kUsb:
      return "sd";
  }
  return "vd";
}

// nova's SCSIModel names -> libvirt's controller models (QEMU's mptsas1068 and megasas devices
// are libvirt's lsisas1068 and lsisas1078).
std::string scsiControllerModel(const std::string& model) {
  if (model == "mptsas1068") return "lsisas1068";
  if (model == "megasas") return "lsisas1078";
  return model;
}

std::string firstFree(const std::set<std::string>& used, const std::string& prefix,
                      std::string_view preferred_suffixes) {
  for (char c : preferred_suffixes) {
    std::string name = prefix + c;
    if (used.count(name) == 0) return name;
  }
  return "";
}

// A read-only raw CD-ROM on `bus`, in its first free slot (IDE slots tried in `ide_order`).
Result<DomainDisk> readOnlyCdrom(std::set<std::string>& used, DiskBus bus,
                                 const std::string& ide_order, const std::string& path,
                                 std::string_view what, const InstanceSpec& instance) {
  DomainDisk cdrom;
  cdrom.device = DomainDisk::Device::kCdrom;
  cdrom.bus = std::string(hardware::diskBusName(bus));
  cdrom.disk.path = path;
  cdrom.disk.format = "raw";
  cdrom.disk.read_only = true;
  cdrom.disk.device = bus == DiskBus::kIde ? firstFree(used, "hd", ide_order)
                                           : firstFree(used, "sd", "abcdefghijklmnop");
  if (cdrom.disk.device.empty()) {
    return Error::invalid(fmt::format("Instance '{}' has no free {} slot for its {}; IDE has four.",
                                      instance.uuid, hardware::diskBusName(bus), what));
  }
  used.insert(cdrom.disk.device);
  return cdrom;
}

}  // namespace

DomainSpec domainSpecFor(const InstanceSpec& instance, const std::string& domain_type,
                         const std::string& machine_type, const std::string& cpu_mode) {
  DomainOptions options;
  options.domain_type = domain_type;
  options.machine_type = machine_type;
  options.cpu_mode = cpu_mode;
  // A default HardwareSpec (BIOS, virtio, no CD-ROM) has nothing that can fail.
  return std::move(domainSpecFor(instance, HardwareSpec{}, options).value());
}

Result<DomainSpec> domainSpecFor(const InstanceSpec& instance, const HardwareSpec& hardware,
                                 const DomainOptions& options) {
  DomainSpec spec;
  spec.domain_type = options.domain_type;
  spec.name = std::string(kDomainNamePrefix) + instance.uuid;
  spec.uuid = instance.uuid;
  spec.title = singleLine(instance.display_name);
  spec.memory_mib = instance.memory_mb;
  spec.vcpus = instance.vcpus;
  if (options.cpu_mode.empty()) {
    // QEMU's TCG cannot do host-model; KVM guests get the host's model as nova's default.
    spec.cpu_mode = options.domain_type == "kvm" ? "host-model" : "";
  } else if (options.cpu_mode != "none") {
    spec.cpu_mode = options.cpu_mode;
  }
  if (hardware.cpu_topology) {
    const auto& t = *hardware.cpu_topology;
    if (t.sockets * t.cores * t.threads != instance.vcpus) {
      return Error::internal(fmt::format(
          "The CPU topology {}x{}x{} was chosen for another vCPU count than the instance's {}",
          t.sockets, t.cores, t.threads, instance.vcpus));
    }
    spec.cpu_topology = t;
  }

  // The machine: the image's, else q35 for UEFI (secure boot needs it, and a UEFI guest should
  // not change machine when secure boot is turned on later), else the host's default.
  const bool uefi = hardware.firmware == FirmwareType::kUefi;
  if (!hardware.machine_type.empty()) {
    spec.machine_type = hardware.machine_type;
  } else if (uefi && !hardware::isQ35Machine(options.machine_type)) {
    spec.machine_type = "q35";
  } else {
    spec.machine_type = options.machine_type;
  }
  const bool q35 = hardware::isQ35Machine(spec.machine_type);
  if (auto fits = hardware::checkBusesFitMachine(hardware, spec.machine_type); !fits) {
    return fits.error();
  }

  if (uefi) {
    if (!options.firmware || options.nvram_path.empty()) {
      return Error::internal(fmt::format(
          "Instance '{}' boots with UEFI but was given no firmware choice or NVRAM path",
          instance.uuid));
    }
    if (options.firmware->secure != hardware.secure_boot) {
      return Error::internal(fmt::format(
          "Instance '{}' was given firmware {} secure boot, but its image asks for the opposite",
          instance.uuid, options.firmware->secure ? "with" : "without"));
    }
    if (options.firmware->secure && !q35) {
      return Error::invalid(
          fmt::format("Secure boot needs a q35 machine type, and instance '{}' would get '{}'.",
                      instance.uuid, spec.machine_type));
    }
    spec.loader_path = options.firmware->loader_path;
    spec.loader_secure = options.firmware->secure;
    spec.nvram_template_path = options.firmware->nvram_template_path;
    spec.nvram_path = options.nvram_path;
    // libvirt refuses a secure loader without SMM; a build that needs SMM hangs without it.
    spec.smm = options.firmware->secure || options.firmware->requires_smm;
  }

  // Disks. The root disk (local or a volume) and the local disks take the image's bus; the other
  // volumes stay on virtio, which hot-plug needs. A renamed disk keeps its letter: vdb -> sdb.
  const std::string bus_name(hardware::diskBusName(hardware.disk_bus));
  const std::string prefix = devicePrefix(hardware.disk_bus);
  std::set<std::string> used;
  for (const auto& d : instance.disks) {
    DomainDisk entry{d};
    const bool local = d.source == DiskSpec::Source::kFile || d.boot;
    if (local && hardware.disk_bus != DiskBus::kVirtio) {
      entry.bus = bus_name;
      if (d.device.size() == 3 && d.device.starts_with("vd")) {
        entry.disk.device = prefix + d.device.substr(2);
      }
    }
    if (d.boot) entry.boot_order = hardware.boot_from_cdrom ? 2 : 1;
    if (used.count(entry.disk.device) != 0) {
      return Error::internal(
          fmt::format("Instance '{}' has two disks named '{}'", instance.uuid, entry.disk.device));
    }
    used.insert(entry.disk.device);
    spec.disks.push_back(std::move(entry));
  }
  if (hardware.boot_from_cdrom) {
    if (options.cdrom_path.empty()) {
      return Error::internal(fmt::format(
          "Instance '{}' boots from an ISO image but was given no CD-ROM path", instance.uuid));
    }
    DiskBus cdrom_bus = hardware.cdrom_bus.value_or(q35 ? DiskBus::kSata : DiskBus::kIde);
    // hdc is the classic CD-ROM slot (secondary master) on IDE.
    auto cdrom = readOnlyCdrom(used, cdrom_bus, "cdab", options.cdrom_path, "CD-ROM", instance);
    if (!cdrom) return cdrom.error();
    cdrom->boot_order = 1;
    spec.disks.push_back(std::move(cdrom).value());
  }
  if (!instance.config_drive_path.empty()) {
    // nova's config drive: a read-only CD-ROM on a bus the machine has (IDE on i440fx, SATA on
    // q35), found by the guest through its label, config-2. It is the instance's own file.
    auto drive = readOnlyCdrom(used, q35 ? DiskBus::kSata : DiskBus::kIde, "dcba",
                               instance.config_drive_path, "config drive", instance);
    if (!drive) return drive.error();
    drive->instance_private = true;
    spec.disks.push_back(std::move(drive).value());
  }
  // Each NIC's model and queues were chosen from this hardware when it was recorded.
  spec.nics = instance.nics;
  bool scsi = false;
  for (const auto& d : spec.disks) {
    if (d.bus == "scsi") scsi = true;
    // IDE has two buses with two units each: hda..hdd.
    if (d.bus == "ide" && (d.disk.device.size() != 3 || d.disk.device[2] > 'd')) {
      return Error::invalid(fmt::format(
          "Instance '{}' would need IDE disk '{}', but IDE has four slots (hda to hdd); use "
          "another hw_disk_bus.",
          instance.uuid, d.disk.device));
    }
  }
  if (scsi) spec.scsi_controller_model = scsiControllerModel(hardware.scsi_model);

  spec.boot_menu = hardware.boot_menu;
  if (hardware.os_type == hardware::OsType::kWindows) {
    // Windows keeps the RTC in local time and runs far better with Hyper-V enlightenments
    // (nova driver._set_clock and _set_features).
    spec.clock_offset = "localtime";
    spec.hyperv = true;
  }
  if (hardware.video_model != "none") spec.video_model = hardware.video_model;
  spec.rng = hardware.rng;
  spec.guest_agent = hardware.guest_agent;

  spec.console_log_path = instance.console_log_path;
  spec.project_id = instance.project_id;
  spec.image_id = instance.image_id;
  spec.flavor_name = instance.flavor_name;
  spec.created_at = instance.created_at;
  return spec;
}

std::string renderDiskXml(const DiskSpec& disk) {
  pugi::xml_document doc;
  addDisk(doc, DomainDisk{disk, DomainDisk::Device::kDisk, "virtio", disk.boot ? 1U : 0U});
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

std::string renderInterfaceXml(const NicSpec& nic) {
  pugi::xml_document doc;
  addInterface(doc, nic);
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
  if (!spec.project_id.empty()) {
    meta.append_child("kiln:owner").append_attribute("project_id") = spec.project_id.c_str();
  }
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
  if (!spec.loader_path.empty()) {
    auto loader = os.append_child("loader");
    loader.append_attribute("readonly") = "yes";
    loader.append_attribute("type") = "pflash";
    loader.append_attribute("secure") = spec.loader_secure ? "yes" : "no";
    loader.text().set(spec.loader_path.c_str());
    auto nvram = os.append_child("nvram");
    nvram.append_attribute("template") = spec.nvram_template_path.c_str();
    nvram.text().set(spec.nvram_path.c_str());
  }
  if (spec.boot_menu) {
    auto menu = os.append_child("bootmenu");
    menu.append_attribute("enable") = "yes";
    menu.append_attribute("timeout") = "3000";
  }
  os.append_child("smbios").append_attribute("mode") = "sysinfo";

  auto features = domain.append_child("features");
  features.append_child("acpi");
  features.append_child("apic");
  if (spec.hyperv) {
    auto hyperv = features.append_child("hyperv");
    hyperv.append_child("relaxed").append_attribute("state") = "on";
    hyperv.append_child("vapic").append_attribute("state") = "on";
    auto spinlocks = hyperv.append_child("spinlocks");
    spinlocks.append_attribute("state") = "on";
    spinlocks.append_attribute("retries") = "8191";
  }
  if (spec.smm) features.append_child("smm").append_attribute("state") = "on";
  if (!spec.cpu_mode.empty() || spec.cpu_topology) {
    auto cpu = domain.append_child("cpu");
    if (!spec.cpu_mode.empty()) cpu.append_attribute("mode") = spec.cpu_mode.c_str();
    if (spec.cpu_topology) {
      auto topology = cpu.append_child("topology");
      topology.append_attribute("sockets") = spec.cpu_topology->sockets;
      topology.append_attribute("cores") = spec.cpu_topology->cores;
      topology.append_attribute("threads") = spec.cpu_topology->threads;
    }
  }
  auto clock = domain.append_child("clock");
  clock.append_attribute("offset") = spec.clock_offset.c_str();
  for (auto [name, policy] : {std::pair{"rtc", "catchup"}, std::pair{"pit", "delay"}}) {
    auto timer = clock.append_child("timer");
    timer.append_attribute("name") = name;
    timer.append_attribute("tickpolicy") = policy;
  }
  auto hpet = clock.append_child("timer");
  hpet.append_attribute("name") = "hpet";
  hpet.append_attribute("present") = "no";
  if (spec.hyperv && spec.domain_type == "kvm") {
    // The Hyper-V reference clock is a KVM feature (nova driver._set_kvm_timers).
    auto hv_clock = clock.append_child("timer");
    hv_clock.append_attribute("name") = "hypervclock";
    hv_clock.append_attribute("present") = "yes";
  }

  textChild(domain, "on_poweroff", "destroy");
  textChild(domain, "on_reboot", "restart");
  textChild(domain, "on_crash", "destroy");

  auto devices = domain.append_child("devices");
  if (!spec.scsi_controller_model.empty()) {
    auto controller = devices.append_child("controller");
    controller.append_attribute("type") = "scsi";
    controller.append_attribute("index") = "0";
    controller.append_attribute("model") = spec.scsi_controller_model.c_str();
  }
  for (const auto& disk : spec.disks) addDisk(devices, disk);
  for (const auto& nic : spec.nics) addInterface(devices, nic);
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
  if (spec.guest_agent) {
    // libvirt adds the virtio-serial controller and picks the socket path.
    auto channel = devices.append_child("channel");
    channel.append_attribute("type") = "unix";
    auto target = channel.append_child("target");
    target.append_attribute("type") = "virtio";
    target.append_attribute("name") = "org.qemu.guest_agent.0";
  }
  if (!spec.video_model.empty()) {
    devices.append_child("video").append_child("model").append_attribute("type") =
        spec.video_model.c_str();
  }
  if (spec.rng) {
    auto rng = devices.append_child("rng");
    rng.append_attribute("model") = "virtio";
    if (spec.rng->rate_bytes != 0) {
      auto rate = rng.append_child("rate");
      rate.append_attribute("bytes") = std::to_string(spec.rng->rate_bytes).c_str();
      if (spec.rng->rate_period_ms != 0) {
        rate.append_attribute("period") = std::to_string(spec.rng->rate_period_ms).c_str();
      }
    }
    auto backend = rng.append_child("backend");
    backend.append_attribute("model") = "random";
    backend.text().set("/dev/urandom");
  }
  auto balloon = devices.append_child("memballoon");
  balloon.append_attribute("model") = "virtio";

  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

}  // namespace kiln::drivers::libvirt
