#include "imagecache/stream_hasher.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <array>
#include <span>

#include "common/strings.h"

namespace kiln::imagecache {

namespace {

const EVP_MD* digestFor(std::string_view algo) {
  // An explicit list rather than EVP_get_digestbyname: Glance's names are the contract, and
  // OpenSSL would also accept aliases ("SHA2-256", "ssl3-md5") that no image record uses.
  if (algo == "md5") return EVP_md5();
  if (algo == "sha1") return EVP_sha1();
  if (algo == "sha224") return EVP_sha224();
  if (algo == "sha256") return EVP_sha256();
  if (algo == "sha384") return EVP_sha384();
  if (algo == "sha512") return EVP_sha512();
  return nullptr;
}

// Digests are quoted shortened: enough to tell them apart in a log line.
std::string shortHex(std::string_view hex) {
  constexpr std::size_t kShown = 16;
  if (hex.size() <= kShown) return std::string(hex);
  return std::string(hex.substr(0, kShown)) + "...";
}

}  // namespace

void StreamHasher::CtxDeleter::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Result<StreamHasher> StreamHasher::create(std::string_view algo) {
  const EVP_MD* md = digestFor(algo);
  if (md == nullptr) {
    return Error::invalid(fmt::format(
        "Hash algorithm '{}' is not supported; use md5, sha1, sha224, sha256, sha384 or sha512",
        algo));
  }
  std::unique_ptr<evp_md_ctx_st, CtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx) return Error::exhausted("Cannot allocate an OpenSSL digest context");
  if (EVP_DigestInit_ex(ctx.get(), md, nullptr) != 1) {
    return Error::internal(fmt::format("OpenSSL cannot initialise a {} digest", algo));
  }
  return StreamHasher(std::string(algo), std::move(ctx));
}

void StreamHasher::update(const void* data, std::size_t len) {
  if (!ctx_ || final_ || failed_ || len == 0) return;
  if (EVP_DigestUpdate(ctx_.get(), data, len) != 1) failed_ = true;
}

std::string StreamHasher::finalHex() {
  if (final_) return *final_;
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int len = 0;
  if (!ctx_ || failed_ || EVP_DigestFinal_ex(ctx_.get(), digest.data(), &len) != 1) {
    final_ = std::string();
    return *final_;
  }
  final_ = strings::hexEncode(std::span(digest).first(len));
  return *final_;
}

Result<ImageVerifier> ImageVerifier::create(const Expectation& expectation) {
  ImageVerifier verifier;
  verifier.expected_size_ = expectation.size;

  auto addCheck = [&verifier](std::string_view algo, const std::string& value,
                              std::string label) -> Result<void> {
    Result<StreamHasher> hasher = StreamHasher::create(algo);
    if (!hasher) return hasher.error();
    const std::size_t want = static_cast<std::size_t>(EVP_MD_get_size(digestFor(algo))) * 2;
    if (value.size() != want || !strings::isHex(value)) {
      return Error::invalid(fmt::format("Image record's {} '{}' is not a {}-character hex string",
                                        label, shortHex(value), want));
    }
    verifier.checks_.push_back(
        Check{std::move(*hasher), strings::asciiLower(value), std::move(label)});
    return success();
  };

  if (expectation.hash_value && !expectation.hash_algo) {
    return Error::invalid("Image record has an os_hash_value but no os_hash_algo");
  }
  if (expectation.hash_algo && expectation.hash_value) {
    Result<void> added =
        addCheck(*expectation.hash_algo, *expectation.hash_value, *expectation.hash_algo + " hash");
    if (!added) return std::move(added).error();
  }
  if (expectation.md5_checksum) {
    Result<void> added = addCheck("md5", *expectation.md5_checksum, "md5 checksum");
    if (!added) return std::move(added).error();
  }
  return verifier;
}

void ImageVerifier::update(const void* data, std::size_t len) {
  if (outcome_) return;
  bytes_seen_ += len;
  for (Check& check : checks_) check.hasher.update(data, len);
}

Result<void> ImageVerifier::finish() {
  if (outcome_) return *outcome_;
  outcome_ = [this]() -> Result<void> {
    // The size first: a short download explains a hash mismatch, not the other way round.
    if (expected_size_ && *expected_size_ != bytes_seen_) {
      return Error::invalid(fmt::format("Image size is {} bytes but the image record says {}",
                                        bytes_seen_, *expected_size_));
    }
    for (Check& check : checks_) {
      std::string got = check.hasher.finalHex();
      if (got != check.expected) {
        return Error::invalid(fmt::format("Image {} does not match: expected '{}', got '{}'",
                                          check.label, shortHex(check.expected), shortHex(got)));
      }
    }
    return success();
  }();
  return *outcome_;
}

}  // namespace kiln::imagecache
