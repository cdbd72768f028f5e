#pragma once
// The OpenStack front's builds and deletes, run by kilnd's one lifecycle (InstanceManager), as
// kiln's own API runs them: a build becomes the launch request POST /v1/instances would make
// (validated by the same parser, the flavor inline), and the call waits for the record to settle.

#include "agent/lifecycle/instance_manager.h"
#include "config/flavors.h"
#include "openstack/compute/instance_host.h"

namespace kiln::agent {

class OpenStackInstances final : public openstack::compute::InstanceHost {
 public:
  OpenStackInstances(lifecycle::InstanceManager& manager, const config::FlavorCatalog& flavors);

  Result<openstack::compute::BuildOutcome> build(const openstack::compute::BuildRequest& request,
                                                 std::chrono::milliseconds timeout) override;
  Result<void> destroy(const std::string& uuid, std::chrono::milliseconds timeout) override;
  Result<openstack::compute::PowerOutcome> power(const std::string& uuid,
                                                 openstack::compute::PowerRequest request,
                                                 std::chrono::milliseconds timeout) override;
  Result<openstack::compute::SnapshotOutcome> snapshot(const std::string& uuid,
                                                       const std::string& image_id,
                                                       std::chrono::milliseconds timeout) override;
  Result<std::string> consoleOutput(const std::string& uuid, std::uint64_t max_bytes) override;
  std::map<std::string, openstack::compute::GuestState> guests() override;
  void stopWaiting() override;
  bool stopping() const override;

 private:
  lifecycle::InstanceManager& manager_;
  const config::FlavorCatalog& flavors_;
};

// The launch request body for `request`, as kiln's API takes it (no token: it is never part of
// a stored request).
nlohmann::json launchBody(const openstack::compute::BuildRequest& request);

}  // namespace kiln::agent
