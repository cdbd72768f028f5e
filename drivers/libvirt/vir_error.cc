#include "drivers/libvirt/vir_error.h"

#include <fmt/format.h>
#include <libvirt/libvirt.h>

namespace kiln::drivers::libvirt {
namespace {
void ignoreError(void*, virErrorPtr) {}
}  // namespace

void silenceDefaultErrorHandler() { virSetErrorFunc(nullptr, ignoreError); }

bool isConnectionError(int code, int domain) {
  return code == VIR_ERR_NO_CONNECT || code == VIR_ERR_INVALID_CONN ||
         ((code == VIR_ERR_SYSTEM_ERROR || code == VIR_ERR_INTERNAL_ERROR) &&
          (domain == VIR_FROM_REMOTE || domain == VIR_FROM_RPC));
}

Error takeLastError(std::string_view what) {
  virError copy{};
  if (virCopyLastError(&copy) < 0 || copy.code == VIR_ERR_OK) {
    virResetLastError();
    return Error::internal(fmt::format("{} failed without a libvirt error", what));
  }
  std::string message = copy.message ? copy.message : "unknown libvirt error";
  ErrorCode code = ErrorCode::kInternal;
  if (copy.code == VIR_ERR_NO_DOMAIN || copy.code == VIR_ERR_NO_SECRET) code = ErrorCode::kNotFound;
  if (isConnectionError(copy.code, copy.domain)) code = ErrorCode::kUnavailable;
  if (copy.code == VIR_ERR_OPERATION_INVALID) code = ErrorCode::kConflict;
  if (copy.code == VIR_ERR_INVALID_ARG || copy.code == VIR_ERR_NO_SUPPORT) {
    code = ErrorCode::kInvalidArgument;
  }
  virResetError(&copy);
  virResetLastError();
  return Error{code, fmt::format("{} failed: {}", what, message)};
}

}  // namespace kiln::drivers::libvirt
