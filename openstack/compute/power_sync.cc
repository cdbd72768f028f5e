#include "openstack/compute/power_sync.h"

#include <fmt/format.h>

#include "common/log.h"
#include "openstack/nova/nova_object.h"
#include "openstack/nova/request_context.h"

namespace kiln::openstack::compute {

using nlohmann::json;

Result<PowerSyncReport> syncPowerStates(nova::Conductor& conductor, const std::string& host,
                                        InstanceHost& instances) {
  const json context = nova::adminContext();
  auto listed = conductor.classAction(context, "InstanceList", "get_by_host", json{host},
                                      json{{"expected_attrs", json::array()}});
  if (!listed) return listed.error();
  const auto guests = instances.guests();
  PowerSyncReport report;
  for (const auto& primitive : nova::listItems(*listed)) {
    auto instance = nova::NovaObject::fromPrimitive(primitive);
    if (!instance) continue;
    ++report.instances;
    // An action in progress settles the state itself (nova skips these too).
    if (!instance->get("task_state").is_null()) continue;
    const std::string uuid = instance->text("uuid");
    const std::string vm_state = instance->text("vm_state");
    if (vm_state != "active" && vm_state != "stopped") continue;
    const auto guest = guests.find(uuid);
    if (guest == guests.end()) {
      log::warn("OpenStack: Nova has instance {} {} on {}, and kiln holds no such guest", uuid,
                vm_state, host);
      continue;
    }
    if (guest->second.busy) continue;
    json fields = json::object();
    const int power = static_cast<int>(guest->second.power_state);
    if (instance->integer("power_state", -1) != power) fields["power_state"] = power;
    if (vm_state == "active" && guest->second.stopped) {
      log::info("OpenStack: instance {} shut down by itself; Nova is told it is stopped", uuid);
      fields["vm_state"] = "stopped";
    } else if (vm_state == "stopped" && guest->second.active) {
      log::info("OpenStack: instance {} runs again (started through kiln's API); Nova is told",
                uuid);
      fields["vm_state"] = "active";
    }
    if (fields.empty()) continue;
    for (const auto& [field, value] : fields.items()) instance->set(field, value);
    // Only while no action started meanwhile: an action's own saves win.
    auto saved = conductor.objectAction(context, *instance, "save", json::array(),
                                        json{{"expected_task_state", json::array({nullptr})}});
    if (!saved) {
      log::warn("OpenStack: instance {}: saving its power state failed: {}", uuid,
                saved.error().message);
      continue;
    }
    ++report.saved;
  }
  return report;
}

}  // namespace kiln::openstack::compute
