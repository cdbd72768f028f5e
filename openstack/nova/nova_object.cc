#include "openstack/nova/nova_object.h"

#include <fmt/format.h>

namespace kiln::openstack::nova {
namespace {

using nlohmann::json;

const json& nullJson() {
  static const json null_value;
  return null_value;
}

}  // namespace

Result<NovaObject> NovaObject::fromPrimitive(const json& primitive) {
  if (!primitive.is_object()) return Error::invalid("a Nova object is not a JSON object");
  const auto name = primitive.find("nova_object.name");
  const auto version = primitive.find("nova_object.version");
  const auto data = primitive.find("nova_object.data");
  if (name == primitive.end() || !name->is_string() || version == primitive.end() ||
      !version->is_string()) {
    return Error::invalid("a Nova object lacks its nova_object.name or nova_object.version");
  }
  if (const auto ns = primitive.find("nova_object.namespace");
      ns != primitive.end() && *ns != "nova") {
    return Error::invalid(fmt::format("object '{}' is in namespace {}, not nova",
                                      name->get<std::string>(), ns->dump()));
  }
  NovaObject object;
  object.name_ = name->get<std::string>();
  object.version_ = version->get<std::string>();
  if (data != primitive.end()) {
    if (!data->is_object())
      return Error::invalid(
          fmt::format("the data of Nova object '{}' is not an object", object.name_));
    object.data_ = *data;
  }
  if (const auto changes = primitive.find("nova_object.changes"); changes != primitive.end()) {
    if (!changes->is_array())
      return Error::invalid(
          fmt::format("the changes of Nova object '{}' are not a list", object.name_));
    for (const auto& field : *changes) {
      if (field.is_string()) object.changes_.insert(field.get<std::string>());
    }
  }
  return object;
}

NovaObject NovaObject::make(std::string name, std::string version) {
  NovaObject object;
  object.name_ = std::move(name);
  object.version_ = std::move(version);
  return object;
}

bool NovaObject::has(std::string_view field) const { return data_.contains(field); }

const json& NovaObject::get(std::string_view field) const {
  const auto it = data_.find(field);
  return it == data_.end() ? nullJson() : *it;
}

std::string NovaObject::text(std::string_view field, std::string fallback) const {
  const json& value = get(field);
  return value.is_string() ? value.get<std::string>() : fallback;
}

std::int64_t NovaObject::integer(std::string_view field, std::int64_t fallback) const {
  const json& value = get(field);
  return value.is_number_integer() ? value.get<std::int64_t>() : fallback;
}

bool NovaObject::boolean(std::string_view field, bool fallback) const {
  const json& value = get(field);
  return value.is_boolean() ? value.get<bool>() : fallback;
}

void NovaObject::set(const std::string& field, json value) {
  data_[field] = std::move(value);
  changes_.insert(field);
}

json NovaObject::primitive() const {
  json primitive = json::object();
  primitive["nova_object.name"] = name_;
  primitive["nova_object.namespace"] = "nova";
  primitive["nova_object.version"] = version_;
  primitive["nova_object.data"] = data_;
  if (!changes_.empty()) {
    primitive["nova_object.changes"] =
        json(std::vector<std::string>(changes_.begin(), changes_.end()));
  }
  return primitive;
}

Result<void> NovaObject::applyUpdates(const json& updates) {
  if (!updates.is_object())
    return Error::invalid(fmt::format("the conductor's updates to '{}' are not an object", name_));
  std::set<std::string> still_changed;
  for (const auto& [field, value] : updates.items()) {
    if (field == "obj_what_changed") {
      if (value.is_array()) {
        for (const auto& name : value) {
          if (name.is_string()) still_changed.insert(name.get<std::string>());
        }
      }
      continue;
    }
    data_[field] = value;
  }
  changes_ = std::move(still_changed);
  return success();
}

std::vector<nlohmann::json> listItems(const nlohmann::json& list) {
  std::vector<nlohmann::json> out;
  if (!list.is_object()) return out;
  const auto data = list.find("nova_object.data");
  if (data == list.end() || !data->is_object()) return out;
  const auto objects = data->find("objects");
  if (objects == data->end() || !objects->is_array()) return out;
  for (const auto& item : *objects) {
    if (item.is_object()) out.push_back(item);
  }
  return out;
}

}  // namespace kiln::openstack::nova
