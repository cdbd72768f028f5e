#include "agent/api/api_router.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "agent/api/public_fault.h"
#include "agent/rpc/json_response.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/uuid.h"

namespace kiln::api {

using nlohmann::json;
using rpc::errorResponse;
using rpc::HttpRequest;
using rpc::HttpResponse;
using rpc::jsonResponse;

namespace {

constexpr std::uint64_t kConsoleTailBytes = 1024 * 1024;

HttpResponse methodNotAllowed(const HttpRequest& req) {
  return errorResponse(405, fmt::format("Method {} is not allowed on {}", req.method, req.path));
}

}  // namespace

bool Authorizer::allows(std::string_view operation, const rpc::Target& target) const {
  if (policy_.allows(operation, caller_, target)) return true;
  log::info("Policy denied {} to token {} (roles '{}', project '{}')", operation, caller_.token_id,
            fmt::join(caller_.roles, ","), caller_.project_id);
  return false;
}

HttpResponse policyDenied(std::string_view operation) {
  return errorResponse(403, fmt::format("Policy does not allow {} to be performed.", operation));
}

json instanceView(const state::InstanceRecord& record, const Authorizer& authorize) {
  const bool details =
      record.fault.empty() ||
      authorize.allows("compute:instances:show:fault_details", {{"project_id", record.project_id}});
  return instanceView(record, details);
}

json instanceView(const state::InstanceRecord& record, bool fault_details) {
  json view = state::toJson(record);
  view.erase("request_fingerprint");
  if (view.contains("fault") && !fault_details) {
    view["fault"]["message"] = publicFaultMessage(record.fault);
  }
  // What the API shows of a volume: never its password, sealed or not.
  for (auto& vol : view["volumes"]) {
    vol.erase("sealed_password");
    vol.erase("secret_usage");
  }
  // The interfaces as the API lists them; the VIF as given stays in the store.
  for (auto& iface : view["interfaces"]) iface.erase("vif");
  // Nor a disk's encryption key.
  for (auto& disk : view["disks"]) {
    if (disk.contains("encryption")) disk["encryption"].erase("sealed_key");
  }
  return view;
}

ApiRouter::ApiRouter(lifecycle::InstanceManager& manager, lifecycle::ImageCacheService& images,
                     drivers::ComputeDriver& driver, const config::FlavorCatalog& flavors,
                     AuthSource auth, PolicySource policy, HostIdentity host)
    : manager_(manager),
      images_(images),
      driver_(driver),
      flavors_(flavors),
      auth_(std::move(auth)),
      policy_(std::move(policy)),
      host_(std::move(host)) {}

HttpResponse ApiRouter::handle(const HttpRequest& req) {
  if (req.path == "/healthz") {
    if (req.method != "GET") return methodNotAllowed(req);
    return health();
  }
  auto authenticator = auth_();
  if (!authenticator) return errorResponse(401, "Authentication is not configured");
  auto caller = authenticator->authenticate(req);
  if (!caller) return errorResponse(caller.error());
  auto policy = policy_();
  if (!policy) return errorResponse(500, "The API policy is not loaded");
  const Authorizer authorize(*policy, *caller);

  if (req.path == "/v1/host") {
    if (req.method != "GET") return methodNotAllowed(req);
    if (!authorize.allows("compute:host:show", authorize.ownProject())) {
      return policyDenied("compute:host:show");
    }
    return host();
  }
  if (req.path == "/v1/flavors") {
    if (req.method != "GET") return methodNotAllowed(req);
    if (!authorize.allows("compute:flavors:list", authorize.ownProject())) {
      return policyDenied("compute:flavors:list");
    }
    return flavors();
  }
  if (req.path == "/v1/instances") return instances(req, authorize);
  if (req.path == "/v1/images") return images(req, authorize);
  constexpr std::string_view kImagePrefix = "/v1/images/";
  if (req.path.starts_with(kImagePrefix)) {
    return image(req, authorize, req.path.substr(kImagePrefix.size()));
  }
  constexpr std::string_view kPrefix = "/v1/instances/";
  if (req.path.starts_with(kPrefix)) {
    std::string rest = req.path.substr(kPrefix.size());
    std::string sub;
    if (auto slash = rest.find('/'); slash != std::string::npos) {
      sub = rest.substr(slash + 1);
      rest = rest.substr(0, slash);
    }
    auto uuid = canonicalUuid(rest);
    if (!uuid)
      return errorResponse(400,
                           fmt::format("'{}' is not a valid instance uuid", rest.substr(0, 64)));
    return instance(req, authorize, *uuid, sub);
  }
  return errorResponse(404, fmt::format("No such resource: {}", req.path.substr(0, 256)));
}

HttpResponse ApiRouter::health() {
  bool up = driver_.connected();
  json body = {{"status", up ? "ok" : "degraded"}, {"libvirt", up ? "connected" : "disconnected"}};
  return jsonResponse(up ? 200 : 503, body);
}

HttpResponse ApiRouter::host() {
  auto hv = driver_.hypervisorInfo();
  if (!hv) return errorResponse(hv.error());
  auto usage = manager_.usage();
  auto disk_total = fs::totalBytes(host_.state_path);
  json body = {{"hostname", host_.hostname},
               {"availability_zone", host_.availability_zone},
               {"hypervisor_type", hv->type},
               {"hypervisor_version", hv->version},
               {"libvirt_version", hv->libvirt_version},
               {"vcpus", {{"total", hv->cpus}, {"used", usage.vcpus}}},
               {"memory_mb", {{"total", hv->memory_mb}, {"used", usage.memory_mb}}},
               {"disk_gb",
                {{"total", disk_total ? *disk_total / (1024ULL * 1024 * 1024) : 0},
                 {"used", usage.disk_gb}}},
               {"instances", usage.instances},
               {"block_storage_ip", host_.block_storage_ip},
               {"iscsi_connector", host_.iscsi_connector}};
  // What no instance owns: evidence that the records and the host disagree (docs/operations.md).
  json orphans = json::array();
  for (const auto& o : manager_.orphans()) {
    orphans.push_back({{"kind", o.kind},
                       {"id", o.id},
                       {"first_seen", o.first_seen},
                       {"quarantined", o.quarantined}});
  }
  body["orphans"] = std::move(orphans);
  return jsonResponse(200, body);
}

HttpResponse ApiRouter::flavors() {
  json list = json::array();
  for (const auto& f : flavors_.all()) {
    list.push_back({{"name", f.name},
                    {"vcpus", f.vcpus},
                    {"memory_mb", f.memory_mb},
                    {"root_gb", f.root_gb},
                    {"ephemeral_gb", f.ephemeral_gb},
                    {"extra_specs", f.extra_specs}});
  }
  return jsonResponse(200, {{"flavors", list}});
}

HttpResponse ApiRouter::instances(const HttpRequest& req, const Authorizer& authorize) {
  if (req.method == "GET") {
    if (!authorize.allows("compute:instances:list", authorize.ownProject())) {
      return policyDenied("compute:instances:list");
    }
    // As nova scopes a listing to the caller's project: each instance is shown only to a caller
    // that may show it.
    json list = json::array();
    for (const auto& rec : manager_.list()) {
      if (authorize.allows("compute:instances:show", {{"project_id", rec.project_id}})) {
        list.push_back(instanceView(rec, authorize));
      }
    }
    return jsonResponse(200, {{"instances", list}});
  }
  if (req.method == "POST") return launch(req, authorize);
  return methodNotAllowed(req);
}

HttpResponse ApiRouter::launch(const HttpRequest& req, const Authorizer& authorize) {
  // The operation before the body: a caller who may not launch learns nothing from the body's
  // validation (which flavor names exist, which fields are checked how).
  if (!authorize.allows("compute:instances:create", authorize.ownProject())) {
    return policyDenied("compute:instances:create");
  }
  if (!req.content_type.empty() && !req.content_type.starts_with("application/json")) {
    return errorResponse(415, "The request body must be application/json");
  }
  auto parsed = parseLaunchRequest(req.body, flavors_, authorize.caller().project_id);
  if (!parsed) return errorResponse(parsed.error());
  const rpc::Target target = {{"project_id", parsed->project_id}};
  for (auto [operation, applies] : {
           std::pair{"compute:instances:create", true},
           std::pair{"compute:instances:create:inline_flavor", parsed->flavor.name.empty()},
           std::pair{"compute:instances:create:zero_disk_flavor",
                     parsed->flavor.root_gb == 0 && !parsed->image_id.empty()},
       }) {
    if (applies && !authorize.allows(operation, target)) return policyDenied(operation);
  }
  // An instance the caller may not show is answered like a missing one on every route; for a
  // launch, a uuid another project holds is a 404 too, never a 409 that tells it is in use.
  auto hiddenFromCaller = [&] {
    auto existing = manager_.get(parsed->uuid);
    return existing.ok() &&
           !authorize.allows("compute:instances:show", {{"project_id", existing->project_id}});
  };
  const auto unavailable = [&] {
    return errorResponse(
        404, fmt::format("Instance '{}' does not exist and cannot be launched", parsed->uuid));
  };
  if (hiddenFromCaller()) return unavailable();
  // Glance is asked with the caller's own view when the caller speaks for the instance's
  // project; a scheduler launching for another project leaves it to kiln's token and the rules.
  const rpc::Caller& caller = authorize.caller();
  if (!caller.keystone_token.empty() && !caller.project_id.empty() &&
      caller.project_id == parsed->project_id) {
    parsed->image_token = caller.keystone_token;
  }
  auto accepted = manager_.launch(*parsed);
  if (!accepted) {
    // Made by another project between the look and the launch.
    if (accepted.error().code == ErrorCode::kConflict && hiddenFromCaller()) return unavailable();
    return errorResponse(accepted.error());
  }
  return jsonResponse(202, instanceView(*accepted, authorize));
}

HttpResponse ApiRouter::instance(const HttpRequest& req, const Authorizer& authorize,
                                 const std::string& uuid, const std::string& sub) {
  // The route and method first: they say nothing about the instance, and answer as before.
  const bool port = sub.starts_with("interfaces/") && sub.size() > 11;
  const bool known =
      sub.empty() || sub == "action" || sub == "console" || sub == "interfaces" || port;
  if (!known)
    return errorResponse(404, fmt::format("No such resource: {}", req.path.substr(0, 256)));
  if ((sub.empty() && req.method != "GET" && req.method != "DELETE") ||
      (sub == "action" && req.method != "POST") || (sub == "console" && req.method != "GET") ||
      (sub == "interfaces" && req.method != "POST") || (port && req.method != "DELETE")) {
    return methodNotAllowed(req);
  }
  // The owner decides; an instance the caller may not show is answered like a missing one.
  auto found = manager_.get(uuid);
  if (!found) return errorResponse(found.error());
  const rpc::Target target = {{"project_id", found->project_id}};
  if (!authorize.allows("compute:instances:show", target)) {
    return errorResponse(404, fmt::format("Instance '{}' does not exist", uuid));
  }
  auto permitted = [&](std::string_view operation) {
    return operation == "compute:instances:show" || authorize.allows(operation, target);
  };
  if (sub.empty()) {
    if (req.method == "GET") return jsonResponse(200, instanceView(*found, authorize));
    if (req.method == "DELETE") {
      if (!permitted("compute:instances:delete")) return policyDenied("compute:instances:delete");
      auto rec = manager_.requestDelete(uuid);
      if (!rec) return errorResponse(rec.error());
      return jsonResponse(202, instanceView(*rec, authorize));
    }
    return methodNotAllowed(req);
  }
  if (sub == "action") {
    if (req.method != "POST") return methodNotAllowed(req);
    auto parsed = parseRequestJson(req.body);
    if (!parsed) return errorResponse(parsed.error());  // not JSON, or nested too deep
    json body = std::move(parsed).value();
    if (!body.is_object() || body.size() != 1) {
      return errorResponse(400,
                           "An action body is one object with one key, such as "
                           "{\"attach_volume\": {...}} or {\"detach_volume\": {...}}");
    }
    const std::string action = body.begin().key();
    const json& args = body.begin().value();
    static const std::vector<std::string_view> kActions = {
        "reboot", "stop", "start", "snapshot", "attach_volume", "detach_volume"};
    if (std::find(kActions.begin(), kActions.end(), action) == kActions.end()) {
      return errorResponse(400, fmt::format("Unknown action '{}'", action.substr(0, 64)));
    }
    const std::string operation = "compute:instances:action:" + action;
    if (!permitted(operation)) return policyDenied(operation);
    auto power = [&](lifecycle::PowerAction a) {
      auto rec = manager_.powerAction(uuid, a);
      if (!rec) return errorResponse(rec.error());
      return jsonResponse(202, instanceView(*rec, authorize));
    };
    if (action == "reboot") {
      std::string type = "SOFT";
      if (args.is_object() && args.contains("type")) {
        if (!args["type"].is_string())
          return errorResponse(400, "reboot.type must be SOFT or HARD");
        type = args["type"].get<std::string>();
      } else if (!args.is_object()) {
        return errorResponse(400, "reboot takes {\"type\": \"SOFT\"|\"HARD\"}");
      }
      if (type != "SOFT" && type != "HARD") {
        return errorResponse(400, "reboot.type must be SOFT or HARD");
      }
      return power(type == "HARD" ? lifecycle::PowerAction::kHardReboot
                                  : lifecycle::PowerAction::kSoftReboot);
    }
    if (action == "stop" || action == "start") {
      if (!args.is_object() || !args.empty()) {
        return errorResponse(400, fmt::format("{} takes an empty object", action));
      }
      return power(action == "stop" ? lifecycle::PowerAction::kStop
                                    : lifecycle::PowerAction::kStart);
    }
    if (action == "snapshot") {
      if (!args.is_object() || !args.contains("name") || !args["name"].is_string()) {
        return errorResponse(400, "snapshot takes {\"name\": \"...\", \"metadata\": {...}}");
      }
      for (const auto& [key, value] : args.items()) {
        (void)value;
        if (key != "name" && key != "metadata") {
          return errorResponse(
              400, fmt::format("snapshot has an unknown field '{}'", key.substr(0, 64)));
        }
      }
      std::string name = args["name"].get<std::string>();
      if (name.empty() || name.size() > 255 ||
          std::any_of(name.begin(), name.end(), [](unsigned char c) { return c < 0x20; })) {
        return errorResponse(400,
                             "snapshot.name must be 1 to 255 bytes without control characters");
      }
      json metadata = args.value("metadata", json::object());
      if (!metadata.is_object()) return errorResponse(400, "snapshot.metadata must be an object");
      for (const auto& [key, value] : metadata.items()) {
        (void)key;
        if (!value.is_string())
          return errorResponse(400, "snapshot.metadata values must be strings");
      }
      auto image_id = manager_.snapshot(uuid, name, metadata);
      if (!image_id) return errorResponse(image_id.error());
      return jsonResponse(202, {{"image_id", *image_id}});
    }
    if (action == "attach_volume") {
      auto bdm = parseBlockDevice(args);
      if (!bdm) return errorResponse(bdm.error());
      auto rec = manager_.attachVolume(uuid, std::move(bdm).value());
      if (!rec) return errorResponse(rec.error());
      return jsonResponse(202, instanceView(*rec, authorize));
    }
    if (action == "detach_volume") {
      if (!args.is_object() || !args.contains("volume_id") || !args["volume_id"].is_string() ||
          args.size() != 1) {
        return errorResponse(400, "detach_volume takes {\"volume_id\": \"...\"}");
      }
      auto rec = manager_.detachVolume(uuid, args["volume_id"].get<std::string>());
      if (!rec) return errorResponse(rec.error());
      return jsonResponse(202, instanceView(*rec, authorize));
    }
    return errorResponse(400, fmt::format("Unknown action '{}'", action.substr(0, 64)));
  }
  // nova's os-interface: POST a VIF to plug it, DELETE the port to unplug it.
  constexpr std::string_view kInterfaces = "interfaces";
  if (sub == kInterfaces) {
    if (!permitted("compute:instances:interfaces:attach")) {
      return policyDenied("compute:instances:interfaces:attach");
    }
    auto parsed = parseRequestJson(req.body);
    if (!parsed) return errorResponse(parsed.error());
    auto vif = parseVif(*parsed, "interface");
    if (!vif) return errorResponse(vif.error());
    auto rec = manager_.attachInterface(uuid, std::move(vif).value());
    if (!rec) return errorResponse(rec.error());
    return jsonResponse(202, instanceView(*rec, authorize));
  }
  if (port) {
    if (!permitted("compute:instances:interfaces:detach")) {
      return policyDenied("compute:instances:interfaces:detach");
    }
    const std::string port_id = sub.substr(kInterfaces.size() + 1);
    if (!isValidProjectId(port_id)) {
      return errorResponse(400, "The port id must be 1 to 64 letters, digits, '_' or '-'");
    }
    auto rec = manager_.detachInterface(uuid, port_id);
    if (!rec) return errorResponse(rec.error());
    return jsonResponse(202, instanceView(*rec, authorize));
  }
  if (sub == "console") {
    if (req.method != "GET") return methodNotAllowed(req);
    if (!permitted("compute:instances:console")) return policyDenied("compute:instances:console");
    auto text = manager_.consoleLog(uuid, kConsoleTailBytes);
    if (!text) return errorResponse(text.error());
    HttpResponse resp;
    resp.status = 200;
    resp.content_type = "text/plain; charset=utf-8";
    resp.body = std::move(text).value();
    return resp;
  }
  return errorResponse(404, fmt::format("No such resource: {}", req.path.substr(0, 256)));
}

HttpResponse ApiRouter::images(const HttpRequest& req, const Authorizer& authorize) {
  if (req.method != "GET") return methodNotAllowed(req);
  if (!authorize.allows("compute:images:list", authorize.ownProject())) {
    return policyDenied("compute:images:list");
  }
  return jsonResponse(200, images_.list());
}

HttpResponse ApiRouter::image(const HttpRequest& req, const Authorizer& authorize,
                              const std::string& image_id) {
  const char* operation = req.method == "GET"      ? "compute:images:show"
                          : req.method == "PUT"    ? "compute:images:precache"
                          : req.method == "DELETE" ? "compute:images:evict"
                                                   : nullptr;
  if (operation == nullptr) return methodNotAllowed(req);
  if (!authorize.allows(operation, authorize.ownProject())) return policyDenied(operation);
  if (req.method == "GET") {
    auto shown = images_.show(image_id);
    if (!shown) return errorResponse(shown.error());
    return jsonResponse(200, *shown);
  }
  if (req.method == "PUT") {
    auto started = images_.precache(image_id);
    if (!started) return errorResponse(started.error());
    return jsonResponse((*started)["status"] == "cached" ? 200 : 202, *started);
  }
  if (req.method == "DELETE") {
    auto evicted = images_.evict(image_id);
    if (!evicted) return errorResponse(evicted.error());
    HttpResponse resp;
    resp.status = 204;
    return resp;
  }
  return methodNotAllowed(req);
}

}  // namespace kiln::api
