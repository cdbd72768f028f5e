#include "openstack/compute/nova_instance.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>

#include "common/log.h"

namespace kiln::openstack::compute {

using nlohmann::json;

// InstanceFault.message is a String(255) column.
constexpr std::size_t kFaultMessageMax = 255;

std::string novaTimestamp() {
  const auto now =
      std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", now);
}

NovaInstance::NovaInstance(nova::Conductor& conductor, json context, nova::NovaObject instance,
                           std::string host)
    : conductor_(conductor),
      context_(std::move(context)),
      instance_(std::move(instance)),
      host_(std::move(host)),
      uuid_(instance_.text("uuid")) {}

Result<void> NovaInstance::save(const json& fields,
                                std::optional<std::vector<json>> expected_task_state) {
  for (const auto& [field, value] : fields.items()) instance_.set(field, value);
  json kwargs = json::object();
  if (expected_task_state) kwargs["expected_task_state"] = *expected_task_state;
  auto saved = conductor_.objectAction(context_, instance_, "save", json::array(), kwargs);
  if (!saved) return saved.error();
  instance_.resetChanges();
  return success();
}

Result<void> NovaInstance::eventStart(const std::string& event) {
  auto started =
      conductor_.classAction(context_, "InstanceActionEvent", "event_start", json{uuid_, event},
                             json{{"want_result", false}, {"host", host_}});
  if (!started) return started.error();
  return success();
}

Result<void> NovaInstance::eventFinish(const std::string& event, const std::string& failure) {
  json kwargs = {{"want_result", false}};
  if (failure.empty()) {
    kwargs["exc_val"] = nullptr;
    kwargs["exc_tb"] = nullptr;
  } else {
    kwargs["exc_val"] = failure;
    kwargs["exc_tb"] = fmt::format("kilnd on {}: {}\n", host_, failure);
  }
  auto finished = conductor_.classAction(context_, "InstanceActionEvent",
                                         "event_finish_with_failure", json{uuid_, event}, kwargs);
  if (!finished) return finished.error();
  return success();
}

std::optional<NovaInstance> NovaInstance::fromRequest(nova::Conductor& conductor,
                                                      const messaging::RpcRequest& request,
                                                      const std::string& host) {
  auto object = nova::NovaObject::fromPrimitive(request.args.value("instance", nlohmann::json()));
  if (!object) {
    log::error("OpenStack: {} without a valid instance: {}", request.method,
               object.error().message);
    return std::nullopt;
  }
  return NovaInstance(conductor, request.context, std::move(object).value(), host);
}

void NovaInstance::recordStart(const std::string& event) {
  if (auto started = eventStart(event); !started) {
    log::warn("OpenStack: instance {}: recording the start of {} failed: {}", uuid_, event,
              started.error().message);
  }
}

void NovaInstance::recordFinish(const std::string& event, const std::string& failure) {
  if (auto finished = eventFinish(event, failure); !finished) {
    log::warn("OpenStack: instance {}: recording the end of {} failed: {}", uuid_, event,
              finished.error().message);
  }
}

void NovaInstance::recordFault(const std::string& message, int code) {
  if (auto fault = addFault(message, "", code); !fault) {
    log::error("OpenStack: instance {}: recording the fault failed: {}", uuid_,
               fault.error().message);
  }
}

Result<void> NovaInstance::addFault(const std::string& message, const std::string& details,
                                    int code) {
  nova::NovaObject fault =
      nova::NovaObject::make("InstanceFault", nova::objectVersion("InstanceFault"));
  fault.set("instance_uuid", uuid_);
  fault.set("code", code);
  fault.set("message", message.substr(0, kFaultMessageMax));
  fault.set("details", details.empty() ? message : details);
  fault.set("host", host_);
  auto created = conductor_.objectAction(context_, fault, "create");
  if (!created) return created.error();
  return success();
}

Result<void> NovaInstance::destroy() {
  auto destroyed = conductor_.objectAction(context_, instance_, "destroy");
  if (!destroyed) return destroyed.error();
  return success();
}

}  // namespace kiln::openstack::compute
