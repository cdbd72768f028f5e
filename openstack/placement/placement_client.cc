#include "openstack/placement/placement_client.h"

#include <algorithm>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/strings.h"
#include "common/uuid.h"

namespace kiln::openstack::placement {

using imagecache::HttpResult;
using nlohmann::json;

namespace {

constexpr std::string_view kConcurrentUpdate = "placement.concurrent_update";
constexpr std::size_t kQuotedChars = 600;
// A provider's allocations list every consumer on the host; a few MB even for a big one.
constexpr std::size_t kAnswerMaxBytes = 8 << 20;

Result<std::string> checkedUuid(const std::string& text, std::string_view what) {
  auto canonical = canonicalUuid(text);
  if (!canonical) {
    return Error::invalid(
        fmt::format("{} '{}' is not a UUID", what, strings::printableExcerpt(text, 64)));
  }
  return *canonical;
}

// The error for Placement's answer `reply` to what was asked (`asked`: "setting the inventories
// of resource provider 'x'"), with Placement's own text.
Error failure(const HttpResult& reply, const std::string& asked) {
  ErrorCode code = ErrorCode::kInternal;
  switch (reply.status) {
    case 400:
      code = ErrorCode::kInvalidArgument;
      break;
    case 401:
      code = ErrorCode::kUnauthorized;
      break;
    case 403:
      code = ErrorCode::kForbidden;
      break;
    case 404:
      code = ErrorCode::kNotFound;
      break;
    case 409:
      code = ErrorCode::kConflict;
      break;
    default:
      if (reply.status >= 500) code = ErrorCode::kUnavailable;
  }
  return Error{code, fmt::format("Placement answered HTTP {} to {}: {}", reply.status, asked,
                                 detail::placementErrorText(reply.body))};
}

Result<json> jsonOf(const HttpResult& reply, const std::string& asked) {
  json doc = json::parse(reply.body, nullptr, false);
  if (!doc.is_object()) {
    return Error::unavailable(fmt::format("Placement's answer (HTTP {}) to {} is not a JSON object",
                                          reply.status, asked));
  }
  return doc;
}

std::optional<std::int64_t> intMember(const json& object, std::string_view key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<std::int64_t>();
}

std::string stringMember(const json& object, std::string_view key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<std::int64_t> generationOf(const json& doc, const std::string& asked) {
  auto generation = intMember(doc, "resource_provider_generation");
  if (!generation) {
    return Error::unavailable(
        fmt::format("Placement's answer to {} has no resource_provider_generation", asked));
  }
  return *generation;
}

Result<ResourceProvider> providerOf(const json& doc, const std::string& asked) {
  ResourceProvider provider;
  provider.uuid = stringMember(doc, "uuid");
  provider.name = stringMember(doc, "name");
  auto generation = intMember(doc, "generation");
  if (provider.uuid.empty() || !generation) {
    return Error::unavailable(
        fmt::format("Placement's answer to {} is not a resource provider", asked));
  }
  provider.generation = *generation;
  provider.root_provider_uuid = stringMember(doc, "root_provider_uuid");
  provider.parent_provider_uuid = stringMember(doc, "parent_provider_uuid");
  return provider;
}

json inventoriesJson(const Inventories& inventories) {
  json out = json::object();
  for (const auto& [resource_class, inventory] : inventories) {
    out[resource_class] = {
        {"total", inventory.total},         {"reserved", inventory.reserved},
        {"min_unit", inventory.min_unit},   {"max_unit", inventory.max_unit},
        {"step_size", inventory.step_size}, {"allocation_ratio", inventory.allocation_ratio}};
  }
  return out;
}

std::string quoted(const std::set<std::string>& names) {
  std::vector<std::string> out;
  for (const std::string& name : names) {
    out.push_back("'" + strings::printableExcerpt(name, 255) + "'");
  }
  return fmt::format("{}", fmt::join(out, ", "));
}

std::string collapsedWhitespace(std::string_view text) {
  std::string out;
  bool blank = false;
  for (char c : strings::trim(text)) {
    if (strings::kWhitespace.find(c) != std::string_view::npos) {
      blank = true;
      continue;
    }
    if (blank && !out.empty()) out += ' ';
    blank = false;
    out += c;
  }
  return out;
}

}  // namespace

namespace detail {

std::string placementErrorText(std::string_view body) {
  json doc = json::parse(body, nullptr, false);
  std::vector<std::string> details;
  if (doc.is_object() && doc.contains("errors") && doc["errors"].is_array()) {
    for (const json& error : doc["errors"]) {
      std::string text = collapsedWhitespace(stringMember(error, "detail"));
      if (text.empty()) text = collapsedWhitespace(stringMember(error, "title"));
      if (!text.empty()) details.push_back(std::move(text));
    }
  } else if (doc.is_object() && doc.contains("error") && doc["error"].is_object()) {
    // keystonemiddleware's answer to a bad token, before Placement sees the request.
    std::string text = collapsedWhitespace(stringMember(doc["error"], "message"));
    if (!text.empty()) details.push_back(std::move(text));
  }
  if (details.empty()) {
    std::string text = collapsedWhitespace(body);
    return text.empty() ? "(no text)" : strings::printableExcerpt(text, kQuotedChars);
  }
  return strings::printableExcerpt(fmt::format("{}", fmt::join(details, "; ")), kQuotedChars);
}

std::string placementErrorCode(std::string_view body) {
  json doc = json::parse(body, nullptr, false);
  if (!doc.is_object() || !doc.contains("errors") || !doc["errors"].is_array() ||
      doc["errors"].empty()) {
    return "";
  }
  return stringMember(doc["errors"][0], "code");
}

std::string percentEncode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

}  // namespace detail

struct PlacementClient::HeldInventories {
  std::int64_t generation = 0;
  Inventories inventories;
};

struct PlacementClient::HeldTraits {
  std::int64_t generation = 0;
  std::set<std::string> traits;
};

PlacementClient::PlacementClient(keystone::KeystoneSession& session, PlacementClientOptions options)
    : session_(session), options_(options) {
  options_.max_attempts = std::max(1u, options_.max_attempts);
}

Result<HttpResult> PlacementClient::call(const std::string& method, const std::string& path,
                                         const std::string& body) {
  keystone::ServiceRequest request;
  request.service_type = std::string(kServiceType);
  request.method = method;
  request.path = path;
  request.body = body;
  request.max_body_bytes = kAnswerMaxBytes;
  request.headers = {{"OpenStack-API-Version", std::string(kMicroversion)},
                     {"Accept", "application/json"}};
  if (!body.empty()) request.headers.emplace_back("Content-Type", "application/json");
  return session_.request(request);
}

Result<ResourceProvider> PlacementClient::provider(const std::string& uuid) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  const std::string asked = fmt::format("reading resource provider '{}'", *id);
  auto reply = call("GET", "/resource_providers/" + *id);
  if (!reply) return reply.error();
  if (reply->status != 200) return failure(*reply, asked);
  auto doc = jsonOf(*reply, asked);
  if (!doc) return doc.error();
  return providerOf(*doc, asked);
}

Result<ResourceProvider> PlacementClient::ensureProvider(const std::string& uuid,
                                                         const std::string& name) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  if (name.empty()) {
    return Error::invalid(fmt::format("Resource provider '{}' needs a name", *id));
  }
  auto existing = provider(*id);
  if (existing || existing.error().code != ErrorCode::kNotFound) return existing;

