#pragma once
// Tokens from kiln's own token file first, then another authenticator (Keystone): [keystone]
// accept_token_file. Local tools and a scheduler with a static token are answered without a
// network round trip, so they keep working while Keystone is slow or down; every other token goes
// to Keystone as usual.
//
// The local check is TokenAuthenticator's: the presented token is compared with every digest in
// constant time. What a caller can learn from the time taken is only that its token is not in the
// file (it then waits for Keystone), never anything about the tokens that are.
//
// Immutable, like TokenAuthenticator: a SIGHUP reload builds a new one around the freshly read
// token file and the same Keystone authenticator (whose cache of validated tokens is kept).

#include <memory>

#include "agent/rpc/authenticator.h"
#include "agent/rpc/token_auth.h"

namespace kiln::rpc {

class LocalFirstAuthenticator final : public Authenticator {
 public:
  // `local` may be null (no token file): every token then goes to `fallback`.
  LocalFirstAuthenticator(std::shared_ptr<const TokenAuthenticator> local,
                          std::shared_ptr<const Authenticator> fallback);

  // A token in the file is the file's caller; any other token is `fallback`'s to judge, so an
  // unknown token gets Keystone's answer (401, or 503 when Keystone cannot answer).
  Result<Caller> authenticate(const HttpRequest& request) const override;

  std::size_t localTokens() const { return local_ ? local_->size() : 0; }

 private:
  std::shared_ptr<const TokenAuthenticator> local_;
  std::shared_ptr<const Authenticator> fallback_;
};

}  // namespace kiln::rpc
