#include "drivers/network/tun_device.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace kiln::drivers::network {

namespace {

Result<UniqueFd> openTun(const std::string& devname, int flags) {
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    return Error::unavailable(
        fmt::format("Could not open /dev/net/tun for tap '{}': {}", devname, std::strerror(errno)));
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, devname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = static_cast<short>(flags);
  if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    int err = errno;
    if (err == EBUSY && (flags & IFF_TUN_EXCL)) {
      return Error::conflict(
          fmt::format("A network device named '{}' appeared while kiln was "
                      "making its tap",
                      devname));
    }
    return Error::unavailable(
        fmt::format("The tun driver refused tap '{}' (TUNSETIFF with flags {:#x}): {}", devname,
                    flags, std::strerror(err)));
  }
  return fd;
}

}  // namespace

int tapFlags(bool multiqueue) {
  return IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (multiqueue ? IFF_MULTI_QUEUE : 0);
}

Result<void> createPersistentTap(const std::string& devname, bool multiqueue) {
  Result<UniqueFd> fd = openTun(devname, tapFlags(multiqueue) | IFF_TUN_EXCL);
  if (!fd) return fd.error();
  if (::ioctl(fd->get(), TUNSETPERSIST, 1) != 0) {
    // Closing the only queue of a tap that is not persistent removes it again.
    return Error::unavailable(fmt::format("The tun driver could not make tap '{}' persistent: {}",
                                          devname, std::strerror(errno)));
  }
  return success();
}

Result<UniqueFd> openTapQueue(const std::string& devname, bool multiqueue) {
  return openTun(devname, tapFlags(multiqueue));
}

}  // namespace kiln::drivers::network
