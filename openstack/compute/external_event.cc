// external_instance_event (a cast): what Neutron and Cinder tell nova-api about instances
// (POST /os-server-external-events), routed to the instances' host. Zed's arguments: `instances`
// (a list of Instance primitives) and `events` (InstanceExternalEvent primitives: instance_uuid,
// name, tag, status, data). nova-compute records no instance action for them.
//
// kiln has no Neutron and no Nova-attached volumes yet, so nothing waits for network-vif-plugged
// and there is no info cache to refresh or volume to resize: each event is logged, by instance,
// so an operator sees what arrived, and the cast is answered. An event for an instance not on
// this host (Nova sends by the instance's host, so a race with a delete) is logged as such.

#include <fmt/format.h>

#include <set>

#include "common/log.h"
#include "openstack/compute/instance_operations.h"

namespace kiln::openstack::compute {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

RpcOutcome externalInstanceEvent(const InstanceOperations& ops, const RpcRequest& request) {
  std::set<std::string> here;
  for (const auto& item : request.args.value("instances", json::array())) {
    auto instance = nova::NovaObject::fromPrimitive(item);
    if (instance) here.insert(instance->text("uuid"));
  }
  const auto guests = ops.instances.guests();
  for (const auto& item : request.args.value("events", json::array())) {
    auto event = nova::NovaObject::fromPrimitive(item);
    if (!event || event->name() != "InstanceExternalEvent") {
      log::warn("OpenStack: external_instance_event: an event that is not one is ignored");
      continue;
    }
    const std::string uuid = event->text("instance_uuid");
    const std::string name = event->text("name");
    const std::string tag = event->text("tag");
    const std::string what = tag.empty() ? name : name + "-" + tag;
    if (here.count(uuid) == 0 || guests.count(uuid) == 0) {
      log::info("OpenStack: event {} ({}) for instance {}, which kiln does not hold on {}", what,
                event->text("status"), uuid, ops.host);
      continue;
    }
    log::info("OpenStack: event {} ({}) for instance {}: nothing waits for it on {}", what,
              event->text("status"), uuid, ops.host);
  }
  return RpcOutcome::ok();
}

}  // namespace kiln::openstack::compute
