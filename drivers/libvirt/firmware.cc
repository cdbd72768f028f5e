#include "drivers/libvirt/firmware.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <pugixml.hpp>
#include <set>
#include <system_error>

#include "common/fs.h"

namespace kiln::drivers::libvirt {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

constexpr std::uint64_t kMaxDescriptorBytes = 1 << 20;

struct Descriptor {
  std::string path;
  std::string executable;
  std::string nvram_template;
  std::set<std::string> features;
};

std::string stringAt(const json& j, std::initializer_list<const char*> keys) {
  const json* node = &j;
  for (const char* key : keys) {
    if (!node->is_object()) return "";
    auto it = node->find(key);
    if (it == node->end()) return "";
    node = &*it;
  }
  return node->is_string() ? node->get<std::string>() : "";
}

bool listHas(const json& j, const char* key, std::string_view value) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return false;
  return std::any_of(it->begin(), it->end(),
                     [&](const json& v) { return v.is_string() && v.get<std::string>() == value; });
}

// A descriptor kiln can use: UEFI, split flash (code + per-guest varstore from a template), for
// x86_64. Anything else (BIOS, memory-mapped "stateless" builds, other architectures) is skipped.
std::optional<Descriptor> parseDescriptor(const std::string& path, const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  if (!listHas(j, "interface-types", "uefi")) return std::nullopt;
  if (stringAt(j, {"mapping", "device"}) != "flash") return std::nullopt;
  std::string mode = stringAt(j, {"mapping", "mode"});
  if (!mode.empty() && mode != "split") return std::nullopt;
  auto targets = j.find("targets");
  if (targets == j.end() || !targets->is_array()) return std::nullopt;
  bool x86_64 = std::any_of(targets->begin(), targets->end(), [](const json& t) {
    return t.is_object() && stringAt(t, {"architecture"}) == "x86_64";
  });
  if (!x86_64) return std::nullopt;
  Descriptor d;
  d.path = path;
  d.executable = stringAt(j, {"mapping", "executable", "filename"});
  d.nvram_template = stringAt(j, {"mapping", "nvram-template", "filename"});
  if (d.executable.empty() || d.nvram_template.empty()) return std::nullopt;
  if (auto f = j.find("features"); f != j.end() && f->is_array()) {
    for (const auto& v : *f) {
      if (v.is_string()) d.features.insert(v.get<std::string>());
    }
  }
  return d;
}

// File name -> path, the first directory that has a name winning; ordered by file name.
std::map<std::string, std::string> descriptorFiles(const std::vector<std::string>& dirs) {
  std::map<std::string, std::string> files;
  for (const auto& dir : dirs) {
    std::error_code ec;
    for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const auto& p = it->path();
      if (p.extension() != ".json") continue;
      files.emplace(p.filename().string(), p.string());
    }
  }
  return files;
}

std::vector<Descriptor> readDescriptors(const std::vector<std::string>& dirs) {
  std::vector<Descriptor> out;
  for (const auto& [name, path] : descriptorFiles(dirs)) {
    auto text = kiln::fs::readFile(path, kMaxDescriptorBytes);
    // An empty file masks the packaged descriptor of the same name; an unreadable one describes
    // nothing kiln could use either.
    if (!text || text->empty()) continue;
    if (auto d = parseDescriptor(path, *text)) out.push_back(std::move(*d));
  }
  return out;
}

bool exists(const std::string& path) {
  std::error_code ec;
  return stdfs::is_regular_file(path, ec);
}

bool samePath(const std::string& a, const std::string& b) {
  std::error_code ec1;
  std::error_code ec2;
  auto ca = stdfs::weakly_canonical(a, ec1);
  auto cb = stdfs::weakly_canonical(b, ec2);
  if (ec1 || ec2) return a == b;
  return ca == cb;
}

std::string dirList(const std::vector<std::string>& dirs) {
  return fmt::format("{}", fmt::join(dirs, " and "));
}

