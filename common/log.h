#pragma once
// A small logging facade. Lines go to stderr; under systemd (JOURNAL_STREAM set) each line carries
// a syslog priority prefix so journald records the level. Never log a secret: callers pass
// already-redacted values.

#include <fmt/format.h>

#include <string_view>

namespace kiln::log {

enum class Level { kDebug = 7, kInfo = 6, kWarning = 4, kError = 3 };

void setMinLevel(Level level);
bool enabled(Level level);
void write(Level level, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kDebug)) write(Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kWarning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kiln::log
