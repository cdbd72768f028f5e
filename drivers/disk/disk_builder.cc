#include "drivers/disk/disk_builder.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace kiln::drivers::disk {

Result<CommandOutput> DiskBuilder::qemuImg(std::vector<std::string> args) {
  CommandSpec spec;
  spec.argv.push_back(options_.binary);
  for (auto& a : args) spec.argv.push_back(std::move(a));
  spec.limits = options_.limits;
  spec.timeout = std::chrono::minutes(5);
  auto out = runner_.run(spec);
  if (!out) return out.error();
  if (!out->succeeded()) {
    bool no_space = out->stderr_text.find("No space left") != std::string::npos;
    return Error{no_space ? ErrorCode::kResourceExhausted : ErrorCode::kInternal,
                 describeFailure(spec, *out)};
  }
  return out;
}

Result<void> DiskBuilder::createOverlay(const std::string& path, const std::string& base_path,
                                        const std::string& base_format, std::uint64_t size_bytes) {
  auto out = qemuImg({"create", "-q", "-f", "qcow2", "-F", base_format, "-b", base_path, path,
                      std::to_string(size_bytes)});
  if (!out) return out.error();
  return success();
}

Result<void> DiskBuilder::createBlank(const std::string& path, const std::string& format,
                                      std::uint64_t size_bytes) {
  auto out = qemuImg({"create", "-q", "-f", format, path, std::to_string(size_bytes)});
  if (!out) return out.error();
  return success();
}

Result<std::uint64_t> DiskBuilder::virtualSize(const std::string& path, const std::string& format) {
  auto out = qemuImg({"info", "-f", format, "--output=json", path});
  if (!out) return out.error();
  auto info = nlohmann::json::parse(out->stdout_text, nullptr, false);
  if (info.is_discarded() || !info.contains("virtual-size") ||
      !info["virtual-size"].is_number_unsigned()) {
    return Error::internal(fmt::format("qemu-img info gave no virtual size for '{}'", path));
  }
  return info["virtual-size"].get<std::uint64_t>();
}

}  // namespace kiln::drivers::disk
