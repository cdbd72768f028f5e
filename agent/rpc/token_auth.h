#pragma once
// Bearer-token authentication for the agent API.
//
// The token file holds one token per line: `TOKEN [ROLE[,ROLE...]] [PROJECT_ID]`, separated by
// whitespace; blank lines and lines starting with '#' are ignored. Only SHA-256 digests of the
// tokens are kept in memory, and a presented token is hashed and compared with every digest in
// constant time, so neither a memory dump nor response timing reveals a token.
//
// A TokenAuthenticator is immutable and shares its table through a shared_ptr: copies are cheap,
// and a reload (SIGHUP) builds a new one and swaps a std::shared_ptr<const TokenAuthenticator>.

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/rpc/authenticator.h"
#include "common/result.h"

namespace kiln::rpc {

struct Caller {
  std::vector<std::string> roles;
  std::string project_id;
  // First 8 hex digits of sha256(token): names the token in logs without revealing it.
  std::string token_id;
  // The Keystone token itself, set only by KeystoneAuthenticator on the caller it returns (never
  // in its cache): kiln asks Glance with it, so Glance answers with the caller's own view of an
  // image. Empty for kiln's token-file callers, whose tokens mean nothing to Glance.
  std::string keystone_token{};
};

class TokenAuthenticator final : public Authenticator {
 public:
  // Refuses a file that is not a regular file or that group or others may read or write: a
  // leaked token file is a leaked API.
  static Result<TokenAuthenticator> loadFile(const std::string& path);

  // Parses the file format without any file-mode check; `source_name` names the origin in errors.
  // Errors name the line number, never the line's text, which may hold a token.
  static Result<TokenAuthenticator> parse(std::string_view contents, std::string_view source_name);

  // Maps the value of an Authorization header ("Bearer <token>", scheme case-insensitive) to its
  // caller. Fails with kUnauthorized and a message that never echoes the token.
  Result<Caller> authenticate(std::string_view authorization_header) const;

  // The token from X-Auth-Token or Authorization: Bearer (presentedToken()).
  Result<Caller> authenticate(const HttpRequest& request) const override;

  // A bare token, as found in either header.
  Result<Caller> authenticateToken(std::string_view token) const;

  std::size_t size() const;

 private:
  struct Table;
  explicit TokenAuthenticator(std::shared_ptr<const Table> table);

  std::shared_ptr<const Table> table_;
};

namespace detail {

using TokenDigest = std::array<unsigned char, 32>;

TokenDigest sha256(std::string_view data);

// Caller::token_id: the first 8 hex digits of the digest.
std::string tokenId(const TokenDigest& digest);

struct DigestMatch {
  std::optional<std::size_t> index;
  std::size_t compared = 0;  // how many entries were compared; always all of them
};

// Compares `needle` with every entry using CRYPTO_memcmp and never stops early, so the time taken
// depends on the table's size only. Exposed so tests can check that every entry is compared.
DigestMatch findDigest(const TokenDigest& needle, std::span<const TokenDigest> table);

}  // namespace detail

}  // namespace kiln::rpc
