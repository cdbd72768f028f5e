#pragma once
// This host's row in Nova's services table, through the conductor, as nova/service.py keeps it:
// at start Service.get_by_host_and_binary(host, "nova-compute"), created when absent (topic
// "compute", report_count 0) and its version raised to kServiceVersion when older; then every
// report_interval a heartbeat (report_count + 1, saved), which is what makes
// `openstack compute service list` show the host up. The save's answer carries what an operator
// changed meanwhile (disabled, its reason), so disabled() follows `compute service set`.

#include <mutex>
#include <optional>
#include <string>

#include "common/result.h"
#include "openstack/nova/conductor.h"
#include "openstack/nova/nova_object.h"

namespace kiln::openstack::compute {

// nova/objects/service.py SERVICE_VERSION in Zed: below 61 (Yoga) Nova's services refuse to
// start beside this host, and the scheduler sends 6.x RPC only to services at 57 or later.
inline constexpr int kServiceVersion = 64;
inline constexpr const char* kBinary = "nova-compute";
inline constexpr const char* kTopic = "compute";

class ServiceRecord {
 public:
  ServiceRecord(nova::Conductor& conductor, std::string host);

  // Finds or creates the row; safe to call again (after the row was deleted through the API).
  Result<void> ensure();
  // One heartbeat; when the row is gone (deleted through the API), it is made again.
  Result<void> heartbeat();

  bool registered() const;
  bool disabled() const;
  std::string disabledReason() const;
  std::int64_t id() const;  // 0 before ensure()
  const std::string& host() const { return host_; }

 private:
  Result<void> ensureLocked();
  nova::Conductor& conductor_;
  const std::string host_;
  mutable std::mutex mutex_;
  std::optional<nova::NovaObject> service_;
};

}  // namespace kiln::openstack::compute
