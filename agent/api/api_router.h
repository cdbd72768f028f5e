#pragma once
// Maps API requests onto the instance manager. Knows the routes and the JSON shapes; knows
// nothing about sockets (agent/rpc does that).
//
// Every route but /healthz authenticates the caller, then asks the policy about exactly one
// operation (docs/policy.md): a denial is 403 naming the operation. Instance routes judge against
// the instance's owner (target project_id). An instance the caller may not even show is answered
// 404, exactly as a missing one, so that callers cannot learn which uuids other projects use;
// a caller that may show it but not act on it gets the 403.

#include <functional>
#include <memory>
#include <string>

#include "agent/lifecycle/image_cache_service.h"
#include "agent/lifecycle/instance_manager.h"
#include "agent/rpc/authenticator.h"
#include "agent/rpc/http_server.h"
#include "agent/rpc/policy.h"
#include "agent/rpc/token_auth.h"
#include "config/flavors.h"
#include "drivers/compute_driver.h"

namespace kiln::api {

struct HostIdentity {
  std::string hostname;
  std::string availability_zone;
  std::string state_path;        // disk_gb.total is the size of this filesystem
  std::string block_storage_ip;  // the address storage traffic uses ([DEFAULT] my_block_storage_ip)
  std::string iscsi_connector;
};

// One request's caller and the policy in force when it arrived.
class Authorizer {
 public:
  Authorizer(const rpc::Policy& policy, const rpc::Caller& caller)
      : policy_(policy), caller_(caller) {}
  // Whether the caller may perform `operation` on `target`.
  bool allows(std::string_view operation, const rpc::Target& target) const;
  // The target of an operation on no particular owner's resource: the caller's own project,
  // as nova does, so that project_id:%(project_id)s rules work there too.
  rpc::Target ownProject() const { return {{"project_id", caller_.project_id}}; }
  const rpc::Caller& caller() const { return caller_; }

 private:
  const rpc::Policy& policy_;
  const rpc::Caller& caller_;
};

// The 403 answer: "Policy does not allow OPERATION to be performed."
rpc::HttpResponse policyDenied(std::string_view operation);

class ApiRouter {
 public:
  // Both are asked at every request, so a reload (SIGHUP) takes effect at the next one.
  using AuthSource = std::function<std::shared_ptr<const rpc::Authenticator>()>;
  using PolicySource = std::function<std::shared_ptr<const rpc::Policy>()>;

  ApiRouter(lifecycle::InstanceManager& manager, lifecycle::ImageCacheService& images,
            drivers::ComputeDriver& driver, const config::FlavorCatalog& flavors, AuthSource auth,
            PolicySource policy, HostIdentity host);

  rpc::HttpResponse handle(const rpc::HttpRequest& request);

 private:
  rpc::HttpResponse health();
  rpc::HttpResponse host();
  rpc::HttpResponse flavors();
  rpc::HttpResponse instances(const rpc::HttpRequest& request, const Authorizer& authorize);
  rpc::HttpResponse launch(const rpc::HttpRequest& request, const Authorizer& authorize);
  rpc::HttpResponse instance(const rpc::HttpRequest& request, const Authorizer& authorize,
                             const std::string& uuid, const std::string& sub);
  rpc::HttpResponse images(const rpc::HttpRequest& request, const Authorizer& authorize);
  rpc::HttpResponse image(const rpc::HttpRequest& request, const Authorizer& authorize,
                          const std::string& image_id);

  lifecycle::InstanceManager& manager_;
  lifecycle::ImageCacheService& images_;
  drivers::ComputeDriver& driver_;
  const config::FlavorCatalog& flavors_;
  AuthSource auth_;
  PolicySource policy_;
  HostIdentity host_;
};

// The API's view of an instance record (the stored form without internal fields). Without
// `fault_details`, a fault's message is the public form (agent/api/public_fault.h).
nlohmann::json instanceView(const state::InstanceRecord& record, bool fault_details = true);

}  // namespace kiln::api
