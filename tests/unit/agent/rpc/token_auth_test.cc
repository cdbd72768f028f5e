#include "agent/rpc/token_auth.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <catch2/catch.hpp>

#include "common/unique_fd.h"

namespace kiln::rpc {
namespace {

constexpr std::string_view kAdminToken = "admin-token-0123456789abcdef";
constexpr std::string_view kReaderToken = "reader-token-0123456789abcdef";
constexpr std::string_view kBareToken = "bare-token-0123456789abcdef";

const std::string kGoodFile = std::string("# kiln API tokens\n") + "\n" + std::string(kAdminToken) +
                              "  admin,member  project-1\n" + "   # an indented comment\n" +
                              std::string(kReaderToken) + "\treader\r\n" + std::string(kBareToken) +
                              "\n";

TokenAuthenticator parseGood() {
  Result<TokenAuthenticator> auth = TokenAuthenticator::parse(kGoodFile, "tokens");
  INFO((auth ? std::string() : auth.error().message));
  REQUIRE(auth.ok());
  return std::move(auth).value();
}

// A scratch directory that removes itself.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/kiln-token-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern) != nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

  // Writes `contents` with exactly `mode`, whatever the umask.
  std::string write(const std::string& name, std::string_view contents, mode_t mode) const {
    std::string file = (path_ / name).string();
    UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    REQUIRE(fd.valid());
    REQUIRE(::write(fd.get(), contents.data(), contents.size()) ==
            static_cast<ssize_t>(contents.size()));
    REQUIRE(::fchmod(fd.get(), mode) == 0);
    return file;
  }

