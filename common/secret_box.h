#pragma once
// Seals small secrets (iSCSI CHAP passwords) for the instance database: AES-256-GCM under a
// host key kept in a 0600 file beside the database. The database never holds a password in
// clear, and a copy of kiln.db alone reveals nothing.

#include <array>
#include <string>

#include "common/result.h"

namespace kiln {

class SecretBox {
 public:
  // Reads the key, or creates it (32 random bytes, mode 0600) when the file does not exist.
  static Result<SecretBox> loadOrCreate(const std::string& key_path);
  static SecretBox fromKeyForTest(const std::array<unsigned char, 32>& key) {
    return SecretBox(key);
  }

  // base64(nonce || ciphertext || tag).
  Result<std::string> seal(const std::string& plaintext) const;
  Result<std::string> open(const std::string& sealed) const;

 private:
  explicit SecretBox(const std::array<unsigned char, 32>& key) : key_(key) {}
  std::array<unsigned char, 32> key_;
};

}  // namespace kiln
