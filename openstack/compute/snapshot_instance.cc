// snapshot_instance (a cast), which `openstack server image create` makes once nova-api has
// created the image record in Glance (queued, with the instance's image properties) and set the
// task state image_snapshot_pending. As nova-compute runs it:
//   image_snapshot        (expected image_snapshot_pending)
//   image_pending_upload  (expected image_snapshot), with the power state
//   image_uploading       (expected image_pending_upload)
//   kiln's capture of the root disk into that image, and its upload
//   no task state         (expected image_uploading)
// inside the compute_snapshot_instance event. A failure records a fault, clears the task state
// and leaves the vm state alone; the image is deleted, as nova's @delete_image_on_error does.

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/nova_instance.h"

namespace kiln::openstack::compute {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

namespace {
constexpr const char* kSnapshotEvent = "compute_snapshot_instance";
}  // namespace

RpcOutcome snapshotInstance(const InstanceOperations& ops, const RpcRequest& request) {
  const json image_id = request.args.value("image_id", json());
  if (!image_id.is_string()) {
    log::error("OpenStack: snapshot_instance without an image id");
    return RpcOutcome::ok();
  }
  auto parsed = NovaInstance::fromRequest(ops.conductor, request, ops.host);
  if (!parsed) return RpcOutcome::ok();
  NovaInstance& instance = *parsed;
  const std::string& uuid = instance.uuid();
  const std::string& image = image_id.get_ref<const std::string&>();
  const auto held = ops.locks.lock(uuid);
  instance.recordStart(kSnapshotEvent);
  auto finish = [&](const std::string& failure) {
    instance.recordFinish(kSnapshotEvent, failure);
    return RpcOutcome::ok();
  };
  auto fail = [&](const std::string& reason) {
    const std::string message =
        fmt::format("The snapshot of instance {} into image {} failed: {}", uuid, image, reason);
    log::error("OpenStack: {}", message);
    instance.recordFault(message);
    if (auto saved = instance.save({{"task_state", nullptr}}); !saved) {
      log::error("OpenStack: instance {}: clearing its task state failed: {}", uuid,
                 saved.error().message);
    }
    return finish(message);
  };
  const auto guests = ops.instances.guests();
  const auto guest = guests.find(uuid);
  const int power_state = static_cast<int>(guest == guests.end() ? NovaPowerState::kNoState
                                                                 : guest->second.power_state);
  const std::vector<std::pair<json, json>> before = {
      {{{"task_state", "image_snapshot"}}, "image_snapshot_pending"},
      {{{"task_state", "image_pending_upload"}, {"power_state", power_state}}, "image_snapshot"},
      {{{"task_state", "image_uploading"}}, "image_pending_upload"},
  };
  for (const auto& [fields, expected] : before) {
    if (auto saved = instance.save(fields, std::vector<json>{expected}); !saved) {
      // A delete (or another action) came first: as in nova, the snapshot stops.
      log::warn("OpenStack: instance {}: the snapshot stops: {}", uuid, saved.error().message);
      return finish(saved.error().message);
    }
  }
  auto outcome = ops.instances.snapshot(uuid, image, ops.build_timeout);
  if (!outcome && ops.instances.stopping()) {
    // The task stays set in Nova; the next start's recovery clears it, and kiln's own recovery
    // discards the image that got no bytes.
    log::warn("OpenStack: instance {}: kilnd stops during its snapshot; left to the recovery",
              uuid);
    return RpcOutcome::ok();
  }
  if (!outcome) return fail(outcome.error().message);
  if (!outcome->fault.empty()) return fail(outcome->fault);
  if (auto saved = instance.save({{"task_state", nullptr}}, std::vector<json>{"image_uploading"});
      !saved) {
    log::warn("OpenStack: instance {}: saving the end of its snapshot failed: {}", uuid,
              saved.error().message);
    return finish(saved.error().message);
  }
  log::info("OpenStack: instance {}: snapshot {} is active", uuid, image);
  return finish("");
}

}  // namespace kiln::openstack::compute
