#include "agent/rpc/token_auth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cerrno>
#include <cstdlib>
#include <map>

#include <fmt/format.h>

#include "common/fs.h"
#include "common/strings.h"
#include "common/unique_fd.h"

namespace kiln::rpc {

struct TokenAuthenticator::Table {
  std::vector<detail::TokenDigest> digests;
  std::vector<Caller> callers;  // callers[i] belongs to digests[i]
};

namespace {

constexpr std::size_t kMinTokenLength = 16;
constexpr std::size_t kMaxTokenFileBytes = 1024 * 1024;
constexpr std::string_view kBlanks = " \t\r\f\v";

std::string_view trim(std::string_view s) { return strings::trim(s, kBlanks); }

std::vector<std::string_view> splitFields(std::string_view line) {
  std::vector<std::string_view> fields;
  while (true) {
    std::size_t begin = line.find_first_not_of(kBlanks);
    if (begin == std::string_view::npos) break;
    line.remove_prefix(begin);
    std::size_t end = line.find_first_of(kBlanks);
    fields.push_back(line.substr(0, end));
    if (end == std::string_view::npos) break;
    line.remove_prefix(end);
  }
  return fields;
}

std::vector<std::string> splitRoles(std::string_view field) {
  std::vector<std::string> roles;
  while (!field.empty()) {
    std::size_t comma = field.find(',');
    std::string_view role = field.substr(0, comma);
    if (!role.empty()) roles.emplace_back(role);
    if (comma == std::string_view::npos) break;
    field.remove_prefix(comma + 1);
  }
  return roles;
}

bool isValidToken(std::string_view token) {
  return token.size() >= kMinTokenLength && strings::isVisibleAscii(token);
}

Error unauthorized(std::string message) { return {ErrorCode::kUnauthorized, std::move(message)}; }

}  // namespace

namespace detail {

std::string tokenId(const TokenDigest& digest) {
  return strings::hexEncode(std::span(digest).first(4));
}

TokenDigest sha256(std::string_view data) {
  TokenDigest digest{};
  unsigned int length = 0;
  // EVP_Digest with SHA-256 only fails on allocation failure, where continuing makes no sense.
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != digest.size()) {
    std::abort();
  }
  return digest;
}

DigestMatch findDigest(const TokenDigest& needle, std::span<const TokenDigest> table) {
  DigestMatch match;
  for (std::size_t i = 0; i < table.size(); ++i) {
    // Branching on the outcome leaks only whether some digest matched, never how many bytes of
    // a token were right: the attacker cannot steer the digest of what they send.
    bool equal = CRYPTO_memcmp(needle.data(), table[i].data(), needle.size()) == 0;
    ++match.compared;
    if (equal && !match.index) match.index = i;
  }
  return match;
}

}  // namespace detail

TokenAuthenticator::TokenAuthenticator(std::shared_ptr<const Table> table)
    : table_(std::move(table)) {}

Result<TokenAuthenticator> TokenAuthenticator::loadFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO planted at the path must not hang the daemon.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int err = errno;
    std::string message = fmt::format("Cannot open token file '{}': {}", path, fs::errnoText(err));
    return err == ENOENT ? Error::notFound(std::move(message))
                         : Error::internal(std::move(message));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::internal(
        fmt::format("Cannot stat token file '{}': {}", path, fs::errnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::invalid(fmt::format("Token file '{}' is not a regular file", path));
  }
  if ((st.st_mode & 077) != 0) {
    return Error::invalid(fmt::format(
        "Token file '{}' has mode {:04o}; it must not be accessible by group or others (chmod 600)",
        path, st.st_mode & 07777));
  }
  Result<std::string> contents = fs::readAll(fd.get(), path, kMaxTokenFileBytes, "token file");
  if (!contents) return contents.error();
  Result<TokenAuthenticator> parsed = parse(*contents, path);
  OPENSSL_cleanse(contents->data(), contents->size());
  return parsed;
}

