// Nova's versioned-object primitives: what kiln receives is kept, only what kiln sets is listed as
// changed, and the conductor's updates replace the changes.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "openstack/nova/conductor.h"
#include "openstack/nova/nova_object.h"
#include "openstack/nova/request_context.h"

namespace {

using kiln::openstack::nova::NovaObject;
using nlohmann::json;

TEST_CASE("nova object: a received primitive keeps every field and lists only kiln's changes") {
  const json received = {{"nova_object.name", "Instance"},
                         {"nova_object.namespace", "nova"},
                         {"nova_object.version", "2.7"},
                         {"nova_object.data",
                          {{"uuid", "u"},
                           {"vm_state", "building"},
                           {"task_state", "scheduling"},
                           {"flavor", {{"nova_object.name", "Flavor"}}}}},
                         {"nova_object.changes", json::array()}};
  auto object = NovaObject::fromPrimitive(received);
  REQUIRE(object.ok());
  CHECK(object->text("vm_state") == "building");
  CHECK(object->changes().empty());
  object->set("task_state", nullptr);
  const json sent = object->primitive();
  CHECK(sent.at("nova_object.changes") == json{"task_state"});
  CHECK(sent.at("nova_object.data").at("flavor") == received["nova_object.data"]["flavor"]);
  CHECK(sent.at("nova_object.data").at("task_state").is_null());

  REQUIRE(object
              ->applyUpdates(
                  {{"updated_at", "2026-12-03T12:00:00Z"}, {"obj_what_changed", json::array()}})
              .ok());
  CHECK(object->changes().empty());
  CHECK(object->text("updated_at") == "2026-12-03T12:00:00Z");
  CHECK_FALSE(object->primitive().contains("nova_object.changes"));
}

TEST_CASE("nova object: what is refused") {
  CHECK_FALSE(NovaObject::fromPrimitive(json::array()).ok());
  CHECK_FALSE(NovaObject::fromPrimitive({{"nova_object.name", "X"}}).ok());
  CHECK_FALSE(NovaObject::fromPrimitive({{"nova_object.name", "X"},
                                         {"nova_object.version", "1.0"},
                                         {"nova_object.namespace", "other"}})
                  .ok());
  CHECK_FALSE(
      NovaObject::fromPrimitive(
          {{"nova_object.name", "X"}, {"nova_object.version", "1.0"}, {"nova_object.data", 5}})
          .ok());
}

TEST_CASE("nova object: Zed's versions and the admin context") {
  CHECK(kiln::openstack::nova::objectVersion("Service") == "1.22");
  CHECK(kiln::openstack::nova::objectVersion("Instance") == "2.7");
  CHECK(kiln::openstack::nova::objectVersion("ComputeNode") == "1.19");
  const json context = kiln::openstack::nova::adminContext();
  CHECK(context.at("is_admin") == true);
  CHECK(context.at("read_deleted") == "no");
  CHECK(kiln::openstack::nova::requestIdOf(context).starts_with("req-"));
  CHECK(context.at("auth_token").is_null());
}

}  // namespace
