#include "drivers/hardware/hardware_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <initializer_list>
#include <set>
#include <tuple>

#include "common/strings.h"

namespace kiln::drivers::hardware {
namespace {

using nlohmann::json;

// nova's own ceiling for an unset maximum (hardware.py _get_cpu_topology_constraints).
constexpr unsigned kUnlimitedCount = 65536;
constexpr std::size_t kMaxMachineNameLength = 64;

// Properties kiln reads; every other hw_* key is reported as ignored.
const std::set<std::string, std::less<>>& honouredProperties() {
  static const std::set<std::string, std::less<>> names = {"hw_architecture",
                                                           "hw_boot_menu",
                                                           "hw_cdrom_bus",
                                                           "hw_cpu_cores",
                                                           "hw_cpu_max_cores",
                                                           "hw_cpu_max_sockets",
                                                           "hw_cpu_max_threads",
                                                           "hw_cpu_sockets",
                                                           "hw_cpu_threads",
                                                           "hw_disk_bus",
                                                           "hw_firmware_type",
                                                           "hw_machine_type",
                                                           "hw_qemu_guest_agent",
                                                           "hw_rng_model",
                                                           "hw_scsi_model",
                                                           "hw_vif_model",
                                                           "hw_vif_multiqueue_enabled",
                                                           "hw_video_model"};
  return names;
}

std::string listOf(std::initializer_list<std::string_view> values) {
  std::string text;
  std::size_t i = 0;
  for (auto v : values) {
    if (i > 0) text += i + 1 == values.size() ? " and " : ", ";
    text += v;
    ++i;
  }
  return text;
}

// Where a value came from, for messages: "Image property hw_disk_bus" or
// "Flavor extra spec hw_rng:allowed".
struct Origin {
  std::string_view kind;
  std::string_view key;
  std::string describe() const { return fmt::format("{} {}", kind, key); }
};

std::string quoteValue(std::string_view value) {
  // Messages quote what the user sent; a huge or multi-line value must not flood a log line.
  std::string text(value.substr(0, 80));
  for (char& c : text) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (value.size() > 80) text += "...";
  return "'" + text + "'";
}

Error notAllowed(const Origin& origin, std::string_view value,
                 std::initializer_list<std::string_view> allowed) {
  return Error::invalid(fmt::format("{} is {}; allowed values are {}.", origin.describe(),
                                    quoteValue(value), listOf(allowed)));
}

// Glance stores every property as a string; other sources send JSON numbers and booleans.
Result<std::optional<std::string>> imageText(const json& properties, std::string_view key) {
  if (!properties.is_object()) return std::optional<std::string>();
  auto it = properties.find(std::string(key));
  if (it == properties.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_boolean()) return std::optional<std::string>(it->get<bool>() ? "true" : "false");
  if (it->is_number_unsigned()) {
    return std::optional<std::string>(std::to_string(it->get<std::uint64_t>()));
  }
  if (it->is_number_integer()) {
    return std::optional<std::string>(std::to_string(it->get<std::int64_t>()));
  }
  return Error::invalid(
      fmt::format("Image property {} must be a string, a number or a boolean, "
                  "not {}.",
                  key, it->type_name()));
}

std::optional<std::string> flavorText(const std::map<std::string, std::string>& specs,
                                      std::string_view key) {
  auto it = specs.find(std::string(key));
  if (it == specs.end()) return std::nullopt;
  return it->second;
}

Result<std::string> oneOf(const Origin& origin, const std::string& value,
                          std::initializer_list<std::string_view> allowed) {
  // Exact spelling, as nova's enum fields (nova/objects/fields.py) require.
  for (auto a : allowed) {
    if (value == a) return value;
  }
  return notAllowed(origin, value, allowed);
}

// oslo's bool_from_string vocabulary, but strict: an unknown word is an error, not "false".
Result<bool> parseBool(const Origin& origin, const std::string& value) {
  const std::string lower = strings::asciiLower(value);
  for (const char* word : {"true", "yes", "on", "1", "t", "y"}) {
    if (lower == word) return true;
  }
  for (const char* word : {"false", "no", "off", "0", "f", "n"}) {
    if (lower == word) return false;
  }
  return notAllowed(origin, value, {"true", "false", "yes", "no", "on", "off", "1", "0"});
}

Result<std::uint64_t> parseCount(const Origin& origin, const std::string& value,
                                 std::uint64_t max) {
  bool digits =
      !value.empty() && value.size() <= 12 &&
      std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  std::uint64_t n = digits ? std::stoull(value) : 0;
  if (!digits || n == 0 || n > max) {
    return Error::invalid(fmt::format("{} is {}; it must be a whole number from 1 to {}.",
                                      origin.describe(), quoteValue(value), max));
  }
  return n;
}

Result<DiskBus> parseBus(const Origin& origin, const std::string& value,
                         std::initializer_list<std::string_view> allowed) {
  auto name = oneOf(origin, value, allowed);
  if (!name) return name.error();
  for (DiskBus bus :
       {DiskBus::kVirtio, DiskBus::kScsi, DiskBus::kSata, DiskBus::kIde, DiskBus::kUsb}) {
    if (diskBusName(bus) == *name) return bus;
  }
  return Error::internal(fmt::format("Disk bus '{}' has no mapping", *name));
}

// Reads one image property and one flavor extra spec of the same meaning.
struct Inputs {
  const json& image;
  const std::map<std::string, std::string>& flavor;

