#pragma once
// This host's row in Nova's compute_nodes table, through the conductor, as nova's resource
// tracker keeps it (ResourceTracker._init_compute_node and _update): found by host and node name,
// created when absent with every field the API and the scheduler read, and afterwards saved only
// when a figure changed, with exactly the changed fields (a save naming an unchanged field would
// overwrite what another writer, an operator's ratio say, put there meanwhile).
//
// The node's uuid is the Placement provider's uuid too, so it must not change while the host
// lives: it is kept in state_path/compute_id (the file nova 2023.1 keeps for the same reason),
// written once, read at every start. A row for this host and node name under another uuid is a
// conflict reported to the operator, never silently adopted or replaced: it belongs to another
// compute service with this host's name, or to this host before its state_path was lost.

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "openstack/nova/conductor.h"
#include "openstack/nova/nova_object.h"

namespace kiln::openstack::compute {

// One entry of supported_hv_specs (nova's HVSpec): what guests this node runs.
struct HvSpec {
  std::string arch;     // "x86_64"
  std::string hv_type;  // "qemu", "kvm"
  std::string vm_mode;  // "hvm"
};

// The figures of the node, measured by the caller (host_figures.h); the field names are Nova's.
struct ComputeNodeFigures {
  std::string hypervisor_hostname;      // the node name: the host's name, as libvirt's driver uses
  std::string host_ip;                  // [DEFAULT] my_ip; empty: null
  std::string hypervisor_type;          // "QEMU"
  std::int64_t hypervisor_version = 0;  // QEMU 7.2.0 is 7002000, as libvirt reports it
  std::int64_t vcpus = 0;
  std::int64_t memory_mb = 0;
  std::int64_t local_gb = 0;
  std::int64_t vcpus_used = 0;
  // As nova's resource tracker counts them: the reserved memory and disk are "used".
  std::int64_t memory_mb_used = 0;
  std::int64_t local_gb_used = 0;
  std::int64_t free_ram_mb = 0;
  std::int64_t free_disk_gb = 0;
  std::int64_t disk_available_least = 0;
  std::int64_t running_vms = 0;
  std::int64_t current_workload = 0;  // instances with a task in progress
  // nova's libvirt driver's cpu_info: {"arch", "model", "vendor", "topology", "features"}.
  nlohmann::json cpu_info = nlohmann::json::object();
  std::vector<HvSpec> supported_hv_specs;
  double cpu_allocation_ratio = 16.0;
  double ram_allocation_ratio = 1.5;
  double disk_allocation_ratio = 1.0;
  // The resource tracker's stats (num_instances, num_vm_active, num_task_None, ...).
  std::map<std::string, std::string> stats;
};

// The ComputeNode fields for `figures` as Nova's object holds them (cpu_info and stats as text or
// dict, supported_hv_specs as HVSpec primitives). `creating` adds the fields only a new row needs
// (its uuid and host, no PCI pools, no NUMA topology, no metrics).
nlohmann::json computeNodeFields(const ComputeNodeFigures& figures, bool creating,
                                 const std::string& host, const std::string& uuid);

// The node's uuid from `state_path`/compute_id, written there (atomically, once) when the file
// does not exist yet. A file that holds anything but one uuid is an error naming it.
Result<std::string> nodeUuid(const std::filesystem::path& state_path);

class ComputeNodeRecord {
 public:
  ComputeNodeRecord(nova::Conductor& conductor, std::string host, std::string uuid);

  // Finds or creates the row at the first call, then saves the fields of `figures` that differ
  // from the row. A row deleted through the API (`compute service delete` takes the host's
  // nodes with it) is made again.
  Result<void> report(const ComputeNodeFigures& figures);

  // Deletes the row (a host retired from the cloud; the tests clean up with it).
  Result<void> destroy();

  std::int64_t id() const;  // 0 before the first report
  const std::string& uuid() const { return uuid_; }
  // The fields the last report saved (empty: it found nothing to change).
  std::set<std::string> lastSaved() const;

 private:
  Result<void> findOrCreate(const ComputeNodeFigures& figures);

  nova::Conductor& conductor_;
  const std::string host_;
  const std::string uuid_;
  mutable std::mutex mutex_;
  std::optional<nova::NovaObject> node_;
  std::set<std::string> last_saved_;
};

namespace detail {
// A field's value reduced to what decides equality: nested object primitives become their data
// (their envelope and change list do not count), cpu_info's text its parsed JSON, and numbers
// compare by value (Nova sends 16.0 where kiln wrote 16).
nlohmann::json comparable(const std::string& field, const nlohmann::json& value);
}  // namespace detail

}  // namespace kiln::openstack::compute
