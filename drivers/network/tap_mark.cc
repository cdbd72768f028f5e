#include "drivers/network/tap_mark.h"

#include <fmt/format.h>

namespace kiln::drivers::network {

std::string formatTapMark(const TapMark& mark) {
  return fmt::format("{}{}:{}", kTapMarkPrefix, mark.instance_uuid, mark.port_id);
}

std::optional<TapMark> parseTapMark(std::string_view alias) {
  if (!alias.starts_with(kTapMarkPrefix)) return std::nullopt;
  std::string_view rest = alias.substr(kTapMarkPrefix.size());
  std::size_t colon = rest.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size()) {
    return std::nullopt;
  }
  std::string_view port = rest.substr(colon + 1);
  if (port.find(':') != std::string_view::npos) return std::nullopt;
  return TapMark{std::string(rest.substr(0, colon)), std::string(port)};
}

}  // namespace kiln::drivers::network
