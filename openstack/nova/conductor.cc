#include "openstack/nova/conductor.h"

#include <fmt/format.h>

namespace kiln::openstack::nova {
namespace {

using nlohmann::json;

const messaging::RpcTarget kConductor{"conductor", "", "3.0", ""};

}  // namespace

const json& objectVersions() {
  // From nova 26.2.2: base.obj_tree_get_versions() of Instance, Service, BlockDeviceMappingList,
  // InstanceList, MigrationList, ImageMeta and the action and fault objects, merged.
  static const json versions = {
      {"BlockDeviceMapping", "1.21"},
      {"BlockDeviceMappingList", "1.18"},
      {"ComputeNode", "1.19"},
      {"ComputeNodeList", "1.17"},
      {"DeviceBus", "1.0"},
      {"DeviceMetadata", "1.0"},
      {"EC2Ids", "1.0"},
      {"Flavor", "1.2"},
      {"HVSpec", "1.2"},
      {"ImageMeta", "1.8"},
      {"ImageMetaProps", "1.34"},
      {"Instance", "2.7"},
      {"InstanceAction", "1.2"},
      {"InstanceActionEvent", "1.4"},
      {"InstanceDeviceMetadata", "1.0"},
      {"InstanceFault", "1.2"},
      {"InstanceInfoCache", "1.5"},
      {"InstanceList", "2.6"},
      {"InstanceNUMACell", "1.6"},
      {"InstanceNUMATopology", "1.3"},
      {"InstancePCIRequest", "1.4"},
      {"InstancePCIRequests", "1.1"},
      {"KeyPair", "1.4"},
      {"KeyPairList", "1.3"},
      {"Migration", "1.7"},
      {"MigrationContext", "1.2"},
      {"MigrationList", "1.5"},
      {"PciDevice", "1.7"},
      {"PciDeviceList", "1.3"},
      {"PciDevicePool", "1.1"},
      {"PciDevicePoolList", "1.1"},
      {"Resource", "1.0"},
      {"ResourceList", "1.0"},
      {"ResourceMetadata", "1.0"},
      {"SecurityGroup", "1.2"},
      {"SecurityGroupList", "1.1"},
      {"Service", "1.22"},
      {"ServiceList", "1.19"},
      {"Tag", "1.1"},
      {"TagList", "1.1"},
      {"TrustedCerts", "1.0"},
      {"VirtCPUFeature", "1.0"},
      {"VirtCPUModel", "1.0"},
      {"VirtCPUTopology", "1.0"},
  };
  return versions;
}

std::string objectVersion(const std::string& name) {
  const auto it = objectVersions().find(name);
  return it == objectVersions().end() ? std::string("1.0") : it->get<std::string>();
}

Conductor::Conductor(messaging::RpcTransport& rpc, std::chrono::milliseconds timeout)
    : rpc_(rpc), timeout_(timeout) {}

Result<json> Conductor::classAction(const json& context, const std::string& objname,
                                    const std::string& method, json args, json kwargs) {
  json call = {{"objname", objname},
               {"objmethod", method},
               {"object_versions", objectVersions()},
               {"args", std::move(args)},
               {"kwargs", std::move(kwargs)}};
  return rpc_.call(kConductor, context, "object_class_action_versions", std::move(call), timeout_);
}

Result<json> Conductor::objectAction(const json& context, NovaObject& object,
                                     const std::string& method, json args, json kwargs) {
  json call = {{"objinst", object.primitive()},
               {"objmethod", method},
               {"args", std::move(args)},
               {"kwargs", std::move(kwargs)}};
  auto reply = rpc_.call(kConductor, context, "object_action", std::move(call), timeout_);
  if (!reply) return reply.error();
  // [updates, result]
  if (!reply->is_array() || reply->size() != 2) {
    return Error::internal(
        fmt::format("nova-conductor answered {}.{} with something other than [updates, result]",
                    object.name(), method));
  }
  if (auto applied = object.applyUpdates((*reply)[0]); !applied) return applied.error();
  return std::move((*reply)[1]);
}

}  // namespace kiln::openstack::nova
