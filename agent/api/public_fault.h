#pragma once
// What a caller without compute:instances:show:fault_details sees of an instance's fault: the
// reason, without the host's paths (state_path, device nodes) or the raw output of a tool
// (qemu-img's or iscsiadm's stderr), which tell a tenant how the host is laid out and may quote
// another tenant's names. As nova shows a fault's details to admins only.

#include <string>
#include <string_view>

namespace kiln::api {

// "Cannot create '/var/lib/kiln/instances/u/disk': No space left on device" becomes
// "Cannot create '<host path>': No space left on device"; "qemu-img convert … failed (exit 1):
// <stderr>" becomes "qemu-img convert … failed (exit 1)".
std::string publicFaultMessage(std::string_view message);

}  // namespace kiln::api