  const std::string asked = fmt::format("creating resource provider '{}' named '{}'", *id,
                                        strings::printableExcerpt(name, 200));
  auto reply = call("POST", "/resource_providers", json{{"uuid", *id}, {"name", name}}.dump());
  if (!reply) return reply.error();
  if (reply->status == 200) {
    auto doc = jsonOf(*reply, asked);
    if (!doc) return doc.error();
    log::info("Created resource provider '{}' named '{}' in Placement", *id,
              strings::printableExcerpt(name, 200));
    return providerOf(*doc, asked);
  }
  if (reply->status != 409) return failure(*reply, asked);

  // Either another kiln thread or process created this very provider a moment ago, or the name
  // belongs to another provider.
  auto raced = provider(*id);
  if (raced || raced.error().code != ErrorCode::kNotFound) return raced;
  const std::string conflict = detail::placementErrorText(reply->body);
  auto named = call("GET", "/resource_providers?name=" + detail::percentEncode(name));
  if (named && named->status == 200) {
    json doc = json::parse(named->body, nullptr, false);
    if (doc.is_object() && doc.contains("resource_providers") &&
        doc["resource_providers"].is_array() && !doc["resource_providers"].empty()) {
      const std::string other = stringMember(doc["resource_providers"][0], "uuid");
      return Error::conflict(fmt::format(
          "Placement already has resource provider '{}' named '{}', so kiln cannot create its "
          "provider '{}' under that name (is another compute node using this host name, or did "
          "this node's uuid change?): {}",
          strings::printableExcerpt(other, 64), strings::printableExcerpt(name, 200), *id,
          conflict));
    }
  }
  return failure(*reply, asked);
}

