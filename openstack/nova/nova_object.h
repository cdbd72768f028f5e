#pragma once
// One of Nova's versioned objects as it travels over RPC (oslo.versionedobjects' primitive):
//
//   {"nova_object.name": "Instance", "nova_object.namespace": "nova",
//    "nova_object.version": "2.7", "nova_object.data": {field: value, ...},
//    "nova_object.changes": [the fields changed since the object was loaded]}
//
// kiln keeps what it receives as JSON and changes only the fields it means to: every set() is
// recorded, and primitive() lists exactly those changes, so a save through the conductor writes
// them and nothing else (a field changed but not listed is not saved by Nova; a field listed but
// not meant would overwrite what another service wrote). Nested objects (an Instance's flavor,
// its info cache) stay primitives inside the data.

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace kiln::openstack::nova {

class NovaObject {
 public:
  // Checks the envelope's fields and types; the data is kept as given.
  static Result<NovaObject> fromPrimitive(const nlohmann::json& primitive);
  // A new object of `name` at `version`, no field set.
  static NovaObject make(std::string name, std::string version);

  const std::string& name() const { return name_; }
  const std::string& version() const { return version_; }
  bool has(std::string_view field) const;
  // The field's value; null when unset.
  const nlohmann::json& get(std::string_view field) const;
  // The field as a string/integer/bool, or `fallback` when unset, null or of another type.
  std::string text(std::string_view field, std::string fallback = {}) const;
  std::int64_t integer(std::string_view field, std::int64_t fallback = 0) const;
  bool boolean(std::string_view field, bool fallback = false) const;

  // Sets the field and records it as changed (as a Python attribute assignment does, even to an
  // equal value).
  void set(const std::string& field, nlohmann::json value);
  const std::set<std::string>& changes() const { return changes_; }
  void resetChanges() { changes_.clear(); }

  // The primitive to send: data, and "nova_object.changes" when something changed.
  nlohmann::json primitive() const;

  // The conductor's answer to object_action: {field: new value, ..., "obj_what_changed": [...]}.
  // The fields take their new values, and the changes become what the conductor says is still
  // unsaved (as nova's remotable methods do).
  Result<void> applyUpdates(const nlohmann::json& updates);

 private:
  NovaObject() = default;
  std::string name_;
  std::string version_;
  nlohmann::json data_ = nlohmann::json::object();
  std::set<std::string> changes_;
};

// The items of an ObjectList primitive (InstanceList, BlockDeviceMappingList, ...): the
// primitives in its data's "objects", those that are JSON objects. Nothing for anything else.
std::vector<nlohmann::json> listItems(const nlohmann::json& list);

}  // namespace kiln::openstack::nova
