#pragma once
// Nova's RequestContext as RPC carries it (nova/context.py RequestContext.to_dict()): who asks,
// for which project, with which token and request id. kiln passes a request's own context back
// to the conductor for everything done on its behalf (as nova-compute does), and its own admin
// context for its own work (registration, heartbeats, periodic reports).
//
// A context holds the caller's Keystone token: it is never logged.

#include <nlohmann/json.hpp>
#include <string>

namespace kiln::openstack::nova {

// nova.context.get_admin_context(): is_admin, read_deleted "no", a fresh request id, no user.
nlohmann::json adminContext();

// The context's request id ("req-<uuid>"), for log lines; empty when it has none.
std::string requestIdOf(const nlohmann::json& context);

// "req-<uuid4>", nova's form.
std::string newRequestId();

}  // namespace kiln::openstack::nova
