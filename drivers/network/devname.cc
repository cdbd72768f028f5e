#include "drivers/network/devname.h"

#include <fmt/format.h>

namespace kiln::drivers::network {

Result<void> checkDevname(std::string_view name, std::string_view what) {
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  };
  bool ok =
      !name.empty() && name.size() <= 15 && name.front() != '-' && name != "." && name != "..";
  for (char c : name) ok = ok && allowed(c);
  if (!ok) {
    return Error::invalid(fmt::format(
        "The {} name '{}' is not 1 to 15 characters of letters, digits, '_', '.' and '-' "
        "(not starting with '-', not '.' or '..')",
        what, name));
  }
  return success();
}

}  // namespace kiln::drivers::network
