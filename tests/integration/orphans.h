#pragma once
// The orphan checker of the crash tests: everything a kilnd can leave on the host (libvirt
// domains, files under state_path/instances, NVRAM files, libvirt secrets, iSCSI sessions of the
// stand-in iscsiadm, half-made snapshot images) set against the instances its API lists. What
// no listed instance owns is debris.

#include <set>
#include <string>
#include <vector>

#include "tests/integration/kilnd_harness.h"

namespace kiln::testing {

struct OrphanScope {
  // The instance uuids the test used: NVRAM files and CHAP secrets do not name the state path,
  // so only those of these instances are judged (other tests on this libvirtd are not ours).
  std::set<std::string> uuids;
  // The stand-in iscsiadm's /dev/disk/by-path (KILN_FAKE_ISCSI_DEVDIR), when the kernel
  // connector is used.
  std::string stand_in_devdir;
};

// One line per piece of debris ("domain kiln-<uuid>: no instance owns it"); empty when clean.
// Needs kilnd running (it reads the API's instance list).
std::vector<std::string> findOrphans(KilndHarness& kilnd, const OrphanScope& scope);

}  // namespace kiln::testing
