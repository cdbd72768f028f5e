#pragma once
// nova-conductor's object protocol (nova/conductor/rpcapi.py, API 3.0), the only way a compute
// service reads and writes Nova's database:
//
//   object_class_action_versions(objname, objmethod, object_versions, args, kwargs)
//       a classmethod: Service.get_by_host_and_binary, ComputeNode.get_by_host_and_nodename, ...
//   object_action(objinst, objmethod, args, kwargs) -> [updates, result]
//       a method on an object kiln holds: create, save, destroy, ...
//
// object_versions is the manifest of every object version kiln understands (Zed's); the
// conductor backports what it returns to those versions.

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/result.h"
#include "openstack/messaging/rpc_transport.h"
#include "openstack/nova/nova_object.h"

namespace kiln::openstack::nova {

// The versions of Nova's objects in Zed (nova 26), as obj_tree_get_versions() lists them.
const nlohmann::json& objectVersions();
// The version of one object kiln creates ("Service" -> "1.22").
std::string objectVersion(const std::string& name);

class Conductor {
 public:
  Conductor(messaging::RpcTransport& rpc, std::chrono::milliseconds timeout);

  // A classmethod's result as sent (a primitive, a list's primitive, or plain JSON).
  Result<nlohmann::json> classAction(const nlohmann::json& context, const std::string& objname,
                                     const std::string& method, nlohmann::json args,
                                     nlohmann::json kwargs = nlohmann::json::object());
  // Runs `method` on `object`, applies the conductor's updates to it, returns the method's
  // result.
  Result<nlohmann::json> objectAction(const nlohmann::json& context, NovaObject& object,
                                      const std::string& method,
                                      nlohmann::json args = nlohmann::json::array(),
                                      nlohmann::json kwargs = nlohmann::json::object());

 private:
  messaging::RpcTransport& rpc_;
  std::chrono::milliseconds timeout_;
};

}  // namespace kiln::openstack::nova
