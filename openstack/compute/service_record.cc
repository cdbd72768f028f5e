#include "openstack/compute/service_record.h"

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/nova/request_context.h"

namespace kiln::openstack::compute {

using nlohmann::json;

ServiceRecord::ServiceRecord(nova::Conductor& conductor, std::string host)
    : conductor_(conductor), host_(std::move(host)) {}

Result<void> ServiceRecord::ensure() {
  std::lock_guard lock(mutex_);
  return ensureLocked();
}

Result<void> ServiceRecord::ensureLocked() {
  const json context = nova::adminContext();
  auto found =
      conductor_.classAction(context, "Service", "get_by_host_and_binary", json{host_, kBinary});
  if (!found && found.error().code != ErrorCode::kNotFound) return found.error();
  if (found && !found->is_null()) {
    auto service = nova::NovaObject::fromPrimitive(*found);
    if (!service) return service.error();
    if (service->integer("version") != kServiceVersion) {
      log::info("OpenStack: raising the version of service {} on {} from {} to {}", kBinary, host_,
                service->integer("version"), kServiceVersion);
      service->set("version", kServiceVersion);
      if (auto saved = conductor_.objectAction(context, *service, "save"); !saved)
        return saved.error();
    }
    service_ = std::move(service).value();
    return success();
  }
  nova::NovaObject service = nova::NovaObject::make("Service", nova::objectVersion("Service"));
  service.set("host", host_);
  service.set("binary", kBinary);
  service.set("topic", kTopic);
  service.set("report_count", 0);
  service.set("version", kServiceVersion);
  auto created = conductor_.objectAction(context, service, "create");
  if (!created) {
    return Error{created.error().code, fmt::format("creating service {} of host {} failed: {}",
                                                   kBinary, host_, created.error().message)};
  }
  log::info("OpenStack: registered service {} of host {} (id {})", kBinary, host_,
            service.integer("id"));
  service_ = std::move(service);
  return success();
}

Result<void> ServiceRecord::heartbeat() {
  std::lock_guard lock(mutex_);
  if (!service_) return ensureLocked();
  const bool was_disabled = service_->boolean("disabled");
  service_->set("report_count", service_->integer("report_count") + 1);
  auto saved = conductor_.objectAction(nova::adminContext(), *service_, "save");
  if (!saved) {
    if (saved.error().code == ErrorCode::kNotFound) {
      log::error(
          "OpenStack: the services row of {} on {} is gone (deleted through the API); making it "
          "again",
          kBinary, host_);
      service_.reset();
      return ensureLocked();
    }
    return saved.error();
  }
  if (service_->boolean("disabled") != was_disabled) {
    log::info(
        "OpenStack: service {} on {} is now {}{}", kBinary, host_,
        service_->boolean("disabled") ? "disabled" : "enabled",
        service_->text("disabled_reason").empty() ? "" : ": " + service_->text("disabled_reason"));
  }
  return success();
}

bool ServiceRecord::registered() const {
  std::lock_guard lock(mutex_);
  return service_.has_value();
}

bool ServiceRecord::disabled() const {
  std::lock_guard lock(mutex_);
  return service_ && service_->boolean("disabled");
}

std::string ServiceRecord::disabledReason() const {
  std::lock_guard lock(mutex_);
  return service_ ? service_->text("disabled_reason") : std::string();
}

std::int64_t ServiceRecord::id() const {
  std::lock_guard lock(mutex_);
  return service_ ? service_->integer("id") : 0;
}

}  // namespace kiln::openstack::compute
