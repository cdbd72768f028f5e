#pragma once
// The flavor catalog (config/flavors.yaml): named sizes a launch request may refer to.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace kiln::config {

struct Flavor {
  std::string name;  // empty for a flavor given inline in a request
  unsigned vcpus = 1;
  std::uint64_t memory_mb = 512;
  std::uint64_t root_gb = 1;
  std::uint64_t ephemeral_gb = 0;
  std::map<std::string, std::string> extra_specs;
};

// Bounds shared by the catalog and by inline flavors in requests.
inline constexpr unsigned kMaxVcpus = 1024;
inline constexpr std::uint64_t kMinMemoryMb = 16;
inline constexpr std::uint64_t kMaxMemoryMb = 16ULL * 1024 * 1024;
inline constexpr std::uint64_t kMaxDiskGb = 64ULL * 1024;

class FlavorCatalog {
 public:
  FlavorCatalog() = default;
  explicit FlavorCatalog(std::vector<Flavor> flavors) : flavors_(std::move(flavors)) {}
  const std::vector<Flavor>& all() const { return flavors_; }
  std::optional<Flavor> find(std::string_view name) const;

 private:
  std::vector<Flavor> flavors_;
};

Result<FlavorCatalog> loadFlavorFile(const std::string& path);
Result<FlavorCatalog> parseFlavors(std::string_view yaml_text, std::string_view source_name);

// Checks the bounds above; `what` names the flavor in messages.
Result<void> validateFlavor(const Flavor& flavor, std::string_view what);

}  // namespace kiln::config
