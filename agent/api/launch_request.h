#pragma once
// POST /v1/instances bodies, parsed and checked into a typed request. Everything in a request is
// untrusted: types, sizes and characters are checked here, before anything acts on it.

#include <string>

#include "common/result.h"
#include "config/flavors.h"

namespace kiln::api {

struct LaunchRequest {
  std::string uuid;  // canonical lower-case form
  std::string name;
  config::Flavor flavor;  // resolved from the catalog, or given inline (name empty)
  std::string image_id;
  // The canonical form of the body: a retry with the same body is the same request.
  std::string fingerprint;
};

Result<LaunchRequest> parseLaunchRequest(std::string_view body,
                                         const config::FlavorCatalog& catalog);

}  // namespace kiln::api
