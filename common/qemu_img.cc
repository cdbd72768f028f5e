#include "common/qemu_img.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace kiln {

Result<CommandOutput> QemuImg::run(std::vector<std::string> args, const ResourceLimits& limits) {
  CommandSpec spec;
  spec.argv.push_back(binary_);
  for (auto& a : args) spec.argv.push_back(std::move(a));
  spec.limits = limits;
  spec.timeout = std::chrono::seconds(limits.cpu_seconds.value_or(600) * 2 + 60);
  auto out = runner_.run(spec);
  if (!out) return out.error();
  if (!out->succeeded()) {
    bool no_space = out->stderr_text.find("No space left") != std::string::npos;
    return Error{no_space ? ErrorCode::kResourceExhausted : ErrorCode::kInternal,
                 describeFailure(spec, *out)};
  }
  return out;
}

Result<QemuImgInfo> QemuImg::info(const std::string& path, const std::string& format) {
  auto out = run({"info", "-f", format, "--output=json", path}, limits_.inspect);
  if (!out) return out.error();
  auto doc = nlohmann::json::parse(out->stdout_text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("virtual-size") ||
      !doc["virtual-size"].is_number_unsigned() || !doc.contains("format") ||
      !doc["format"].is_string()) {
    return Error::internal(fmt::format("qemu-img info gave no usable answer for '{}'", path));
  }
  QemuImgInfo info;
  info.format = doc["format"].get<std::string>();
  info.virtual_size = doc["virtual-size"].get<std::uint64_t>();
  if (doc.contains("backing-filename") && doc["backing-filename"].is_string()) {
    info.backing_filename = doc["backing-filename"].get<std::string>();
  }
  const auto& specific = doc.value("format-specific", nlohmann::json::object());
  if (specific.is_object() && specific.contains("data") && specific["data"].is_object() &&
      specific["data"].contains("data-file") && specific["data"]["data-file"].is_string()) {
    info.data_file = specific["data"]["data-file"].get<std::string>();
  }
  return info;
}

Result<void> QemuImg::create(const std::string& path, const std::string& format,
                             std::uint64_t size_bytes, const std::string& backing_path,
                             const std::string& backing_format) {
  std::vector<std::string> args = {"create", "-q", "-f", format};
  if (!backing_path.empty()) {
    args.insert(args.end(), {"-F", backing_format, "-b", backing_path});
  }
  args.insert(args.end(), {path, std::to_string(size_bytes)});
  auto out = run(std::move(args), limits_.inspect);
  if (!out) return out.error();
  return success();
}

Result<void> QemuImg::createEncrypted(
    const std::string& path, std::uint64_t size_bytes, const std::string& secret_file,
    const std::vector<std::pair<std::string, std::string>>& encrypt_options) {
  // QEMU's option syntax escapes a comma by doubling it; a value with one would split the list.
  auto quoted = [](const std::string& v) {
    std::string out;
    for (char c : v) {
      out += c;
      if (c == ',') out += ',';
    }
    return out;
  };
  std::string options = "encrypt.format=luks,encrypt.key-secret=sec0";
  for (const auto& [name, value] : encrypt_options) {
    options += fmt::format(",encrypt.{}={}", name, quoted(value));
  }
  auto out =
      run({"create", "-q", "-f", "qcow2", "--object", "secret,id=sec0,file=" + quoted(secret_file),
           "-o", options, path, std::to_string(size_bytes)},
          limits_.inspect);
  if (!out) return out.error();
  return success();
}

Result<void> QemuImg::convert(const std::string& src, const std::string& src_format,
                              const std::string& dst, const std::string& dst_format) {
  auto out = run({"convert", "-q", "-f", src_format, "-O", dst_format, src, dst}, limits_.convert);
  if (!out) return out.error();
  return success();
}

Result<void> QemuImg::exportImage(const std::string& src, const std::string& src_format,
                                  const std::string& dst, const std::string& dst_format) {
  auto out =
      run({"convert", "-q", "-U", "-f", src_format, "-O", dst_format, src, dst}, limits_.convert);
  if (!out) return out.error();
  return success();
}

Result<void> QemuImg::resize(const std::string& path, const std::string& format,
                             std::uint64_t size_bytes) {
  auto out = run({"resize", "-q", "-f", format, path, std::to_string(size_bytes)}, limits_.inspect);
  if (!out) return out.error();
  return success();
}

}  // namespace kiln
