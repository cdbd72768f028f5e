#include "config/flavors.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <set>

#include "common/fs.h"

namespace kiln::config {
namespace {

template <typename T>
Result<T> readNumber(const YAML::Node& node, const char* key, std::string_view what, bool required,
                     T fallback) {
  const YAML::Node field = node[key];
  if (!field) {
    if (required) return Error::invalid(fmt::format("{} has no '{}'", what, key));
    return fallback;
  }
  if (!field.IsScalar()) return Error::invalid(fmt::format("{}: '{}' must be a number", what, key));
  const std::string& text = field.Scalar();
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
      text.size() > 18) {
    return Error::invalid(
        fmt::format("{}: '{}' must be a non-negative whole number, not '{}'", what, key, text));
  }
  return static_cast<T>(std::stoull(text));
}

}  // namespace

std::optional<Flavor> FlavorCatalog::find(std::string_view name) const {
  for (const auto& f : flavors_) {
    if (f.name == name) return f;
  }
  return std::nullopt;
}

Result<void> validateFlavor(const Flavor& f, std::string_view what) {
  if (f.vcpus < 1 || f.vcpus > kMaxVcpus) {
    return Error::invalid(fmt::format("{}: vcpus must be between 1 and {}", what, kMaxVcpus));
  }
  if (f.memory_mb < kMinMemoryMb || f.memory_mb > kMaxMemoryMb) {
    return Error::invalid(
        fmt::format("{}: memory_mb must be between {} and {}", what, kMinMemoryMb, kMaxMemoryMb));
  }
  if (f.root_gb > kMaxDiskGb || f.ephemeral_gb > kMaxDiskGb) {
    return Error::invalid(
        fmt::format("{}: root_gb and ephemeral_gb must be at most {}", what, kMaxDiskGb));
  }
  return success();
}

Result<FlavorCatalog> parseFlavors(std::string_view yaml_text, std::string_view source_name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return Error::invalid(fmt::format("Cannot parse flavor file '{}': {}", source_name, e.what()));
  }
  // operator[] on a scalar or a sequence throws, so the shape is checked before the lookup.
  const YAML::Node list = root.IsMap() ? root["flavors"] : YAML::Node();
  if (!root.IsMap() || !list || !list.IsSequence()) {
    return Error::invalid(
        fmt::format("Flavor file '{}' must hold a list under the key 'flavors'", source_name));
  }
  std::vector<Flavor> flavors;
  std::set<std::string> names;
  try {
    for (std::size_t i = 0; i < list.size(); ++i) {
      const YAML::Node entry = list[i];
      std::string what = fmt::format("Flavor #{} in '{}'", i + 1, source_name);
      if (!entry.IsMap() || !entry["name"] || !entry["name"].IsScalar()) {
        return Error::invalid(fmt::format("{} has no name", what));
      }
      Flavor f;
      f.name = entry["name"].Scalar();
      what = fmt::format("Flavor '{}' in '{}'", f.name, source_name);
      if (f.name.empty() || f.name.size() > 255) {
        return Error::invalid(fmt::format("{}: the name must be 1 to 255 bytes", what));
      }
      if (!names.insert(f.name).second) {
        return Error::invalid(fmt::format("{} is defined more than once", what));
      }
      auto vcpus = readNumber<unsigned>(entry, "vcpus", what, true, 0);
      auto memory = readNumber<std::uint64_t>(entry, "memory_mb", what, true, 0);
      auto root_gb = readNumber<std::uint64_t>(entry, "root_gb", what, true, 0);
      auto eph = readNumber<std::uint64_t>(entry, "ephemeral_gb", what, false, 0);
      for (const Error* e :
           {vcpus.ok() ? nullptr : &vcpus.error(), memory.ok() ? nullptr : &memory.error(),
            root_gb.ok() ? nullptr : &root_gb.error(), eph.ok() ? nullptr : &eph.error()}) {
        if (e != nullptr) return *e;
      }
      f.vcpus = *vcpus;
      f.memory_mb = *memory;
      f.root_gb = *root_gb;
      f.ephemeral_gb = *eph;
      if (const YAML::Node specs = entry["extra_specs"]) {
        if (!specs.IsMap())
          return Error::invalid(fmt::format("{}: extra_specs must be a map", what));
        for (const auto& kv : specs) {
          f.extra_specs[kv.first.as<std::string>()] = kv.second.as<std::string>();
        }
      }
      if (auto v = validateFlavor(f, what); !v) return std::move(v).error();
      flavors.push_back(std::move(f));
    }
  } catch (const YAML::Exception& e) {
    return Error::invalid(fmt::format("Cannot read flavor file '{}': {}", source_name, e.what()));
  }
  return FlavorCatalog(std::move(flavors));
}

Result<FlavorCatalog> loadFlavorFile(const std::string& path) {
  auto text = fs::readFile(path, 4 * 1024 * 1024);
  if (!text) {
    return Error::invalid(fmt::format("Cannot read flavor file: {}", text.error().message));
  }
  return parseFlavors(*text, path);
}

}  // namespace kiln::config
