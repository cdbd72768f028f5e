#pragma once
// kilnd --adopt: instance records rebuilt from the domains' own definitions, for a host whose
// database was lost or restored from a backup older than some of its guests. Only domains that
// are provably this kilnd's (kiln's metadata, disks under its instances directory) and that no
// record names are adopted; nothing on the host is changed.
//
// A definition holds no secrets, so what only the lost records knew stays lost, and each adopted
// instance says so in the answer: the CHAP password of a native iSCSI volume and the key of an
// encrypted ephemeral disk (both live on in libvirtd's memory until it restarts), and the image
// properties a snapshot would inherit.

#include <string>
#include <vector>

#include "agent/state/instance_store.h"
#include "common/clock.h"
#include "common/qemu_img.h"
#include "config/flavors.h"
#include "drivers/compute_driver.h"

namespace kiln::lifecycle {

struct AdoptionResult {
  std::vector<std::string> adopted;  // uuids
  std::vector<std::string> warnings;
};

Result<AdoptionResult> adoptDomains(drivers::ComputeDriver& driver, state::InstanceStore& store,
                                    const config::FlavorCatalog& flavors, QemuImg& qemu_img,
                                    const Clock& clock, const std::string& instances_dir);

}  // namespace kiln::lifecycle
