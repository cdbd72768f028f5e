#include "agent/rpc/local_first_authenticator.h"

#include <utility>

namespace kiln::rpc {

LocalFirstAuthenticator::LocalFirstAuthenticator(std::shared_ptr<const TokenAuthenticator> local,
                                                 std::shared_ptr<const Authenticator> fallback)
    : local_(std::move(local)), fallback_(std::move(fallback)) {}

Result<Caller> LocalFirstAuthenticator::authenticate(const HttpRequest& request) const {
  // A request whose headers name no token, or two different ones, is refused here: both
  // authenticators would refuse it alike.
  Result<std::string_view> token = presentedToken(request);
  if (!token) return token.error();
  if (local_) {
    if (Result<Caller> caller = local_->authenticateToken(*token)) return caller;
  }
  return fallback_->authenticate(request);
}

}  // namespace kiln::rpc
