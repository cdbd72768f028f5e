#pragma once
// How the lifecycle runs, as agent/main.cc maps it from kiln.conf.

#include <chrono>
#include <memory>
#include <string>

#include "agent/sync/orphan_sweep.h"
#include "common/disk_reserve.h"
#include "drivers/disk/disk_builder.h"
#include "drivers/disk/disk_purge.h"
#include "drivers/network/host_network.h"

namespace kiln::lifecycle {

struct ManagerOptions {
  std::string instances_dir;   // state_path/instances
  std::string snapshots_dir;   // state_path/snapshots: temporary copies being uploaded
  bool use_cow_images = true;  // vda: qcow2 overlay over the base, or a full copy
  std::chrono::seconds shutdown_timeout{60};      // stop: clean shutdown, then power off
  std::chrono::seconds soft_reboot_timeout{120};  // SOFT reboot falls back to HARD after it
  // How the instance's private files are cleared on delete and on a rolled-back launch.
  drivers::disk::ClearMethod ephemeral_clear = drivers::disk::ClearMethod::kZero;
  // [ephemeral_storage_encryption]: vdb as LUKS qcow2 with a fresh key per instance.
  bool encrypt_ephemeral = false;
  drivers::disk::LuksOptions ephemeral_luks{};
  unsigned ephemeral_key_bits = 512;
  // How long a background operation waits for the instance's current job before it gives up
  // with "busy" (a delete is then retried by the periodic reconcile).
  std::chrono::milliseconds job_timeout{std::chrono::seconds(30)};
  // The periodic reconcile with the hypervisor (also run at start and after each reconnect).
  std::chrono::milliseconds reconcile_interval{std::chrono::seconds(30)};
  // What the sweep does with what no instance owns ([DEFAULT] orphan_action, orphan_grace_period).
  sync::OrphanAction orphan_action = sync::OrphanAction::kReport;
  std::chrono::seconds orphan_grace{3600};
  std::string quarantine_dir{};  // state_path/quarantine
  // Disk creations take their space here first (common/disk_reserve.h); unset: no check.
  std::shared_ptr<DiskReserve> disk_reserve{};
  // The host side of NICs (taps, bridges, anti-spoofing); unset: launches with network_info and
  // interface attaches are refused.
  std::shared_ptr<drivers::network::HostNetwork> host_network{};
  // [DEFAULT] force_config_drive: every instance gets a config drive, asked for or not.
  bool force_config_drive = false;
  // How long an interface detach waits for the guest to release the NIC.
  std::chrono::milliseconds interface_detach_timeout{std::chrono::seconds(30)};
  // [DEFAULT] default_availability_zone, written into the config drive's meta_data.json.
  std::string availability_zone{"nova"};
};

}  // namespace kiln::lifecycle
