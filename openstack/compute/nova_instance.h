#pragma once
// One of Nova's instances as the compute manager handles it: the Instance object received in an
// RPC request, saved through the conductor with the state changes nova-compute makes and the
// expected task state it names (so that a delete or another action that came meanwhile wins, as
// in nova), the instance-action events `openstack server event list` shows, and the fault
// `openstack server show` shows. All in the request's own context (its request id ties the
// events to the action nova-api recorded).

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "openstack/messaging/rpc_transport.h"
#include "openstack/nova/conductor.h"
#include "openstack/nova/nova_object.h"

namespace kiln::openstack::compute {

class NovaInstance {
 public:
  NovaInstance(nova::Conductor& conductor, nlohmann::json context, nova::NovaObject instance,
               std::string host);
  // The `instance` argument of a compute RPC request, in the request's context; nothing (and an
  // error logged, naming the method) when the argument is not a versioned object's primitive.
  static std::optional<NovaInstance> fromRequest(nova::Conductor& conductor,
                                                 const messaging::RpcRequest& request,
                                                 const std::string& host);

  const std::string& uuid() const { return uuid_; }
  const nova::NovaObject& object() const { return instance_; }
  nova::NovaObject& object() { return instance_; }
  const nlohmann::json& context() const { return context_; }

  // Sets `fields` and saves them. `expected_task_state`: the task states the row must be in (a
  // JSON null stands for None); Nova refuses the save otherwise (UnexpectedTaskStateError, an
  // error of kConflict; UnexpectedDeletingTaskStateError when a delete came first).
  Result<void> save(const nlohmann::json& fields,
                    std::optional<std::vector<nlohmann::json>> expected_task_state = std::nullopt);

  // InstanceActionEvent.event_start / event_finish_with_failure for `event`
  // ("compute__do_build_and_run_instance"). A failure passes its message as exc_val and a
  // traceback-like text as exc_tb, as nova's serialize_args turns them into strings.
  Result<void> eventStart(const std::string& event);
  Result<void> eventFinish(const std::string& event, const std::string& failure = "");

  // An InstanceFault, as compute_utils.add_instance_fault_from_exc: code 500, the message (at
  // most 255 characters, Nova's column), the details.
  Result<void> addFault(const std::string& message, const std::string& details = "",
                        int code = 500);

  // The same three for the record only: a failure to record is logged, never allowed to stop
  // the operation it describes (nova's EventReporter and fault decorators behave alike).
  void recordStart(const std::string& event);
  void recordFinish(const std::string& event, const std::string& failure = "");
  void recordFault(const std::string& message, int code = 500);

  // Instance.destroy(): the last step of a delete.
  Result<void> destroy();

 private:
  nova::Conductor& conductor_;
  const nlohmann::json context_;
  nova::NovaObject instance_;
  const std::string host_;
  const std::string uuid_;
};

// nova's timeutils.utcnow() as a DateTimeField primitive: "2026-12-04T19:30:00Z".
std::string novaTimestamp();

}  // namespace kiln::openstack::compute
