#pragma once
// The Placement API as nova-compute's report client uses it for its own compute node: the
// provider, its inventories and traits, and the allocations of instances that leave the host.
// Every call goes through kiln's Keystone session (service type "placement", token renewal on
// 401) with microversion 1.39, the newest that Placement 8.0 (Zed) serves.
//
// Writes to a provider name the generation they were computed from. When another writer came
// first (409 placement.concurrent_update) the provider is read again, the write recomputed from
// what is there now, and sent again, at most max_attempts times in all, as nova's resource
// tracker retries its update to Placement. Writes that would change nothing are not sent.
//
// Failures are Result errors whose message quotes Placement's own text (errors[].detail),
// with the provider or consumer it was about. Safe to use from several threads.

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "common/result.h"
#include "openstack/keystone/keystone_session.h"
#include "openstack/placement/placement_types.h"

namespace kiln::openstack::placement {

struct PlacementClientOptions {
  // Attempts of one write in all, when other writers keep changing the provider's generation
  // (nova's _update_to_placement: 4).
  unsigned max_attempts = 4;
};

class PlacementClient {
 public:
  static constexpr std::string_view kServiceType = "placement";
  static constexpr std::string_view kMicroversion = "placement 1.39";

  explicit PlacementClient(keystone::KeystoneSession& session, PlacementClientOptions options = {});

  // The provider with `uuid`, created with `name` when Placement has none (404). A provider that
  // exists keeps its name. When another provider already has `name` (409), the error names both
  // uuids: that is a second compute node with this host's name, or this host's old provider
  // under another uuid, for an operator to sort out.
  Result<ResourceProvider> ensureProvider(const std::string& uuid, const std::string& name);

  // The provider, or kNotFound.
  Result<ResourceProvider> provider(const std::string& uuid);

  // Deletes the provider (with its inventories and traits); one that is gone already is fine.
  // Placement refuses (409) while allocations or child providers remain.
  Result<void> deleteProvider(const std::string& uuid);

  Result<Inventories> inventories(const std::string& uuid);

  // Makes the provider's inventories exactly `inventories` (classes not named are removed);
  // returns the provider's generation afterwards. Placement refuses (409
  // placement.inventory.inuse) to remove or shrink an inventory below what is allocated: that is
  // an error, never retried.
  Result<std::int64_t> setInventories(const std::string& uuid, const Inventories& inventories);

  Result<std::set<std::string>> traits(const std::string& uuid);

  // Makes the provider's traits exactly `traits`; returns the generation afterwards. Traits that
  // Placement does not know are an error naming them.
  Result<std::int64_t> setTraits(const std::string& uuid, const std::set<std::string>& traits);

  // Like setTraits(), but traits on the provider outside `owned` stay, as nova keeps those an
  // operator or another service set (CUSTOM_*, say): only the traits kiln decides are changed,
  // recomputed against the provider's traits at each attempt.
  Result<std::int64_t> setOwnedTraits(const std::string& uuid, const std::set<std::string>& traits,
                                      const std::set<std::string>& owned);

  // Deletes every allocation of `consumer_uuid` (an instance that left or never arrived); a
  // consumer Placement does not know (404) is fine.
  Result<void> deleteAllocations(const std::string& consumer_uuid);

  Result<ProviderAllocations> providerAllocations(const std::string& uuid);
  Result<ProviderUsages> usages(const std::string& uuid);

 private:
  Result<imagecache::HttpResult> call(const std::string& method, const std::string& path,
                                      const std::string& body = "");
  struct HeldInventories;
  struct HeldTraits;
  Result<HeldInventories> readInventories(const std::string& uuid);
  Result<HeldTraits> readTraits(const std::string& uuid);
  Result<std::set<std::string>> unknownTraits(const std::set<std::string>& traits);
  // The write behind setTraits() and setOwnedTraits(): `wanted` turns the provider's traits at
  // each attempt into the ones it should have.
  Result<std::int64_t> writeTraits(
      const std::string& uuid,
      const std::function<std::set<std::string>(const std::set<std::string>&)>& wanted);

  keystone::KeystoneSession& session_;
  PlacementClientOptions options_;
};

namespace detail {
// Placement's own words from an error answer: its errors[].detail texts (keystonemiddleware's
// error.message for a 401), whitespace collapsed, fit to quote; the body's start otherwise.
std::string placementErrorText(std::string_view body);
// Placement's errors[0].code ("placement.concurrent_update"), or "".
std::string placementErrorCode(std::string_view body);
// `text` percent-encoded for a query value (RFC 3986 unreserved characters stay).
std::string percentEncode(std::string_view text);
}  // namespace detail

}  // namespace kiln::openstack::placement
