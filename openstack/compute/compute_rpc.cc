#include "openstack/compute/compute_rpc.h"

#include <fmt/format.h>

#include <charconv>

#include "common/log.h"
#include "openstack/nova/request_context.h"

namespace kiln::openstack::compute {
namespace {

using messaging::RpcOutcome;
using messaging::RpcRequest;
using nlohmann::json;

constexpr const char* kDispatcherModule = "oslo_messaging.rpc.dispatcher";
// nova's BaseRPCAPI (nova/baserpc.py).
constexpr const char* kBaseApiVersion = "1.1";

bool parseVersion(std::string_view text, int& major, int& minor) {
  const auto dot = text.find('.');
  const std::string_view major_text = text.substr(0, dot);
  const std::string_view minor_text = dot == std::string_view::npos ? "0" : text.substr(dot + 1);
  const auto [m_end, m_ec] =
      std::from_chars(major_text.data(), major_text.data() + major_text.size(), major);
  const auto [n_end, n_ec] =
      std::from_chars(minor_text.data(), minor_text.data() + minor_text.size(), minor);
  return m_ec == std::errc() && n_ec == std::errc() &&
         m_end == major_text.data() + major_text.size() &&
         n_end == minor_text.data() + minor_text.size();
}

RpcOutcome unsupportedVersion(const RpcRequest& request) {
  return RpcOutcome::fail(
      "UnsupportedVersion", kDispatcherModule,
      fmt::format("Endpoint does not support RPC version {}. Attempted method: {}", request.version,
                  request.method),
      json{{"version", request.version}, {"method", request.method}});
}

RpcOutcome noSuchMethod(const RpcRequest& request) {
  return RpcOutcome::fail("NoSuchMethod", kDispatcherModule,
                          fmt::format("Endpoint does not support RPC method {}", request.method),
                          json{{"method", request.method}});
}

}  // namespace

bool versionCompatible(std::string_view requested, std::string_view implemented) {
  if (requested.empty()) return true;
  int req_major = 0, req_minor = 0, impl_major = 0, impl_minor = 0;
  if (!parseVersion(requested, req_major, req_minor) ||
      !parseVersion(implemented, impl_major, impl_minor)) {
    return false;
  }
  return req_major == impl_major && req_minor <= impl_minor;
}

ComputeRpc::ComputeRpc(Hooks hooks) : hooks_(std::move(hooks)) {
  compute_["set_host_enabled"] = [this](const RpcRequest& request) {
    const auto enabled = request.args.find("enabled");
    if (enabled == request.args.end() || !enabled->is_boolean()) {
      return RpcOutcome::fail("InvalidInput", "nova.exception",
                              "set_host_enabled needs a boolean 'enabled'",
                              json{{"reason", "set_host_enabled needs a boolean 'enabled'"}});
    }
    if (hooks_.host_enabled) hooks_.host_enabled(enabled->get<bool>());
    // What nova's manager answers for drivers without set_host_enabled (every driver but xenapi).
    return RpcOutcome::ok(enabled->get<bool>() ? "enabled" : "disabled");
  };
  compute_["get_host_uptime"] = [this](const RpcRequest&) {
    if (!hooks_.host_uptime) {
      return RpcOutcome::fail("NotImplementedError", "builtins", "");
    }
    auto uptime = hooks_.host_uptime();
    if (!uptime) {
      return RpcOutcome::fail("NovaException", "nova.exception", uptime.error().message,
                              json::object());
    }
    return RpcOutcome::ok(*uptime);
  };
}

void ComputeRpc::define(std::string method, Method handler) {
  compute_[std::move(method)] = std::move(handler);
}

void ComputeRpc::setUnsupportedInstanceCast(Method handler) {
  unsupported_instance_cast_ = std::move(handler);
}

RpcOutcome ComputeRpc::handle(const RpcRequest& request) const {
  if (request.namespace_ == "baseapi") {
    if (!versionCompatible(request.version, kBaseApiVersion)) return unsupportedVersion(request);
    if (request.method == "ping") {
      return RpcOutcome::ok(
          json{{"service", "compute"}, {"arg", request.args.value("arg", json())}});
    }
    if (request.method == "get_backdoor_port") return RpcOutcome::ok(nullptr);
    return noSuchMethod(request);
  }
  if (!request.namespace_.empty()) {
    return RpcOutcome::fail(
        "UnsupportedVersion", kDispatcherModule,
        fmt::format("Endpoint does not support RPC namespace {}", request.namespace_),
        json{{"version", request.version}, {"method", request.method}});
  }
  if (!versionCompatible(request.version, kComputeRpcVersion)) return unsupportedVersion(request);
  const auto method = compute_.find(request.method);
  if (method == compute_.end()) {
    if (!request.isCall() && request.args.contains("instance") && unsupported_instance_cast_)
      return unsupported_instance_cast_(request);
    log::warn("OpenStack: compute RPC '{}' (version {}, request {}) is not supported by kiln{}",
              request.method, request.version, nova::requestIdOf(request.context),
              request.isCall() ? "" : " and was dropped");
    return noSuchMethod(request);
  }
  return method->second(request);
}

}  // namespace kiln::openstack::compute