Result<FirmwareChoice> fromOverride(const std::vector<std::string>& dirs, bool secure_boot,
                                    const std::string& loader, const std::string& nvram_template) {
  if (loader.empty() != nvram_template.empty()) {
    return Error::invalid(fmt::format(
        "[libvirt] uefi_loader and uefi_nvram_template must be set together, but only {} is set.",
        loader.empty() ? "uefi_nvram_template" : "uefi_loader"));
  }
  for (auto [path, option] :
       {std::pair{&loader, "uefi_loader"}, std::pair{&nvram_template, "uefi_nvram_template"}}) {
    if (!exists(*path)) {
      return Error::unavailable(fmt::format(
          "The UEFI firmware file '{}' set by [libvirt] {} does not exist.", *path, option));
    }
  }
  FirmwareChoice choice{loader, nvram_template, secure_boot, secure_boot, ""};
  // When a descriptor describes the same build, trust what it says about SMM and secure boot.
  // The classic /usr/share/OVMF/OVMF_CODE.fd is in none on Debian 12: it is the 2 MB build
  // without secure boot or SMM, and it pairs with OVMF_VARS.fd.
  for (const auto& d : readDescriptors(dirs)) {
    if (!samePath(d.executable, loader)) continue;
    if (secure_boot && d.features.count("secure-boot") == 0) {
      return Error::unavailable(fmt::format(
          "The UEFI loader '{}' set by [libvirt] uefi_loader has no secure boot (per {}), and "
          "this instance requires secure boot.",
          loader, d.path));
    }
    choice.requires_smm = d.features.count("requires-smm") != 0;
    choice.descriptor_path = d.path;
    break;
  }
  return choice;
}

}  // namespace

std::vector<std::string> defaultFirmwareDescriptorDirs() {
  return {"/etc/qemu/firmware", "/usr/share/qemu/firmware"};
}

Result<FirmwareChoice> chooseUefiFirmware(const std::vector<std::string>& descriptor_dirs,
                                          bool secure_boot, const std::string& loader_override,
                                          const std::string& nvram_template_override) {
  if (!loader_override.empty() || !nvram_template_override.empty()) {
    return fromOverride(descriptor_dirs, secure_boot, loader_override, nvram_template_override);
  }
  std::vector<Descriptor> descriptors = readDescriptors(descriptor_dirs);
  auto fits = [&](const Descriptor& d) {
    bool secure = d.features.count("secure-boot") != 0;
    if (!secure_boot) return !secure;
    return secure && d.features.count("requires-smm") != 0;
  };
  const Descriptor* chosen = nullptr;
  for (const auto& d : descriptors) {
    if (!fits(d)) continue;
    if (!secure_boot || d.features.count("enrolled-keys") != 0) {
      chosen = &d;
      break;
    }
    if (chosen == nullptr) chosen = &d;  // a secure build without keys, if nothing better
  }
  if (chosen == nullptr) {
    return Error::unavailable(fmt::format(
        "This host has no UEFI firmware {} secure boot (install ovmf); no x86_64 descriptor in {} "
        "fits.",
        secure_boot ? "with" : "without", dirList(descriptor_dirs)));
  }
  for (const std::string* file : {&chosen->executable, &chosen->nvram_template}) {
    if (!exists(*file)) {
      return Error::unavailable(
          fmt::format("The UEFI firmware file '{}' named by {} does not exist (reinstall ovmf).",
                      *file, chosen->path));
    }
  }
  return FirmwareChoice{chosen->executable, chosen->nvram_template, secure_boot,
                        chosen->features.count("requires-smm") != 0, chosen->path};
}

bool machineSupported(const std::string& caps_xml, const std::string& arch,
                      const std::string& domain_type, const std::string& machine) {
  if (machine.empty()) return false;
  pugi::xml_document doc;
  if (!doc.load_string(caps_xml.c_str())) return false;
  auto named = [&](pugi::xml_node parent) {
    for (auto m : parent.children("machine")) {
      if (machine == m.child_value() || machine == m.attribute("canonical").value()) return true;
    }
    return false;
  };
  for (auto guest : doc.child("capabilities").children("guest")) {
    if (std::string_view(guest.child_value("os_type")) != "hvm") continue;
    for (auto a : guest.children("arch")) {
      if (arch != a.attribute("name").value()) continue;
      for (auto domain : a.children("domain")) {
        if (domain_type != domain.attribute("type").value()) continue;
        // A <domain> with its own machine list overrides the arch-wide list for that type.
        if (domain.child("machine")) {
          if (named(domain)) return true;
        } else if (named(a)) {
          return true;
        }
      }
    }
  }
  return false;
}

}  // namespace kiln::drivers::libvirt
