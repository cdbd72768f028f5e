#pragma once
#include <libvirt/virterror.h>

#include <string_view>

#include "common/result.h"

namespace kiln::drivers::libvirt {

// Copies libvirt's last error of this thread into a kiln Error and resets it. Call it at once
// after the failing call, before any other libvirt call on the same thread.
Error takeLastError(std::string_view what);

// True when the last error (already taken) means the connection to libvirtd broke.
bool isConnectionError(int vir_code, int vir_domain);

// Installs a no-op error handler so libvirt does not print errors to stderr itself.
void silenceDefaultErrorHandler();

}  // namespace kiln::drivers::libvirt
