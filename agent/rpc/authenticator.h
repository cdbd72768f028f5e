#pragma once
// Who is calling: the one interface the API uses to turn a request's token into a Caller.
// TokenAuthenticator (token_auth.h) reads kiln's own token file; KeystoneAuthenticator
// (keystone_authenticator.h) asks OpenStack Identity; LocalFirstAuthenticator
// (local_first_authenticator.h) tries the first, then the second. agent/main.cc picks one.

#include <string_view>

#include "agent/rpc/http_server.h"
#include "common/result.h"

namespace kiln::rpc {

struct Caller;

class Authenticator {
 public:
  virtual ~Authenticator() = default;

  // The caller behind the request's token. kUnauthorized when there is no valid token (the
  // message never echoes the token); kUnavailable when the identity service cannot answer.
  virtual Result<Caller> authenticate(const HttpRequest& request) const = 0;
};

// The token a request presents: `X-Auth-Token: T` (what OpenStack clients send) or
// `Authorization: Bearer T`. Both at once must carry the same token; kUnauthorized otherwise.
Result<std::string_view> presentedToken(const HttpRequest& request);

}  // namespace kiln::rpc