Result<void> PlacementClient::deleteProvider(const std::string& uuid) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  auto reply = call("DELETE", "/resource_providers/" + *id);
  if (!reply) return reply.error();
  if (reply->status == 204 || reply->status == 404) return success();
  return failure(*reply, fmt::format("deleting resource provider '{}'", *id));
}

Result<PlacementClient::HeldInventories> PlacementClient::readInventories(const std::string& id) {
  const std::string asked = fmt::format("reading the inventories of resource provider '{}'", id);
  auto reply = call("GET", "/resource_providers/" + id + "/inventories");
  if (!reply) return reply.error();
  if (reply->status != 200) return failure(*reply, asked);
  auto doc = jsonOf(*reply, asked);
  if (!doc) return doc.error();
  HeldInventories held;
  auto generation = generationOf(*doc, asked);
  if (!generation) return generation.error();
  held.generation = *generation;
  if (!doc->contains("inventories") || !(*doc)["inventories"].is_object()) {
    return Error::unavailable(fmt::format("Placement's answer to {} has no inventories", asked));
  }
  for (const auto& [resource_class, fields] : (*doc)["inventories"].items()) {
    Inventory inventory;
    auto total = intMember(fields, "total"), reserved = intMember(fields, "reserved"),
         min_unit = intMember(fields, "min_unit"), max_unit = intMember(fields, "max_unit"),
         step_size = intMember(fields, "step_size");
    auto ratio = fields.find("allocation_ratio");
    if (!total || !reserved || !min_unit || !max_unit || !step_size || ratio == fields.end() ||
        !ratio->is_number()) {
      return Error::unavailable(
          fmt::format("Placement's answer to {} has an incomplete {} inventory", asked,
                      strings::printableExcerpt(resource_class, 64)));
    }
    inventory.total = *total;
    inventory.reserved = *reserved;
    inventory.min_unit = *min_unit;
    inventory.max_unit = *max_unit;
    inventory.step_size = *step_size;
    inventory.allocation_ratio = ratio->get<double>();
    held.inventories.emplace(resource_class, inventory);
  }
  return held;
}

Result<Inventories> PlacementClient::inventories(const std::string& uuid) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  auto held = readInventories(*id);
  if (!held) return held.error();
  return std::move(held->inventories);
}