  Result<std::optional<std::string>> image_value(std::string_view key) const {
    return imageText(image, key);
  }
  std::optional<std::string> flavor_value(std::string_view key) const {
    return flavorText(flavor, key);
  }
};

// A count for the CPU topology; 0 when unset, as nova uses it.
Result<unsigned> topologyCount(const Inputs& in, std::string_view key, bool from_image) {
  if (from_image) {
    auto text = in.image_value(key);
    if (!text) return text.error();
    if (!*text) return 0U;
    auto n = parseCount({"Image property", key}, **text, kUnlimitedCount);
    if (!n) return n.error();
    return static_cast<unsigned>(*n);
  }
  auto text = in.flavor_value(key);
  if (!text) return 0U;
  auto n = parseCount({"Flavor extra spec", key}, *text, kUnlimitedCount);
  if (!n) return n.error();
  return static_cast<unsigned>(*n);
}

struct TopologyCounts {
  unsigned sockets = 0;
  unsigned cores = 0;
  unsigned threads = 0;
  bool any() const { return sockets != 0 || cores != 0 || threads != 0; }
};

Result<TopologyCounts> topologyCounts(const Inputs& in, bool from_image, std::string_view what) {
  std::string prefix = from_image ? "hw_cpu_" : "hw:cpu_";
  TopologyCounts counts;
  for (auto [field, name] :
       {std::pair{&TopologyCounts::sockets, "sockets"}, std::pair{&TopologyCounts::cores, "cores"},
        std::pair{&TopologyCounts::threads, "threads"}}) {
    auto n = topologyCount(in, prefix + std::string(what) + name, from_image);
    if (!n) return n.error();
    counts.*field = *n;
  }
  return counts;
}

std::string describeCounts(const TopologyCounts& c) {
  std::vector<std::string> parts;
  if (c.sockets != 0) parts.push_back(fmt::format("sockets={}", c.sockets));
  if (c.cores != 0) parts.push_back(fmt::format("cores={}", c.cores));
  if (c.threads != 0) parts.push_back(fmt::format("threads={}", c.threads));
  return fmt::format("{}", fmt::join(parts, ", "));
}

// nova's get_best_cpu_topology (hardware.py): image limits may only lower the flavor's, preferred
// counts come from the image if it names any, else from the flavor (dropped when the limits
// exclude them); every sockets x cores x threads = vcpus within the limits is a candidate, ordered
// by most sockets x cores, then most sockets, then most threads. One difference: nova takes the
// best partial match when the preferred counts cannot all be met; kiln refuses, so a guest never
// silently gets a topology its image did not ask for.
Result<CpuTopology> cpuTopologyFor(const Inputs& in, unsigned vcpus) {
  auto flavor_max = topologyCounts(in, false, "max_");
  if (!flavor_max) return flavor_max.error();
  auto image_max = topologyCounts(in, true, "max_");
  if (!image_max) return image_max.error();
  for (auto [f, i, name] : {std::tuple{flavor_max->sockets, image_max->sockets, "sockets"},
                            std::tuple{flavor_max->cores, image_max->cores, "cores"},
                            std::tuple{flavor_max->threads, image_max->threads, "threads"}}) {
    if (f != 0 && i > f) {
      return Error::invalid(fmt::format(
          "Image property hw_cpu_max_{0}={1} exceeds the flavor's hw:cpu_max_{0}={2}; an image "
          "may only lower the flavor's limits.",
          name, i, f));
    }
  }
  TopologyCounts max;
  max.sockets = image_max->sockets ? image_max->sockets
                                   : (flavor_max->sockets ? flavor_max->sockets : kUnlimitedCount);
  max.cores = image_max->cores ? image_max->cores
                               : (flavor_max->cores ? flavor_max->cores : kUnlimitedCount);
  max.threads = image_max->threads ? image_max->threads
                                   : (flavor_max->threads ? flavor_max->threads : kUnlimitedCount);

  auto flavor_pref = topologyCounts(in, false, "");
  if (!flavor_pref) return flavor_pref.error();
  auto image_pref = topologyCounts(in, true, "");
  if (!image_pref) return image_pref.error();
  // Image limits that exclude the flavor's preference make nova drop that preference.
  if (flavor_pref->sockets > max.sockets || flavor_pref->cores > max.cores ||
      flavor_pref->threads > max.threads) {
    *flavor_pref = TopologyCounts{};
  }
  for (auto [want, limit, name] : {std::tuple{image_pref->sockets, max.sockets, "sockets"},
                                   std::tuple{image_pref->cores, max.cores, "cores"},
                                   std::tuple{image_pref->threads, max.threads, "threads"}}) {
    if (want > limit) {
      return Error::invalid(fmt::format(
          "Image property hw_cpu_{0}={1} exceeds the maximum of {2} {0} (hw_cpu_max_{0} or the "
          "flavor's hw:cpu_max_{0}).",
          name, want, limit));
    }
  }
  // Any image preference replaces the flavor's whole preference, as in nova.
  const TopologyCounts& preferred = image_pref->any() ? *image_pref : *flavor_pref;

  unsigned max_sockets = std::min(vcpus, max.sockets);
  unsigned max_cores = std::min(vcpus, max.cores);
  unsigned max_threads = std::min(vcpus, max.threads);
  std::vector<CpuTopology> possible;
  for (unsigned s = 1; s <= max_sockets; ++s) {
    if (vcpus % s != 0) continue;
    for (unsigned c = 1; c <= max_cores; ++c) {
      if ((vcpus / s) % c != 0) continue;
      unsigned t = vcpus / s / c;
      if (t >= 1 && t <= max_threads) possible.push_back({s, c, t});
    }
  }
  if (possible.empty()) {
    return Error::invalid(fmt::format(
        "No CPU topology gives {} vCPUs within the limits of {} sockets, {} cores and {} threads; "
        "raise hw:cpu_max_* on the flavor or hw_cpu_max_* on the image.",
        vcpus, max_sockets, max_cores, max_threads));
  }
  std::stable_sort(possible.begin(), possible.end(),
                   [](const CpuTopology& a, const CpuTopology& b) {
                     return std::tuple(a.sockets * a.cores, a.sockets, a.threads) >
                            std::tuple(b.sockets * b.cores, b.sockets, b.threads);
                   });
  for (const auto& t : possible) {
    if ((preferred.sockets == 0 || t.sockets == preferred.sockets) &&
        (preferred.cores == 0 || t.cores == preferred.cores) &&
        (preferred.threads == 0 || t.threads == preferred.threads)) {
      return t;
    }
  }
  return Error::invalid(fmt::format(
      "The {} CPU topology {} cannot give {} vCPUs: sockets x cores x threads must equal {} "
      "within the limits of {} sockets, {} cores and {} threads.",
      image_pref->any() ? "image's" : "flavor's", describeCounts(preferred), vcpus, vcpus,
      max.sockets, max.cores, max.threads));
}

bool validMachineName(std::string_view name) {
  if (name.empty() || name.size() > kMaxMachineNameLength) return false;
  auto lower_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_digit(name.front())) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return lower_digit(c) || c == '.' || c == '_' || c == '-'; });
}

