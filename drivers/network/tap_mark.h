#pragma once
// The mark kiln puts on every tap it makes, in the interface alias (IFLA_IFALIAS, what
// `ip link show` prints as "alias"): "kiln:<instance uuid>:<port id>". The alias survives the
// agent, is visible to operators, and no L2 agent sets one of this form, so the orphan sweep can
// prove a tap is kiln's before it deletes it.

#include <optional>
#include <string>
#include <string_view>

namespace kiln::drivers::network {

inline constexpr std::string_view kTapMarkPrefix = "kiln:";

struct TapMark {
  std::string instance_uuid;
  std::string port_id;
  bool operator==(const TapMark&) const = default;
};

std::string formatTapMark(const TapMark& mark);
// Nothing when the alias is not a kiln mark: another prefix, an empty uuid or port, or a ':'
// inside the port id (uuids and Neutron port ids have none).
std::optional<TapMark> parseTapMark(std::string_view alias);

}  // namespace kiln::drivers::network