Result<std::int64_t> PlacementClient::setInventories(const std::string& uuid,
                                                     const Inventories& inventories) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  const std::string asked = fmt::format("setting the inventories of resource provider '{}'", *id);
  std::string last_conflict;
  for (unsigned attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    auto held = readInventories(*id);
    if (!held) return held.error();
    if (sameInventories(held->inventories, inventories)) return held->generation;
    json body = {{"resource_provider_generation", held->generation},
                 {"inventories", inventoriesJson(inventories)}};
    auto reply = call("PUT", "/resource_providers/" + *id + "/inventories", body.dump());
    if (!reply) return reply.error();
    if (reply->status == 200) {
      auto doc = jsonOf(*reply, asked);
      if (!doc) return doc.error();
      return generationOf(*doc, asked);
    }
    if (reply->status != 409 || detail::placementErrorCode(reply->body) != kConcurrentUpdate) {
      return failure(*reply, asked);
    }
    last_conflict = detail::placementErrorText(reply->body);
    log::info(
        "Resource provider '{}' changed under kiln (generation {} is stale); reading it "
        "again (attempt {} of {})",
        *id, held->generation, attempt, options_.max_attempts);
  }
  return Error::conflict(fmt::format(
      "Placement refused {} {} times: other writers changed the provider each time ({})", asked,
      options_.max_attempts, last_conflict));
}

Result<PlacementClient::HeldTraits> PlacementClient::readTraits(const std::string& id) {
  const std::string asked = fmt::format("reading the traits of resource provider '{}'", id);
  auto reply = call("GET", "/resource_providers/" + id + "/traits");
  if (!reply) return reply.error();
  if (reply->status != 200) return failure(*reply, asked);
  auto doc = jsonOf(*reply, asked);
  if (!doc) return doc.error();
  HeldTraits held;
  auto generation = generationOf(*doc, asked);
  if (!generation) return generation.error();
  held.generation = *generation;
  if (!doc->contains("traits") || !(*doc)["traits"].is_array()) {
    return Error::unavailable(fmt::format("Placement's answer to {} has no traits", asked));
  }
  for (const json& trait : (*doc)["traits"]) {
    if (trait.is_string()) held.traits.insert(trait.get<std::string>());
  }
  return held;
}

Result<std::set<std::string>> PlacementClient::traits(const std::string& uuid) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  auto held = readTraits(*id);
  if (!held) return held.error();
  return std::move(held->traits);
}

Result<std::set<std::string>> PlacementClient::unknownTraits(const std::set<std::string>& traits) {
  std::string names;
  for (const std::string& trait : traits) {
    if (!names.empty()) names += ',';
    names += detail::percentEncode(trait);
  }
  auto reply = call("GET", "/traits?name=in:" + names);
  if (!reply) return reply.error();
  if (reply->status != 200) return failure(*reply, "listing traits");
  auto doc = jsonOf(*reply, "listing traits");
  if (!doc) return doc.error();
  std::set<std::string> unknown = traits;
  if (doc->contains("traits") && (*doc)["traits"].is_array()) {
    for (const json& known : (*doc)["traits"]) {
      if (known.is_string()) unknown.erase(known.get<std::string>());
    }
  }
  return unknown;
}

Result<std::int64_t> PlacementClient::writeTraits(
    const std::string& id,
    const std::function<std::set<std::string>(const std::set<std::string>&)>& wanted) {
  const std::string asked = fmt::format("setting the traits of resource provider '{}'", id);
  std::string last_conflict;
  for (unsigned attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    auto held = readTraits(id);
    if (!held) return held.error();
    const std::set<std::string> traits = wanted(held->traits);
    if (traits == held->traits) return held->generation;
    json body = {{"resource_provider_generation", held->generation}, {"traits", traits}};
    auto reply = call("PUT", "/resource_providers/" + id + "/traits", body.dump());
    if (!reply) return reply.error();
    if (reply->status == 200) {
      auto doc = jsonOf(*reply, asked);
      if (!doc) return doc.error();
      return generationOf(*doc, asked);
    }
    if (reply->status == 400) {
      // Placement names the unknown traits in its text, in no particular order; asking it which
      // of ours it knows gives the exact list.
      auto unknown = unknownTraits(traits);
      if (unknown && !unknown->empty()) {
        return Error::invalid(fmt::format(
            "Placement does not know the trait(s) {}, so resource provider '{}' cannot have "
            "them: {}",
            quoted(*unknown), id, detail::placementErrorText(reply->body)));
      }
      return failure(*reply, asked);
    }
    if (reply->status != 409 || detail::placementErrorCode(reply->body) != kConcurrentUpdate) {
      return failure(*reply, asked);
    }
    last_conflict = detail::placementErrorText(reply->body);
    log::info(
        "Resource provider '{}' changed under kiln (generation {} is stale); reading its "
        "traits again (attempt {} of {})",
        id, held->generation, attempt, options_.max_attempts);
  }
  return Error::conflict(fmt::format(
      "Placement refused {} {} times: other writers changed the provider each time ({})", asked,
      options_.max_attempts, last_conflict));
}

