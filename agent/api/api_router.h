#pragma once
// Maps API requests onto the instance manager. Knows the routes and the JSON shapes; knows
// nothing about sockets (agent/rpc does that).

#include <functional>
#include <memory>
#include <string>

#include "agent/lifecycle/image_cache_service.h"
#include "agent/lifecycle/instance_manager.h"
#include "agent/rpc/http_server.h"
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

class ApiRouter {
 public:
  using AuthSource = std::function<std::shared_ptr<const rpc::TokenAuthenticator>()>;

  ApiRouter(lifecycle::InstanceManager& manager, lifecycle::ImageCacheService& images,
            drivers::ComputeDriver& driver, const config::FlavorCatalog& flavors, AuthSource auth,
            HostIdentity host);

  rpc::HttpResponse handle(const rpc::HttpRequest& request);

 private:
  rpc::HttpResponse health();
  rpc::HttpResponse host();
  rpc::HttpResponse flavors();
  rpc::HttpResponse instances(const rpc::HttpRequest& request);
  rpc::HttpResponse instance(const rpc::HttpRequest& request, const std::string& uuid,
                             const std::string& sub);
  rpc::HttpResponse images(const rpc::HttpRequest& request);
  rpc::HttpResponse image(const rpc::HttpRequest& request, const std::string& image_id);

  lifecycle::InstanceManager& manager_;
  lifecycle::ImageCacheService& images_;
  drivers::ComputeDriver& driver_;
  const config::FlavorCatalog& flavors_;
  AuthSource auth_;
  HostIdentity host_;
};

// The API's view of an instance record (the stored form without internal fields).
nlohmann::json instanceView(const state::InstanceRecord& record);

}  // namespace kiln::api