// Multiqueue: the flavor's word wins over the image's, as in nova (_get_virtio_mq_settings).
Result<bool> vifMultiqueue(const Inputs& in) {
  if (auto mq = in.flavor_value("hw:vif_multiqueue_enabled")) {
    return parseBool({"Flavor extra spec", "hw:vif_multiqueue_enabled"}, *mq);
  }
  auto image_mq = in.image_value("hw_vif_multiqueue_enabled");
  if (!image_mq) return image_mq.error();
  if (!*image_mq) return false;
  return parseBool({"Image property", "hw_vif_multiqueue_enabled"}, **image_mq);
}

}  // namespace

std::string_view diskBusName(DiskBus bus) {
  switch (bus) {
    case DiskBus::kVirtio:
      return "virtio";
    case DiskBus::kScsi:
      return "scsi";
    case DiskBus::kSata:
      return "sata";
    case DiskBus::kIde:
      return "ide";
    case DiskBus::kUsb:
      return "usb";
  }
  return "virtio";
}

bool isQ35Machine(std::string_view machine) {
  return machine == "q35" || machine.starts_with("pc-q35-");
}

Result<void> checkBusesFitMachine(const HardwareSpec& hardware, std::string_view machine) {
  if (!isQ35Machine(machine)) return success();
  // QEMU's q35 has AHCI (SATA) instead of IDE; libvirt refuses an IDE disk there at define time,
  // and saying so here names the image property to change.
  if (hardware.disk_bus == DiskBus::kIde) {
    return Error::invalid(fmt::format(
        "Image property hw_disk_bus is 'ide', but machine type '{}' has no IDE controller; use "
        "sata, scsi or virtio, or a pc (i440fx) machine type.",
        machine));
  }
  if (hardware.boot_from_cdrom && hardware.cdrom_bus == DiskBus::kIde) {
    return Error::invalid(fmt::format(
        "Image property hw_cdrom_bus is 'ide', but machine type '{}' has no IDE controller; use "
        "sata, scsi or usb, or a pc (i440fx) machine type.",
        machine));
  }
  return success();
}

