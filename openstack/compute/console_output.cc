// get_console_output, a call `openstack console log show` makes: the serial console kiln keeps
// for the instance, its last tail_length lines (all of it when null), as nova's libvirt driver
// answers from its console.log. At most 1 MiB is read from the end of the file.

#include <fmt/format.h>

#include "openstack/compute/instance_operations.h"

namespace kiln::openstack::compute {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

namespace {
constexpr std::uint64_t kMaxConsoleBytes = 1 << 20;

// The last `lines` lines of `text` (a final newline does not start another line).
std::string lastLines(const std::string& text, std::int64_t lines) {
  if (lines <= 0) return std::string();
  std::size_t end = text.size();
  if (end > 0 && text[end - 1] == '\n') --end;
  std::size_t pos = end;
  for (std::int64_t seen = 0; pos > 0; --pos) {
    if (text[pos - 1] == '\n' && ++seen == lines) break;
  }
  return text.substr(pos);
}
}  // namespace

RpcOutcome getConsoleOutput(const InstanceOperations& ops, const RpcRequest& request) {
  auto object = nova::NovaObject::fromPrimitive(request.args.value("instance", json()));
  if (!object) {
    return RpcOutcome::fail("InstanceNotFound", "nova.exception", object.error().message);
  }
  const std::string uuid = object->text("uuid");
  auto text = ops.instances.consoleOutput(uuid, kMaxConsoleBytes);
  if (!text) {
    if (text.error().code == ErrorCode::kNotFound) {
      return RpcOutcome::fail("InstanceNotFound", "nova.exception",
                              fmt::format("Instance {} could not be found.", uuid),
                              json{{"instance_id", uuid}});
    }
    return RpcOutcome::fail("ConsoleNotAvailable", "nova.exception",
                            "Guest does not have a console available.");
  }
  const json& tail = request.args.value("tail_length", json());
  if (tail.is_number_integer()) return RpcOutcome::ok(lastLines(*text, tail.get<std::int64_t>()));
  return RpcOutcome::ok(*text);
}

}  // namespace kiln::openstack::compute
