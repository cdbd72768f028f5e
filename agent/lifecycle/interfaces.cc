#include "agent/lifecycle/interfaces.h"

#include <fmt/format.h>

#include "agent/lifecycle/transitions.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "drivers/hardware/hardware_spec.h"

namespace kiln::lifecycle {

using state::InstanceRecord;
using state::TaskState;

namespace {

std::optional<drivers::NicSpec> nicOf(const InstanceRecord& rec, const std::string& port_id) {
  for (const auto& i : rec.interfaces) {
    if (i.nic.port_id == port_id) return i.nic;
  }
  return std::nullopt;
}

}  // namespace

InterfaceActions::InterfaceActions(InstanceTable& table, Executor& jobs,
                                   drivers::ComputeDriver& driver, InstanceResources& resources,
                                   const ManagerOptions& options)
    : table_(table), jobs_(jobs), driver_(driver), resources_(resources), options_(options) {}

Result<InstanceRecord> InterfaceActions::attach(const std::string& uuid, api::VifRequest request) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  if (!options_.host_network) {
    return Error::invalid("This host has no network plumbing; it cannot plug interfaces");
  }
  drivers::NicSpec& nic = request.nic;
  auto recorded = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kAttachInterface, rec); !r) return r;
    if (rec.interfaces.size() >= api::kMaxInterfaces) {
      return Error::invalid(fmt::format("Instance '{}' has {} interfaces, the most kiln plugs",
                                        uuid, api::kMaxInterfaces));
    }
    for (const auto& i : rec.interfaces) {
      if (i.nic.port_id == nic.port_id || i.nic.mac == nic.mac || i.nic.devname == nic.devname) {
        return Error::conflict(fmt::format(
            "Instance '{}' has an interface with port '{}', MAC '{}' or devname '{}' already", uuid,
            nic.port_id, nic.mac, nic.devname));
      }
    }
    // The model and queues the image and flavor give every NIC of this instance.
    auto hw = drivers::hardware::hardwareSpecFrom(rec.image_properties, rec.flavor.extra_specs,
                                                  rec.flavor.vcpus, "");
    if (!hw) return hw.error();
    nic.model = hw->vif_model;
    nic.queues = nic.model == "virtio" ? hw->vif_queues : 1;
    rec.interfaces.push_back({nic, request.vif});
    rec.task_state = taskOf(Operation::kAttachInterface);
    rec.action_error.clear();
    return success();
  });
  if (!recorded) return recorded.error();
  if (!jobs_.post([this, entry, nic] { runAttach(entry, nic); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return recorded;
}

void InterfaceActions::runAttach(const EntryPtr& entry, const drivers::NicSpec& nic) {
  const std::string& uuid = entry->uuid();
  auto job = table_.beginJob(entry, JobKind::kAttachInterface, options_.job_timeout);
  Result<void> result =
      job ? failpoint("interface_attach.after_record") : Result<void>(job.error());
  if (result) result = resources_.plugInterface(uuid, nic);
  if (result) result = failpoint("interface_attach.after_plug");
  bool attached = false;
  if (result) {
    result = driver_.attachInterface(uuid, nic);
    attached = result.ok();
  }
  if (result) result = failpoint("interface_attach.after_device");
  if (!result) {
    // Undo in reverse: the domain's NIC, then the tap; the attach never happened.
    if (attached) {
      if (auto d = driver_.detachInterface(uuid, nic, options_.interface_detach_timeout); !d) {
        log::error("Instance '{}': {}", uuid, d.error().message);
      }
    }
    if (auto u = resources_.unplugInterface(uuid, nic); !u) {
      log::error("Instance '{}': {}", uuid, u.error().message);
    }
  }
  table_.settle(*entry, [&](InstanceRecord& rec) {
    if (rec.task_state == TaskState::kAttachingInterface) rec.task_state = TaskState::kNone;
    if (!result) {
      std::erase_if(rec.interfaces, [&](const auto& i) { return i.nic.port_id == nic.port_id; });
      rec.action_error =
          fmt::format("Attaching port '{}' failed: {}", nic.port_id, result.error().message);
      log::warn("Instance '{}': {}", uuid, rec.action_error);
    } else {
      log::info("Instance '{}': port '{}' attached as {} ({})", uuid, nic.port_id, nic.devname,
                nic.mac);
    }
  });
}

Result<InstanceRecord> InterfaceActions::detach(const std::string& uuid,
                                                const std::string& port_id) {
  EntryPtr entry = table_.find(uuid);
  if (!entry) return Error::notFound(fmt::format("Instance '{}' does not exist", uuid));
  auto recorded = table_.update(*entry, [&](InstanceRecord& rec) -> Result<void> {
    if (auto r = admit(Operation::kDetachInterface, rec); !r) return r;
    if (!nicOf(rec, port_id)) {
      return Error::notFound(
          fmt::format("Port '{}' is not attached to instance '{}'", port_id, uuid));
    }
    rec.task_state = taskOf(Operation::kDetachInterface);
    rec.action_error.clear();
    return success();
  });
  if (!recorded) return recorded.error();
  if (!jobs_.post([this, entry, port_id] { runDetach(entry, port_id); })) {
    return Error::unavailable("kilnd is shutting down");
  }
  return recorded;
}

void InterfaceActions::runDetach(const EntryPtr& entry, const std::string& port_id) {
  const std::string& uuid = entry->uuid();
  auto job = table_.beginJob(entry, JobKind::kDetachInterface, options_.job_timeout);
  Result<void> result =
      job ? failpoint("interface_detach.after_record") : Result<void>(job.error());
  auto nic = nicOf(table_.read(*entry), port_id).value_or(drivers::NicSpec{});
  if (result) result = driver_.detachInterface(uuid, nic, options_.interface_detach_timeout);
  if (result) result = failpoint("interface_detach.after_device");
  // Only once the guest has let go is the tap removed.
  if (result) result = resources_.unplugInterface(uuid, nic);
  table_.settle(*entry, [&](InstanceRecord& rec) {
    if (rec.task_state == TaskState::kDetachingInterface) rec.task_state = TaskState::kNone;
    if (result) {
      std::erase_if(rec.interfaces, [&](const auto& i) { return i.nic.port_id == port_id; });
      log::info("Instance '{}': port '{}' detached", uuid, port_id);
    } else {
      rec.action_error =
          fmt::format("Detaching port '{}' failed: {}", port_id, result.error().message);
      log::warn("Instance '{}': {}", uuid, rec.action_error);
    }
  });
}

}  // namespace kiln::lifecycle
