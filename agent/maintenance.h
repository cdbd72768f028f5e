#pragma once
// The store's guard at start, and the operator's one-shot commands (kilnd --adopt,
// --purge-orphans, --backup): what an operator reaches for when kiln.db and the host disagree.
// docs/operations.md tells when to use which.

#include <memory>
#include <string>

#include "agent/state/instance_store.h"
#include "common/clock.h"
#include "common/qemu_img.h"
#include "config/flavors.h"
#include "drivers/compute_driver.h"
#include "drivers/disk/disk_purge.h"

namespace kiln::maintenance {

// Opens state_path/kiln.db. A database that does not exist yet (or an empty file) is created
// only when the host holds nothing of this kilnd's: with instance directories, kiln domains or
// kiln secrets present it is a lost or moved-aside database, not a new host, and the error says
// what was found and what to do (restore a backup, --adopt, --purge-orphans). The database is not
// created then, so every later start refuses the same way.
Result<std::unique_ptr<state::InstanceStore>> openStore(const std::string& state_path,
                                                        drivers::ComputeDriver& driver);

// kilnd --adopt: records for the domains that are this kilnd's and have none. Prints what it did.
Result<void> adopt(const std::string& state_path, drivers::ComputeDriver& driver,
                   const config::FlavorCatalog& flavors, QemuImg& qemu_img, const Clock& clock);

// kilnd --purge-orphans: removes now, without a grace period, what no record owns (domains,
// instance directories, cleared as `clear` says, and secrets). Prints what it removed.
Result<void> purgeOrphans(const std::string& state_path, drivers::ComputeDriver& driver,
                          drivers::disk::ClearMethod clear);

}  // namespace kiln::maintenance
