#include "openstack/nova/request_context.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>

#include "common/uuid.h"

namespace kiln::openstack::nova {

std::string newRequestId() { return "req-" + randomUuid(); }

nlohmann::json adminContext() {
  const auto now = std::chrono::system_clock::now();
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
      1000000;
  // The keys and values of get_admin_context().to_dict() in nova 26 (Zed).
  nlohmann::json context = {
      {"auth_token", nullptr},
      {"domain", nullptr},
      {"global_request_id", nullptr},
      {"is_admin", true},
      {"is_admin_project", true},
      {"project", nullptr},
      {"project_domain", nullptr},
      {"project_id", nullptr},
      {"project_name", nullptr},
      {"quota_class", nullptr},
      {"read_deleted", "no"},
      {"read_only", false},
      {"remote_address", nullptr},
      {"request_id", newRequestId()},
      {"resource_uuid", nullptr},
      {"roles", nlohmann::json::array()},
      {"service_catalog", nlohmann::json::array()},
      {"show_deleted", false},
      {"system_scope", nullptr},
      {"timestamp", fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06d}",
                                fmt::gmtime(std::chrono::system_clock::to_time_t(now)), micros)},
      {"user", nullptr},
      {"user_domain", nullptr},
      {"user_id", nullptr},
      {"user_identity", "- - - - -"},
      {"user_name", nullptr},
  };
  return context;
}

std::string requestIdOf(const nlohmann::json& context) {
  if (!context.is_object()) return {};
  const auto it = context.find("request_id");
  return it != context.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace kiln::openstack::nova
