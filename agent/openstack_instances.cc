#include "agent/openstack_instances.h"

#include <fmt/format.h>

#include "agent/api/launch_request.h"
#include "common/log.h"

namespace kiln::agent {

using nlohmann::json;
using openstack::compute::BuildOutcome;
using openstack::compute::BuildRequest;
using openstack::compute::NovaPowerState;
using state::InstanceRecord;
using state::InstanceState;

namespace {

NovaPowerState novaPowerState(const std::string& kiln_power_state) {
  if (kiln_power_state == "running") return NovaPowerState::kRunning;
  if (kiln_power_state == "paused") return NovaPowerState::kPaused;
  if (kiln_power_state == "shutdown") return NovaPowerState::kShutdown;
  if (kiln_power_state == "crashed") return NovaPowerState::kCrashed;
  if (kiln_power_state == "suspended") return NovaPowerState::kSuspended;
  return NovaPowerState::kNoState;
}

}  // namespace

json launchBody(const BuildRequest& request) {
  json body = {{"uuid", request.uuid},
               {"name", request.name},
               {"image", {{"id", request.image_id}}},
               {"flavor",
                {{"vcpus", request.vcpus},
                 {"memory_mb", request.memory_mb},
                 {"root_gb", request.root_gb},
                 {"ephemeral_gb", request.ephemeral_gb}}},
               {"config_drive", request.config_drive}};
  if (!request.project_id.empty()) body["project_id"] = request.project_id;
  if (!request.hostname.empty()) body["hostname"] = request.hostname;
  if (!request.availability_zone.empty()) body["availability_zone"] = request.availability_zone;
  if (request.user_data) body["user_data"] = *request.user_data;
  if (!request.public_keys.empty()) body["public_keys"] = request.public_keys;
  return body;
}

OpenStackInstances::OpenStackInstances(lifecycle::InstanceManager& manager,
                                       const config::FlavorCatalog& flavors)
    : manager_(manager), flavors_(flavors) {}

Result<BuildOutcome> OpenStackInstances::build(const BuildRequest& request,
                                               std::chrono::milliseconds timeout) {
  auto launch = api::parseLaunchRequest(launchBody(request).dump(), flavors_, request.project_id);
  if (!launch) return launch.error();
  launch->image_token = request.token;
  launch->flavor.name = request.flavor_name;
  launch->flavor.extra_specs = request.extra_specs;
  if (auto accepted = manager_.launch(*launch); !accepted) return accepted.error();
  auto settled = manager_.waitFor(
      request.uuid, [](const InstanceRecord& r) { return r.state != InstanceState::kBuilding; },
      timeout);
  if (!settled) return settled.error();
  if (!*settled) return Error::internal("the instance disappeared while it was being built");
  const InstanceRecord& record = **settled;
  BuildOutcome outcome;
  outcome.active = record.state == InstanceState::kActive;
  outcome.power_state = novaPowerState(record.power_state);
  if (!outcome.active) {
    outcome.fault = record.fault.empty()
                        ? fmt::format("the launch ended {}", state::stateName(record.state))
                        : record.fault;
  }
  return outcome;
}

Result<void> OpenStackInstances::destroy(const std::string& uuid,
                                         std::chrono::milliseconds timeout) {
  auto requested = manager_.requestDelete(uuid);
  if (!requested) {
    if (requested.error().code == ErrorCode::kNotFound) return success();
    return requested.error();
  }
  // Gone, or settled in ERROR with no task: a delete that failed on the host.
  auto settled = manager_.waitFor(
      uuid,
      [](const InstanceRecord& r) {
        return r.state == InstanceState::kError && r.task_state == state::TaskState::kNone;
      },
      timeout);
  if (!settled) {
    // Still there: kiln retries the delete by itself (each reconcile); say why it waits.
    auto current = manager_.get(uuid);
    if (current && !current->fault.empty()) return Error::unavailable(current->fault);
    return settled.error();
  }
  if (*settled) {
    return Error::internal((*settled)->fault.empty() ? "the delete failed on the host"
                                                     : (*settled)->fault);
  }
  return success();
}

Result<openstack::compute::PowerOutcome> OpenStackInstances::power(
    const std::string& uuid, openstack::compute::PowerRequest request,
    std::chrono::milliseconds timeout) {
  using openstack::compute::PowerRequest;
  lifecycle::PowerAction action = lifecycle::PowerAction::kStart;
  switch (request) {
    case PowerRequest::kSoftReboot:
      action = lifecycle::PowerAction::kSoftReboot;
      break;
    case PowerRequest::kHardReboot:
      action = lifecycle::PowerAction::kHardReboot;
      break;
    case PowerRequest::kStop:
      action = lifecycle::PowerAction::kStop;
      break;
    case PowerRequest::kStart:
      action = lifecycle::PowerAction::kStart;
      break;
  }
  if (auto accepted = manager_.powerAction(uuid, action); !accepted) return accepted.error();
  auto settled = manager_.waitFor(
      uuid, [](const InstanceRecord& r) { return r.task_state == state::TaskState::kNone; },
      timeout);
  if (!settled) return settled.error();
  if (!*settled) return Error::notFound(fmt::format("Instance '{}' is gone", uuid));
  const InstanceRecord& record = **settled;
  openstack::compute::PowerOutcome outcome;
  outcome.active = record.state == InstanceState::kActive;
  outcome.power_state = novaPowerState(record.power_state);
  if (record.state == InstanceState::kError) {
    outcome.fault = record.fault.empty() ? std::string("the action failed") : record.fault;
  }
  return outcome;
}

Result<openstack::compute::SnapshotOutcome> OpenStackInstances::snapshot(
    const std::string& uuid, const std::string& image_id, std::chrono::milliseconds timeout) {
  if (auto accepted = manager_.snapshotInto(uuid, image_id); !accepted) return accepted.error();
  // The snapshot holds the task until its upload ended (or failed and discarded the image).
  auto settled = manager_.waitFor(
      uuid, [](const InstanceRecord& r) { return r.task_state == state::TaskState::kNone; },
      timeout);
  if (!settled) return settled.error();
  if (!*settled) return Error::notFound(fmt::format("Instance '{}' is gone", uuid));
  return openstack::compute::SnapshotOutcome{(*settled)->action_error};
}

void OpenStackInstances::stopWaiting() { manager_.stopWaiting(); }

bool OpenStackInstances::stopping() const { return manager_.stoppedWaiting(); }

Result<std::string> OpenStackInstances::consoleOutput(const std::string& uuid,
                                                      std::uint64_t max_bytes) {
  return manager_.consoleLog(uuid, max_bytes);
}

std::map<std::string, openstack::compute::GuestState> OpenStackInstances::guests() {
  std::map<std::string, openstack::compute::GuestState> out;
  for (const auto& record : manager_.list()) {
    auto& guest = out[record.uuid];
    guest.active = record.state == InstanceState::kActive;
    guest.stopped = record.state == InstanceState::kStopped;
    guest.busy = record.task_state != state::TaskState::kNone ||
                 record.state == InstanceState::kBuilding ||
                 record.state == InstanceState::kDeleting;
    guest.power_state = novaPowerState(record.power_state);
  }
  return out;
}

}  // namespace kiln::agent