 private:
  std::filesystem::path path_;
};

TEST_CASE("TokenAuthenticator parses tokens, roles and projects", "[rpc][auth]") {
  TokenAuthenticator auth = parseGood();
  CHECK(auth.size() == 3);

  Result<Caller> admin = auth.authenticate("Bearer " + std::string(kAdminToken));
  REQUIRE(admin.ok());
  CHECK(admin->roles == std::vector<std::string>{"admin", "member"});
  CHECK(admin->project_id == "project-1");
  CHECK(admin->token_id.size() == 8);
  CHECK(admin->token_id.find_first_not_of("0123456789abcdef") == std::string::npos);

  Result<Caller> reader = auth.authenticate("Bearer " + std::string(kReaderToken));
  REQUIRE(reader.ok());
  CHECK(reader->roles == std::vector<std::string>{"reader"});
  CHECK(reader->project_id.empty());
  CHECK(reader->token_id != admin->token_id);

  Result<Caller> bare = auth.authenticate("Bearer " + std::string(kBareToken));
  REQUIRE(bare.ok());
  CHECK(bare->roles.empty());
  CHECK(bare->project_id.empty());
}

TEST_CASE("TokenAuthenticator accepts the Bearer scheme in any case", "[rpc][auth]") {
  TokenAuthenticator auth = parseGood();
  for (std::string scheme : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
    INFO(scheme);
    CHECK(auth.authenticate(scheme + " " + std::string(kAdminToken)).ok());
  }
  CHECK(auth.authenticate("  Bearer   " + std::string(kAdminToken) + "  ").ok());
}

TEST_CASE("TokenAuthenticator refuses wrong or missing credentials without echoing them",
          "[rpc][auth]") {
  TokenAuthenticator auth = parseGood();
  std::string wrong = "wrong-token-0123456789abcdef";
  std::string header = GENERATE_COPY(
      std::string(), std::string("   "), "Bearer " + wrong, "Basic " + wrong, wrong,
      std::string("Bearer"), std::string("Bearer   "), "Bearer " + std::string(kAdminToken) + "x",
      "Bearer " + std::string(kAdminToken).substr(1));
  INFO(header);
  Result<Caller> caller = auth.authenticate(header);
  REQUIRE_FALSE(caller.ok());
  CHECK(caller.error().code == ErrorCode::kUnauthorized);
  CHECK_FALSE(caller.error().message.empty());
  CHECK(caller.error().message.find(wrong) == std::string::npos);
  CHECK(caller.error().message.find(kAdminToken.substr(1)) == std::string::npos);
}

TEST_CASE("TokenAuthenticator rejects bad lines by number, never quoting the token",
          "[rpc][auth]") {
  SECTION("a token shorter than 16 characters") {
    Result<TokenAuthenticator> auth = TokenAuthenticator::parse(
        "# header\n" + std::string(kAdminToken) + "\nshort-secret-1 admin\n", "tokens");
    REQUIRE_FALSE(auth.ok());
    CHECK(auth.error().code == ErrorCode::kInvalidArgument);
    CHECK_THAT(auth.error().message, Catch::Contains("line 3"));
    CHECK_THAT(auth.error().message, Catch::Contains("'tokens'"));
    CHECK(auth.error().message.find("short-secret-1") == std::string::npos);
  }
  SECTION("a token with a non-ASCII byte") {
    Result<TokenAuthenticator> auth =
        TokenAuthenticator::parse("token-with-\xc3\xa9-0123456789\n", "tokens");
    REQUIRE_FALSE(auth.ok());
    CHECK_THAT(auth.error().message, Catch::Contains("line 1"));
  }
  SECTION("too many fields") {
    Result<TokenAuthenticator> auth =
        TokenAuthenticator::parse(std::string(kAdminToken) + " admin project extra\n", "tokens");
    REQUIRE_FALSE(auth.ok());
    CHECK_THAT(auth.error().message, Catch::Contains("line 1"));
    CHECK(auth.error().message.find(kAdminToken) == std::string::npos);
  }
  SECTION("a repeated token") {
    Result<TokenAuthenticator> auth = TokenAuthenticator::parse(
        std::string(kAdminToken) + " admin\n" + std::string(kAdminToken) + " reader\n", "tokens");
    REQUIRE_FALSE(auth.ok());
    CHECK_THAT(auth.error().message, Catch::Contains("line 2"));
    CHECK_THAT(auth.error().message, Catch::Contains("line 1"));
    CHECK(auth.error().message.find(kAdminToken) == std::string::npos);
  }
}

TEST_CASE("TokenAuthenticator ignores comments and blank lines", "[rpc][auth]") {
  Result<TokenAuthenticator> auth =
      TokenAuthenticator::parse("\n# only comments\n   \n\t\n#admin-token-0123456789abcdef\n", "t");
  REQUIRE(auth.ok());
  CHECK(auth->size() == 0);
  // A commented-out token is not a token.
  CHECK_FALSE(auth->authenticate("Bearer admin-token-0123456789abcdef").ok());
}

TEST_CASE("TokenAuthenticator::loadFile checks the file's type and mode", "[rpc][auth]") {
  TempDir dir;

  SECTION("mode 0600 is accepted") {
    std::string path = dir.write("tokens", kGoodFile, 0600);
    Result<TokenAuthenticator> auth = TokenAuthenticator::loadFile(path);
    INFO((auth ? std::string() : auth.error().message));
    REQUIRE(auth.ok());
    CHECK(auth->size() == 3);
    CHECK(auth->authenticate("Bearer " + std::string(kAdminToken)).ok());
  }
  SECTION("mode 0400 is accepted") {
    CHECK(TokenAuthenticator::loadFile(dir.write("tokens", kGoodFile, 0400)).ok());
  }
  SECTION("mode 0644 is refused, naming the mode and the fix") {
    std::string path = dir.write("tokens", kGoodFile, 0644);
    Result<TokenAuthenticator> auth = TokenAuthenticator::loadFile(path);
    REQUIRE_FALSE(auth.ok());
    CHECK(auth.error().message ==
          "Token file '" + path +
              "' has mode 0644; it must not be accessible by group or others (chmod 600)");
  }
  SECTION("group write alone is refused") {
    CHECK_FALSE(TokenAuthenticator::loadFile(dir.write("tokens", kGoodFile, 0620)).ok());
  }
  SECTION("a directory is refused") {
    std::filesystem::create_directory(dir.path() / "sub");
    ::chmod((dir.path() / "sub").c_str(), 0700);
    Result<TokenAuthenticator> auth = TokenAuthenticator::loadFile((dir.path() / "sub").string());
    REQUIRE_FALSE(auth.ok());
    CHECK_THAT(auth.error().message, Catch::Contains("not a regular file"));
  }
  SECTION("a FIFO is refused without blocking") {
    std::string path = (dir.path() / "fifo").string();
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    Result<TokenAuthenticator> auth = TokenAuthenticator::loadFile(path);
    REQUIRE_FALSE(auth.ok());
    CHECK_THAT(auth.error().message, Catch::Contains("not a regular file"));
  }
  SECTION("a missing file is NotFound") {
    Result<TokenAuthenticator> auth =
        TokenAuthenticator::loadFile((dir.path() / "missing").string());
    REQUIRE_FALSE(auth.ok());
    CHECK(auth.error().code == ErrorCode::kNotFound);
  }
  SECTION("a parse error names the file and the line") {
    std::string path = dir.write("tokens", "too-short\n", 0600);
    Result<TokenAuthenticator> auth = TokenAuthenticator::loadFile(path);
    REQUIRE_FALSE(auth.ok());
    CHECK_THAT(auth.error().message, Catch::Contains(path));
    CHECK_THAT(auth.error().message, Catch::Contains("line 1"));
  }
}

TEST_CASE("TokenAuthenticator copies share one table and outlive the original", "[rpc][auth]") {
  auto shared = std::make_shared<const TokenAuthenticator>(parseGood());
  TokenAuthenticator copy = *shared;
  shared.reset();
  CHECK(copy.authenticate("Bearer " + std::string(kReaderToken)).ok());
}

TEST_CASE("findDigest compares every entry whatever matches", "[rpc][auth]") {
  std::vector<detail::TokenDigest> table;
  for (int i = 0; i < 5; ++i) table.push_back(detail::sha256("token-number-" + std::to_string(i)));

  detail::DigestMatch first = detail::findDigest(table.front(), table);
  CHECK(first.index == std::optional<std::size_t>(0));
  CHECK(first.compared == table.size());

  detail::DigestMatch last = detail::findDigest(table.back(), table);
  CHECK(last.index == std::optional<std::size_t>(4));
  CHECK(last.compared == table.size());

  detail::DigestMatch none = detail::findDigest(detail::sha256("another"), table);
  CHECK_FALSE(none.index.has_value());
  CHECK(none.compared == table.size());

  CHECK(detail::findDigest(table.front(), {}).compared == 0);
}

TEST_CASE("sha256 matches a published test vector", "[rpc][auth]") {
  // FIPS 180-2 example: SHA-256("abc").
  detail::TokenDigest digest = detail::sha256("abc");
  CHECK(digest[0] == 0xba);
  CHECK(digest[1] == 0x78);
  CHECK(digest[2] == 0x16);
  CHECK(digest[3] == 0xbf);
  CHECK(digest[31] == 0xad);
}

}  // namespace
}  // namespace kiln::rpc