Result<TokenAuthenticator> TokenAuthenticator::parse(std::string_view contents,
                                                     std::string_view source_name) {
  auto table = std::make_shared<Table>();
  std::map<detail::TokenDigest, std::size_t> line_of_digest;
  std::size_t line_number = 0;
  while (!contents.empty()) {
    std::size_t newline = contents.find('\n');
    std::string_view line = contents.substr(0, newline);
    contents.remove_prefix(newline == std::string_view::npos ? contents.size() : newline + 1);
    ++line_number;

    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string_view> fields = splitFields(line);
    if (fields.size() > 3) {
      return Error::invalid(fmt::format(
          "Token file '{}' line {} has {} fields; expected 'TOKEN [ROLE[,ROLE...]] [PROJECT_ID]'",
          source_name, line_number, fields.size()));
    }
    if (!isValidToken(fields[0])) {
      return Error::invalid(fmt::format(
          "Token file '{}' line {}: a token must be at least {} printable ASCII characters "
          "without spaces",
          source_name, line_number, kMinTokenLength));
    }
    detail::TokenDigest digest = detail::sha256(fields[0]);
    auto [it, inserted] = line_of_digest.emplace(digest, line_number);
    if (!inserted) {
      return Error::invalid(fmt::format("Token file '{}' line {} repeats the token of line {}",
                                        source_name, line_number, it->second));
    }
    Caller caller;
    if (fields.size() > 1) caller.roles = splitRoles(fields[1]);
    if (fields.size() > 2) caller.project_id = std::string(fields[2]);
    caller.token_id = detail::tokenId(digest);
    table->digests.push_back(digest);
    table->callers.push_back(std::move(caller));
  }
  return TokenAuthenticator(std::move(table));
}

Result<Caller> TokenAuthenticator::authenticate(std::string_view authorization_header) const {
  std::string_view header = trim(authorization_header);
  if (header.empty()) {
    return unauthorized(
        "The request has no Authorization header; send 'Authorization: Bearer <token>'");
  }
  std::size_t blank = header.find_first_of(kBlanks);
  std::string_view scheme = header.substr(0, blank);
  if (!strings::equalsIgnoringCase(scheme, "bearer")) {
    return unauthorized("The Authorization header must use the Bearer scheme");
  }
  std::string_view token =
      blank == std::string_view::npos ? std::string_view{} : trim(header.substr(blank));
  if (token.empty()) return unauthorized("The Authorization header has an empty Bearer token");
  return authenticateToken(token);
}

Result<Caller> TokenAuthenticator::authenticate(const HttpRequest& request) const {
  auto token = presentedToken(request);
  if (!token) return token.error();
  return authenticateToken(*token);
}

Result<Caller> TokenAuthenticator::authenticateToken(std::string_view token) const {
  detail::DigestMatch match = detail::findDigest(detail::sha256(token), table_->digests);
  if (!match.index) return unauthorized("The token is not valid");
  return table_->callers[*match.index];
}

Result<std::string_view> presentedToken(const HttpRequest& request) {
  std::string_view bearer;
  std::string_view header = trim(request.authorization);
  if (!header.empty()) {
    std::size_t blank = header.find_first_of(kBlanks);
    if (!strings::equalsIgnoringCase(header.substr(0, blank), "bearer")) {
      return unauthorized("The Authorization header must use the Bearer scheme");
    }
    bearer = blank == std::string_view::npos ? std::string_view{} : trim(header.substr(blank));
    if (bearer.empty()) return unauthorized("The Authorization header has an empty Bearer token");
  }
  std::string_view x_auth = trim(request.x_auth_token);
  if (!bearer.empty() && !x_auth.empty() && bearer != x_auth) {
    return unauthorized(
        "The request carries different tokens in X-Auth-Token and Authorization; send one");
  }
  if (!x_auth.empty()) return x_auth;
  if (!bearer.empty()) return bearer;
  return unauthorized(
      "The request has no token; send 'X-Auth-Token: <token>' or 'Authorization: Bearer "
      "<token>'");
}

std::size_t TokenAuthenticator::size() const { return table_->digests.size(); }

}  // namespace kiln::rpc
