#include "imagecache/stream_hasher.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <string>
#include <utility>
#include <vector>

namespace {

using kiln::ErrorCode;
using kiln::Result;
using kiln::imagecache::ImageVerifier;
using kiln::imagecache::StreamHasher;

// FIPS 180-2 / RFC 1321 test vectors for "abc".
const std::vector<std::pair<std::string, std::string>> kAbcDigests = {
    {"md5", "900150983cd24fb0d6963f7d28e17f72"},
    {"sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"},
    {"sha224", "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"},
    {"sha256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"sha384",
     "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c8"
     "25a7"},
    {"sha512",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3fe"
     "ebbd454d4423643ce80e2a9ac94fa54ca49f"},
};

std::string digestOf(const std::string& algo, const std::string& data) {
  Result<StreamHasher> hasher = StreamHasher::create(algo);
  REQUIRE(hasher.ok());
  hasher->update(data.data(), data.size());
  return hasher->finalHex();
}

Result<void> verify(const ImageVerifier::Expectation& e, const std::string& data) {
  Result<ImageVerifier> verifier = ImageVerifier::create(e);
  REQUIRE(verifier.ok());
  verifier->update(data.data(), data.size());
  return verifier->finish();
}

const std::string kSha512Abc = kAbcDigests[5].second;
const std::string kMd5Abc = kAbcDigests[0].second;

}  // namespace

TEST_CASE("StreamHasher matches the published vectors for every Glance algorithm",
          "[imagecache][hash]") {
  for (const auto& [algo, expected] : kAbcDigests) {
    INFO(algo);
    CHECK(digestOf(algo, "abc") == expected);
  }
  CHECK(digestOf("sha256", "") ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("StreamHasher gives the same digest however the stream is cut", "[imagecache][hash]") {
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 7 + i / 256));
  const std::string whole = digestOf("sha512", data);
  Result<StreamHasher> hasher = StreamHasher::create("sha512");
  REQUIRE(hasher.ok());
  std::size_t pos = 0;
  for (std::size_t chunk = 1; pos < data.size(); chunk = chunk * 3 + 1) {
    std::size_t n = std::min(chunk, data.size() - pos);
    hasher->update(data.data() + pos, n);
    pos += n;
  }
  CHECK(hasher->finalHex() == whole);
  CHECK(hasher->finalHex() == whole);  // asking twice is harmless
  hasher->update("x", 1);              // and bytes after the end are ignored
  CHECK(hasher->finalHex() == whole);
}

TEST_CASE("StreamHasher refuses algorithms Glance does not name", "[imagecache][hash]") {
  for (const char* algo : {"sha3_512", "SHA-512", "blake2b", "", "md4"}) {
    Result<StreamHasher> hasher = StreamHasher::create(algo);
    REQUIRE_FALSE(hasher.ok());
    CHECK(hasher.error().code == ErrorCode::kInvalidArgument);
  }
}

TEST_CASE("ImageVerifier accepts matching hashes in any case", "[imagecache][hash]") {
  ImageVerifier::Expectation e;
  e.hash_algo = "sha512";
  e.hash_value = kSha512Abc;
  e.size = 3;
  CHECK(verify(e, "abc").ok());

  std::string upper = kSha512Abc;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  e.hash_value = upper;
  e.md5_checksum = "900150983CD24FB0D6963F7D28E17F72";
  CHECK(verify(e, "abc").ok());
}

TEST_CASE("ImageVerifier explains a hash mismatch", "[imagecache][hash]") {
  ImageVerifier::Expectation e;
  e.hash_algo = "sha512";
  e.hash_value = kSha512Abc;
  Result<void> r = verify(e, "abd");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  const std::string got = digestOf("sha512", "abd");
  CHECK(r.error().message ==
        "Image sha512 hash does not match: expected 'ddaf35a193617aba...', "
        "got '" +
            got.substr(0, 16) + "...'");
}

TEST_CASE("ImageVerifier checks the md5 checksum alone and next to os_hash", "[imagecache][hash]") {
  ImageVerifier::Expectation e;
  e.md5_checksum = kMd5Abc;
  CHECK(verify(e, "abc").ok());

  SECTION("md5 alone, wrong") {
    Result<void> r = verify(e, "abcd");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message,
               Catch::Matchers::StartsWith("Image md5 checksum does not match: expected "
                                           "'900150983cd24fb0...'"));
  }
  SECTION("os_hash right, md5 wrong: both are checked") {
    e.hash_algo = "sha512";
    e.hash_value = kSha512Abc;
    e.md5_checksum = std::string(32, '0');
    Result<void> r = verify(e, "abc");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Matchers::Contains("md5 checksum does not match"));
  }
}

TEST_CASE("ImageVerifier reports a size mismatch before the hash", "[imagecache][hash]") {
  ImageVerifier::Expectation e;
  e.hash_algo = "sha256";
  e.hash_value = kAbcDigests[3].second;
  e.size = 456;
  Result<ImageVerifier> verifier = ImageVerifier::create(e);
  REQUIRE(verifier.ok());
  std::string data(123, 'z');
  verifier->update(data.data(), data.size());
  CHECK(verifier->bytesSeen() == 123);
  Result<void> r = verifier->finish();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::kInvalidArgument);
  CHECK(r.error().message == "Image size is 123 bytes but the image record says 456");
  // finish() is stable: the same verdict again.
  CHECK(verifier->finish().error().message == r.error().message);
}

TEST_CASE("ImageVerifier without a hash leaves the policy to the caller", "[imagecache][hash]") {
  ImageVerifier::Expectation e;
  Result<ImageVerifier> verifier = ImageVerifier::create(e);
  REQUIRE(verifier.ok());
  CHECK_FALSE(verifier->hasHash());
  verifier->update("abc", 3);
  CHECK(verifier->finish().ok());
  CHECK(verifier->bytesSeen() == 3);

  e.size = 4;
  CHECK_FALSE(verify(e, "abc").ok());

  // An algorithm without a value is no hash either (Glance sets both or neither).
  ImageVerifier::Expectation algo_only;
  algo_only.hash_algo = "sha512";
  Result<ImageVerifier> v2 = ImageVerifier::create(algo_only);
  REQUIRE(v2.ok());
  CHECK_FALSE(v2->hasHash());
}

TEST_CASE("ImageVerifier refuses a malformed image record", "[imagecache][hash]") {
  ImageVerifier::Expectation e;
  SECTION("unknown algorithm") {
    e.hash_algo = "whirlpool";
    e.hash_value = std::string(128, 'a');
  }
  SECTION("value of the wrong length") {
    e.hash_algo = "sha512";
    e.hash_value = kMd5Abc;
  }
  SECTION("value that is not hex") {
    e.hash_algo = "sha256";
    e.hash_value = std::string(64, 'g');
  }
  SECTION("value without its algorithm") { e.hash_value = kSha512Abc; }
  SECTION("md5 checksum that is not an md5") { e.md5_checksum = "abc"; }
  Result<ImageVerifier> verifier = ImageVerifier::create(e);
  REQUIRE_FALSE(verifier.ok());
  CHECK(verifier.error().code == ErrorCode::kInvalidArgument);
}
