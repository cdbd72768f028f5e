#include "openstack/placement/placement_types.h"

#include <algorithm>
#include <cmath>

namespace kiln::openstack::placement {

namespace {

bool sameRatio(double a, double b) {
  return std::fabs(a - b) <= 1e-6 * std::max({1.0, std::fabs(a), std::fabs(b)});
}

}  // namespace

bool sameInventories(const Inventories& held, const Inventories& wanted) {
  if (held.size() != wanted.size()) return false;
  return std::equal(held.begin(), held.end(), wanted.begin(), [](const auto& a, const auto& b) {
    const Inventory& x = a.second;
    const Inventory& y = b.second;
    return a.first == b.first && x.total == y.total && x.reserved == y.reserved &&
           x.min_unit == y.min_unit && x.max_unit == y.max_unit && x.step_size == y.step_size &&
           sameRatio(x.allocation_ratio, y.allocation_ratio);
  });
}

}  // namespace kiln::openstack::placement
