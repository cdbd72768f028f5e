// The recovery at start, as nova-compute's init_host (_init_instance) settles each instance Nova
// places on the host, after kiln's own recovery has settled its records:
//   - task deleting (a delete cut short): completed, as terminate_instance would;
//   - vm_state building (a build cut short): kiln's partial guest removed, a fault "the build
//     was interrupted", ERROR with no task (the allocations stay until the delete, as in nova);
//   - any other task (a reboot, stop or start cut short, or an unsupported one): cleared, and the
//     vm and power state taken from kiln's guest; ERROR with a fault when kiln has none;
//   - instances Nova has deleted on this host that kiln still holds (a delete whose guest
//     removal never ran): removed from kiln, as nova's _cleanup_running_deleted_instances does.
// Instances kiln holds that Nova never placed here are kiln's own API's: left alone.

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/compute/instance_operations.h"
#include "openstack/compute/nova_instance.h"
#include "openstack/nova/request_context.h"

namespace kiln::openstack::compute {

using nlohmann::json;

Result<RecoveryReport> recoverInstances(const InstanceOperations& ops) {
  const json context = nova::adminContext();
  auto listed = ops.conductor.classAction(context, "InstanceList", "get_by_host", json{ops.host},
                                          json{{"expected_attrs", json::array()}});
  if (!listed) return listed.error();
  RecoveryReport report;
  const auto guests = ops.instances.guests();
  for (const auto& primitive : nova::listItems(*listed)) {
    auto object = nova::NovaObject::fromPrimitive(primitive);
    if (!object) continue;
    NovaInstance instance(ops.conductor, context, std::move(object).value(), ops.host);
    const std::string uuid = instance.uuid();
    const auto held = ops.locks.lock(uuid);
    const std::string vm_state = instance.object().text("vm_state");
    const json& task = instance.object().get("task_state");
    if (task == "deleting") {
      log::info("OpenStack: instance {} was being deleted when kilnd stopped; completing it", uuid);
      if (completeDelete(ops, instance)) ++report.completed_deletes;
      continue;
    }
    if (vm_state == "building") {
      log::warn("OpenStack: instance {} was being built when kilnd stopped; it ends in ERROR",
                uuid);
      if (auto gone = ops.instances.destroy(uuid, ops.delete_timeout); !gone) {
        log::error("OpenStack: instance {}: removing the interrupted build failed: {}", uuid,
                   gone.error().message);
      }
      (void)instance.addFault(fmt::format(
          "The build of instance {} was interrupted: kilnd on {} stopped before it finished", uuid,
          ops.host));
      if (auto saved = instance.save({{"vm_state", "error"}, {"task_state", nullptr}}); saved)
        ++report.failed_builds;
      continue;
    }
    if (task.is_null()) continue;
    const auto guest = guests.find(uuid);
    json fields = {{"task_state", nullptr}};
    if (guest == guests.end()) {
      (void)instance.addFault(fmt::format(
          "kilnd on {} restarted during {} and holds no guest for the instance", ops.host,
          task.is_string() ? task.get<std::string>() : std::string("a task")));
      fields["vm_state"] = "error";
    } else {
      fields["power_state"] = static_cast<int>(guest->second.power_state);
      if (guest->second.active) fields["vm_state"] = "active";
      if (guest->second.stopped) fields["vm_state"] = "stopped";
    }
    log::info("OpenStack: instance {}: the task {} a restart cut short is cleared", uuid,
              task.dump());
    if (auto saved = instance.save(fields); saved) ++report.settled_tasks;
  }

  // Deleted in Nova, still held by kiln.
  json deleted_context = context;
  deleted_context["read_deleted"] = "yes";
  auto deleted = ops.conductor.classAction(
      deleted_context, "InstanceList", "get_by_filters",
      json{{{"deleted", true}, {"soft_deleted", false}, {"host", ops.host}}},
      json{{"expected_attrs", json::array()}});
  if (!deleted) {
    log::warn("OpenStack: listing the instances Nova deleted on {} failed: {}", ops.host,
              deleted.error().message);
    return report;
  }
  for (const auto& primitive : nova::listItems(*deleted)) {
    const std::string uuid =
        primitive.value("nova_object.data", json::object()).value("uuid", std::string());
    if (uuid.empty() || !guests.contains(uuid)) continue;
    const auto held = ops.locks.lock(uuid);
    log::warn("OpenStack: Nova deleted instance {}, and kiln still held it; removing it", uuid);
    if (auto gone = ops.instances.destroy(uuid, ops.delete_timeout); gone) {
      ++report.removed_deleted;
    } else {
      log::error("OpenStack: instance {}: removing it failed: {}", uuid, gone.error().message);
    }
  }
  return report;
}

}  // namespace kiln::openstack::compute
