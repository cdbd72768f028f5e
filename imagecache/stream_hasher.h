#pragma once
// Hashing image bytes while they stream from the image service to disk, so a corrupt or
// substituted download is caught without reading the file a second time.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX; only the .cc includes OpenSSL

namespace kiln::imagecache {

// One digest over a stream of bytes (OpenSSL EVP).
class StreamHasher {
 public:
  // Glance's os_hash_algo names: "md5", "sha1", "sha224", "sha256", "sha384", "sha512".
  // Anything else is kInvalidArgument.
  static Result<StreamHasher> create(std::string_view algo);

  void update(const void* data, std::size_t len);
  // Lower-case hex of the digest. Later calls return the same value and update() does nothing
  // once it has been called. Empty if OpenSSL failed, which never matches an expected value.
  std::string finalHex();

  std::string_view algorithm() const { return algo_; }

 private:
  struct CtxDeleter {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  StreamHasher(std::string algo, std::unique_ptr<evp_md_ctx_st, CtxDeleter> ctx)
      : algo_(std::move(algo)), ctx_(std::move(ctx)) {}

  std::string algo_;
  std::unique_ptr<evp_md_ctx_st, CtxDeleter> ctx_;
  bool failed_ = false;
  std::optional<std::string> final_;
};

// Checks what a Glance image record promises while the bytes stream through: os_hash_algo and
// os_hash_value (Glance's preferred pair), the legacy md5 `checksum`, and the size. When both
// hashes are given both are checked, as a record may have been written by an older Glance.
class ImageVerifier {
 public:
  struct Expectation {
    std::optional<std::string> hash_algo;     // os_hash_algo
    std::optional<std::string> hash_value;    // os_hash_value (hex, any case)
    std::optional<std::string> md5_checksum;  // checksum (hex, any case)
    std::optional<std::uint64_t> size;
  };

  // Refuses a malformed expectation (an unknown algorithm, a value that is not hex of the right
  // length, a hash value without its algorithm). A record with no hash at all is accepted with
  // hasHash() false: whether to use such an image is the caller's policy.
  static Result<ImageVerifier> create(const Expectation& expectation);

  void update(const void* data, std::size_t len);
  // Compares size and hashes once the stream has ended; kInvalidArgument on a mismatch.
  Result<void> finish();

  bool hasHash() const { return !checks_.empty(); }
  std::uint64_t bytesSeen() const { return bytes_seen_; }

 private:
  struct Check {
    StreamHasher hasher;
    std::string expected;  // lower-case hex
    std::string label;     // "sha512 hash", "md5 checksum"
  };
  ImageVerifier() = default;

  std::vector<Check> checks_;
  std::optional<std::uint64_t> expected_size_;
  std::uint64_t bytes_seen_ = 0;
  std::optional<Result<void>> outcome_;
};

}  // namespace kiln::imagecache
