#pragma once
// Placement's records as kiln holds them: resource providers, their inventories, allocations and
// usages, keyed by resource class ("VCPU") and consumer uuid as in Placement's JSON.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace kiln::openstack::placement {

// The standard resource classes (os-resource-classes) a compute node reports.
inline constexpr std::string_view kVcpu = "VCPU";
inline constexpr std::string_view kMemoryMb = "MEMORY_MB";
inline constexpr std::string_view kDiskGb = "DISK_GB";

struct ResourceProvider {
  std::string uuid;
  std::string name;
  // Placement's counter of changes to the provider: every write must name the generation it was
  // computed from, and is refused (409) when another writer came first.
  std::int64_t generation = 0;
  std::string root_provider_uuid;
  std::string parent_provider_uuid;  // empty for a root provider (a compute node)
};

// One resource class's inventory, with Placement's field names. What can be allocated is
// (total - reserved) * allocation_ratio, in pieces of min_unit..max_unit by step_size.
struct Inventory {
  std::int64_t total = 0;
  std::int64_t reserved = 0;
  std::int64_t min_unit = 1;
  std::int64_t max_unit = 1;
  std::int64_t step_size = 1;
  double allocation_ratio = 1.0;

  bool operator==(const Inventory&) const = default;
};

using Inventories = std::map<std::string, Inventory, std::less<>>;

// Whether Placement's copy `held` already says what `wanted` does. Allocation ratios are
// compared to a relative 1e-6, not exactly: Placement keeps them in a single-precision column
// on MySQL, so 1.1 comes back as 1.100000023841858.
bool sameInventories(const Inventories& held, const Inventories& wanted);

// GET /resource_providers/{uuid}/allocations: what each consumer holds of this provider.
struct ProviderAllocations {
  std::int64_t generation = 0;
  std::map<std::string, std::map<std::string, std::int64_t, std::less<>>, std::less<>> consumers;
};

// GET /resource_providers/{uuid}/usages: the sum of all allocations, per resource class.
struct ProviderUsages {
  std::int64_t generation = 0;
  std::map<std::string, std::int64_t, std::less<>> usages;
};

}  // namespace kiln::openstack::placement