Result<HardwareSpec> hardwareSpecFrom(const json& image_properties,
                                      const std::map<std::string, std::string>& flavor_extra_specs,
                                      unsigned vcpus, std::string_view disk_format) {
  if (!image_properties.is_null() && !image_properties.is_object()) {
    return Error::invalid(fmt::format("Image properties must be a JSON object, not {}.",
                                      image_properties.type_name()));
  }
  if (vcpus == 0) return Error::invalid("The flavor has 0 vCPUs; an instance needs at least 1.");
  Inputs in{image_properties, flavor_extra_specs};
  HardwareSpec hw;

  // Reads an image property that must be one of `allowed`.
  auto imageEnum =
      [&](std::string_view key,
          std::initializer_list<std::string_view> allowed) -> Result<std::optional<std::string>> {
    auto text = in.image_value(key);
    if (!text) return text.error();
    if (!*text) return std::optional<std::string>();
    auto v = oneOf({"Image property", key}, **text, allowed);
    if (!v) return v.error();
    return std::optional<std::string>(*v);
  };

  if (auto arch = imageEnum("hw_architecture", {"x86_64"}); !arch) {
    return Error::invalid(arch.error().message + " This host runs x86_64 guests only.");
  }

  // Firmware and secure boot (nova hardware.get_secure_boot_constraint).
  auto firmware = imageEnum("hw_firmware_type", {"bios", "uefi"});
  if (!firmware) return firmware.error();
  if (*firmware == "uefi") hw.firmware = FirmwareType::kUefi;

  auto image_sb = imageEnum("os_secure_boot", {"required", "optional", "disabled"});
  if (!image_sb) return image_sb.error();
  std::optional<std::string> flavor_sb = in.flavor_value("os:secure_boot");
  if (flavor_sb) {
    auto v = oneOf({"Flavor extra spec", "os:secure_boot"}, *flavor_sb,
                   {"required", "optional", "disabled"});
    if (!v) return v.error();
  }
  if (*image_sb && flavor_sb && **image_sb != *flavor_sb) {
    return Error::invalid(fmt::format(
        "Image property os_secure_boot is '{}' but the flavor's extra spec os:secure_boot is "
        "'{}'; they must agree when both are set.",
        **image_sb, *flavor_sb));
  }
  std::string sb_policy = flavor_sb ? *flavor_sb : image_sb->value_or("disabled");
  // Only "required" turns secure boot on. "optional" would mean "if this host happens to have a
  // secure-boot build", so the same image would boot differently from host to host and could
  // change under a guest when the firmware package changes; nova's libvirt driver likewise acts
  // on "required" only (and the scheduler only asks for the secure-boot trait then).
  hw.secure_boot = sb_policy == "required";
  if (hw.secure_boot && hw.firmware != FirmwareType::kUefi) {
    return Error::invalid(fmt::format(
        "Secure boot is required ({}), but it needs UEFI firmware and the image's "
        "hw_firmware_type is '{}'; set hw_firmware_type=uefi.",
        flavor_sb ? "flavor extra spec os:secure_boot" : "image property os_secure_boot",
        firmware->value_or("bios")));
  }

  if (auto machine = in.image_value("hw_machine_type"); !machine) {
    return machine.error();
  } else if (*machine) {
    if (!validMachineName(**machine)) {
      return Error::invalid(fmt::format(
          "Image property hw_machine_type is {}; it must be a machine type name such as pc, q35 "
          "or pc-q35-7.2 (lower-case letters, digits, '.', '_' and '-', at most {} characters).",
          quoteValue(**machine), kMaxMachineNameLength));
    }
    hw.machine_type = **machine;
  }
  if (hw.secure_boot && !hw.machine_type.empty() && !isQ35Machine(hw.machine_type)) {
    return Error::invalid(fmt::format(
        "Secure boot needs a q35 machine type (QEMU emulates SMM there only), but the image's "
        "hw_machine_type is '{}'.",
        hw.machine_type));
  }

  // Buses (nova blockinfo.get_disk_bus_for_device_type).
  if (auto bus = in.image_value("hw_disk_bus"); !bus) {
    return bus.error();
  } else if (*bus) {
    auto parsed = parseBus({"Image property", "hw_disk_bus"}, **bus,
                           {"virtio", "scsi", "sata", "ide", "usb"});
    if (!parsed) return parsed.error();
    hw.disk_bus = *parsed;
  }
  if (auto bus = in.image_value("hw_cdrom_bus"); !bus) {
    return bus.error();
  } else if (*bus) {
    // virtio-blk has no CD-ROM device.
    auto parsed =
        parseBus({"Image property", "hw_cdrom_bus"}, **bus, {"ide", "sata", "scsi", "usb"});
    if (!parsed) return parsed.error();
    hw.cdrom_bus = *parsed;
  }
  if (auto model = in.image_value("hw_scsi_model"); !model) {
    return model.error();
  } else if (*model) {
    if (**model == "ibmvscsi") {
      return Error::invalid(
          "Image property hw_scsi_model is 'ibmvscsi', the POWER (pseries) virtual SCSI "
          "controller; x86_64 guests can use virtio-scsi, lsilogic, lsisas1068, lsisas1078, "
          "mptsas1068 or megasas.");
    }
    auto v = oneOf({"Image property", "hw_scsi_model"}, **model,
                   {"virtio-scsi", "lsilogic", "lsisas1068", "lsisas1078", "mptsas1068", "megasas",
                    "ibmvscsi"});
    if (!v) return v.error();
    hw.scsi_model = *v;
  }

  // Video: kiln offers a serial console only, so by default the guest gets no display adapter
  // at all (nova's x86 default, virtio, exists for its VNC/SPICE consoles). An image that needs
  // a display adapter to boot (some Windows installers) can still ask for one.
  auto video = imageEnum("hw_video_model", {"none", "virtio", "vga", "cirrus", "qxl", "bochs"});
  if (!video) return video.error();
  if (*video) hw.video_model = **video;

  // RNG (nova driver._add_rng_device): only when the image asks, and the flavor may forbid it.
  auto rng_model = imageEnum("hw_rng_model", {"virtio"});
  if (!rng_model) return rng_model.error();
  bool rng_allowed = true;
  if (auto allowed = in.flavor_value("hw_rng:allowed")) {
    auto b = parseBool({"Flavor extra spec", "hw_rng:allowed"}, *allowed);
    if (!b) return b.error();
    rng_allowed = *b;
  }
  RngSpec rng;
  if (auto bytes = in.flavor_value("hw_rng:rate_bytes")) {
    auto n = parseCount({"Flavor extra spec", "hw_rng:rate_bytes"}, *bytes, (1ULL << 32) - 1);
    if (!n) return n.error();
    rng.rate_bytes = *n;
  }
  if (auto period = in.flavor_value("hw_rng:rate_period")) {
    auto n = parseCount({"Flavor extra spec", "hw_rng:rate_period"}, *period, (1ULL << 32) - 1);
    if (!n) return n.error();
    // libvirt's <rate> needs bytes; a period alone limits nothing, as in nova.
    if (rng.rate_bytes != 0) rng.rate_period_ms = *n;
  }
  if (*rng_model) {
    if (!rng_allowed) {
      return Error::invalid(fmt::format(
          "The image asks for a random number generator (hw_rng_model={}), but the flavor "
          "forbids one (hw_rng:allowed={}).",
          **rng_model, *in.flavor_value("hw_rng:allowed")));
    }
    hw.rng = rng;
  }

  // The models QEMU's x86 machines offer (qemu-system-x86_64 -device help, network section).
  auto vif =
      imageEnum("hw_vif_model", {"virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet"});
  if (!vif) return vif.error();
  if (*vif) hw.vif_model = **vif;
  auto multiqueue = vifMultiqueue(in);
  if (!multiqueue) return multiqueue.error();
  // Only virtio has queues; other models ignore the setting, as nova does.
  if (*multiqueue && hw.vif_model == "virtio") hw.vif_queues = std::min(vcpus, kMaxVifQueues);

  if (auto agent = in.image_value("hw_qemu_guest_agent"); !agent) {
    return agent.error();
  } else if (*agent) {
    auto b = parseBool({"Image property", "hw_qemu_guest_agent"}, **agent);
    if (!b) return b.error();
    hw.guest_agent = *b;
  }

  // The flavor's hw:boot_menu wins over the image's hw_boot_menu, as in nova.
  if (auto menu = in.flavor_value("hw:boot_menu")) {
    auto b = parseBool({"Flavor extra spec", "hw:boot_menu"}, *menu);
    if (!b) return b.error();
    hw.boot_menu = *b;
  } else if (auto image_menu = in.image_value("hw_boot_menu"); !image_menu) {
    return image_menu.error();
  } else if (*image_menu) {
    auto b = parseBool({"Image property", "hw_boot_menu"}, **image_menu);
    if (!b) return b.error();
    hw.boot_menu = *b;
  }

  auto os_type = imageEnum("os_type", {"linux", "windows"});
  if (!os_type) return os_type.error();
  if (*os_type == "linux") hw.os_type = OsType::kLinux;
  if (*os_type == "windows") hw.os_type = OsType::kWindows;

  auto topology = cpuTopologyFor(in, vcpus);
  if (!topology) return topology.error();
  hw.cpu_topology = *topology;

  hw.boot_from_cdrom = disk_format == "iso";

  if (!hw.machine_type.empty()) {
    if (auto fits = checkBusesFitMachine(hw, hw.machine_type); !fits) return fits.error();
  }

  if (image_properties.is_object()) {
    for (const auto& [key, value] : image_properties.items()) {
      if (key.starts_with("hw_") && honouredProperties().count(key) == 0) {
        hw.ignored_properties.push_back(key);
      }
    }
    std::sort(hw.ignored_properties.begin(), hw.ignored_properties.end());
  }
  return hw;
}

}  // namespace kiln::drivers::hardware
