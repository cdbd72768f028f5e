#pragma once
// The tun driver's ioctls for the taps kiln makes. The domain uses them with
// <interface type='ethernet'><target dev=... managed='no'/>: libvirtd (root, CAP_NET_ADMIN)
// opens the existing tap with TUNSETIFF and hands the queue fds to QEMU, so the tap needs no
// owner or group (TUNSETOWNER) for QEMU's user.

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace kiln::drivers::network {

// The flags kiln creates taps with and libvirt opens them with. IFF_MULTI_QUEUE must match
// between the creator and every opener (the kernel refuses a mismatch with EINVAL); IFF_VNET_HDR
// and IFF_NO_PI are taken from each opener, so a tap made with them works for any NIC model.
int tapFlags(bool multiqueue);

// Makes a persistent tap named `devname`. kConflict when a device of that name exists already
// (IFF_TUN_EXCL: the kernel decides, so a concurrent creator is never mistaken for this call).
Result<void> createPersistentTap(const std::string& devname, bool multiqueue);

// Opens one queue of an existing tap, as libvirt does; for tests, which play the guest.
Result<UniqueFd> openTapQueue(const std::string& devname, bool multiqueue);

}  // namespace kiln::drivers::network
