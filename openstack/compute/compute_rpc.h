#pragma once
// What kilnd answers on Nova's compute topic (compute RPC 6.x, nova/compute/rpcapi.py, and the
// `baseapi` namespace every Nova service serves). Every request gets an answer, never silence:
// a method kiln does not implement is oslo's NoSuchMethod, a version it does not speak is
// UnsupportedVersion, so a caller fails at once instead of waiting rpc_response_timeout.
//
// Methods here are the ones that need no instance; the front defines the instance methods
// (instance_operations.h) over kilnd's lifecycle.

#include <functional>
#include <map>
#include <string>

#include "common/result.h"
#include "openstack/messaging/rpc_transport.h"

namespace kiln::openstack::compute {

// The compute RPC version kiln implements (Zed's ComputeManager target).
inline constexpr const char* kComputeRpcVersion = "6.1";

class ComputeRpc {
 public:
  struct Hooks {
    // set_host_enabled(enabled): an operator disabled or enabled the service through the API.
    std::function<void(bool enabled)> host_enabled;
    // get_host_uptime(): the text of `uptime`, as nova's libvirt driver answers
    // (`openstack hypervisor show` prints it).
    std::function<Result<std::string>()> host_uptime;
  };
  using Method = std::function<messaging::RpcOutcome(const messaging::RpcRequest&)>;

  explicit ComputeRpc(Hooks hooks);

  // Adds (or replaces) a compute method; before the transport starts, never after.
  void define(std::string method, Method handler);
  // What answers a cast of a method kiln lacks that names an instance (it must not keep the
  // task state nova-api gave it); calls of such methods fail with NoSuchMethod.
  void setUnsupportedInstanceCast(Method handler);

  messaging::RpcOutcome handle(const messaging::RpcRequest& request) const;

 private:
  Hooks hooks_;
  std::map<std::string, Method, std::less<>> compute_;
  Method unsupported_instance_cast_;
};

// "6.1" accepts "6.0" and "6.1" (same major, minor not above ours); empty means any.
bool versionCompatible(std::string_view requested, std::string_view implemented);

}  // namespace kiln::openstack::compute