Result<std::int64_t> PlacementClient::setTraits(const std::string& uuid,
                                                const std::set<std::string>& traits) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  return writeTraits(*id, [&](const std::set<std::string>&) { return traits; });
}

Result<std::int64_t> PlacementClient::setOwnedTraits(const std::string& uuid,
                                                     const std::set<std::string>& traits,
                                                     const std::set<std::string>& owned) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  return writeTraits(*id, [&](const std::set<std::string>& held) {
    std::set<std::string> out = traits;
    for (const std::string& trait : held) {
      if (!owned.contains(trait)) out.insert(trait);
    }
    return out;
  });
}

Result<void> PlacementClient::deleteAllocations(const std::string& consumer_uuid) {
  auto id = checkedUuid(consumer_uuid, "Consumer");
  if (!id) return id.error();
  auto reply = call("DELETE", "/allocations/" + *id);
  if (!reply) return reply.error();
  if (reply->status == 204 || reply->status == 404) return success();
  return failure(*reply, fmt::format("deleting the allocations of consumer '{}'", *id));
}

Result<ProviderAllocations> PlacementClient::providerAllocations(const std::string& uuid) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  const std::string asked = fmt::format("reading the allocations of resource provider '{}'", *id);
  auto reply = call("GET", "/resource_providers/" + *id + "/allocations");
  if (!reply) return reply.error();
  if (reply->status != 200) return failure(*reply, asked);
  auto doc = jsonOf(*reply, asked);
  if (!doc) return doc.error();
  ProviderAllocations out;
  auto generation = generationOf(*doc, asked);
  if (!generation) return generation.error();
  out.generation = *generation;
  if (!doc->contains("allocations") || !(*doc)["allocations"].is_object()) {
    return Error::unavailable(fmt::format("Placement's answer to {} has no allocations", asked));
  }
  for (const auto& [consumer, allocation] : (*doc)["allocations"].items()) {
    auto& resources = out.consumers[consumer];
    if (!allocation.is_object() || !allocation.contains("resources") ||
        !allocation["resources"].is_object()) {
      continue;
    }
    for (const auto& [resource_class, amount] : allocation["resources"].items()) {
      if (amount.is_number_integer()) resources[resource_class] = amount.get<std::int64_t>();
    }
  }
  return out;
}

Result<ProviderUsages> PlacementClient::usages(const std::string& uuid) {
  auto id = checkedUuid(uuid, "Resource provider");
  if (!id) return id.error();
  const std::string asked = fmt::format("reading the usages of resource provider '{}'", *id);
  auto reply = call("GET", "/resource_providers/" + *id + "/usages");
  if (!reply) return reply.error();
  if (reply->status != 200) return failure(*reply, asked);
  auto doc = jsonOf(*reply, asked);
  if (!doc) return doc.error();
  ProviderUsages out;
  auto generation = generationOf(*doc, asked);
  if (!generation) return generation.error();
  out.generation = *generation;
  if (!doc->contains("usages") || !(*doc)["usages"].is_object()) {
    return Error::unavailable(fmt::format("Placement's answer to {} has no usages", asked));
  }
  for (const auto& [resource_class, amount] : (*doc)["usages"].items()) {
    if (amount.is_number_integer()) out.usages[resource_class] = amount.get<std::int64_t>();
  }
  return out;
}

}  // namespace kiln::openstack::placement
