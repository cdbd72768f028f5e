#pragma once
// What kiln knows about one instance. The record is written to the store before every side
// effect, so after a crash it says what may exist on the host. Its states and the transitions
// between them: agent/state/instance_state.h and agent/lifecycle/transitions.h.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/state/instance_state.h"
#include "common/timeline.h"
#include "config/flavors.h"
#include "drivers/compute_driver.h"
#include "drivers/volume/volume_connector.h"

namespace kiln::state {

struct DiskRecord {
  std::string device;  // vda, vdb, ...
  std::string path;
  std::string format;  // recorded when the disk is made; never probed afterwards
  std::uint64_t virtual_size = 0;
  std::string backing_path;    // empty when the disk stands alone
  std::string backing_format;  // recorded with the base, given explicitly to qemu-img and libvirt
  // A LUKS-encrypted disk: the libvirt secret (by uuid) that holds its passphrase, and the
  // passphrase sealed with the host key (common/secret_box.h) so the secret can be defined again
  // after a libvirtd restart. A delete erases the sealed key before it touches the file
  // (crypto-erase); the API never shows it.
  std::string encryption_secret_uuid{};
  std::string sealed_key{};
};

// One NIC: what kiln plugged (the tap, its bridge, its filter) and the VIF as it was given.
// Recorded before the tap is made, so a crash leaves a record naming the tap to remove.
struct InterfaceRecord {
  drivers::NicSpec nic;
  nlohmann::json vif = nlohmann::json::object();
};

struct InstanceRecord {
  std::string uuid;
  std::string name;
  config::Flavor flavor;
  std::string image_id;
  nlohmann::json image_properties = nlohmann::json::object();
  std::string request_fingerprint;  // canonical request body, for idempotent retries
  // The owning project, which the API policy judges against ("" for records from before
  // projects: such an instance belongs to no project and no project_id check matches it).
  std::string project_id;
  InstanceState state = InstanceState::kBuilding;
  std::string power_state = "nostate";
  TaskState task_state = TaskState::kNone;
  std::string fault;  // set when state is error
  std::vector<DiskRecord> disks;
  std::vector<drivers::volume::Attachment> volumes;
  std::vector<InterfaceRecord> interfaces;  // in the guest's order
  // The config drive ISO (<instance dir>/disk.config), recorded before it is written; empty:
  // none. Instance-private: purged with the instance's other files.
  std::string config_drive_path;
  // volume id -> its CHAP password sealed with the host key (common/secret_box.h); never shown.
  std::map<std::string, std::string> sealed_passwords;
  // The outcome of the last volume action when it failed (the instance itself is unharmed).
  std::string action_error;
  std::vector<TimelineStep> timeline;
  std::string created_at;
  std::string updated_at;
};

nlohmann::json interfaceToJson(const InterfaceRecord& i);
Result<InterfaceRecord> interfaceFromJson(const nlohmann::json& j);
nlohmann::json toJson(const InstanceRecord& r);  // full form, used for storage and the API
Result<InstanceRecord> fromJson(const nlohmann::json& j);

}  // namespace kiln::state
