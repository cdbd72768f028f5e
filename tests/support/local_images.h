#pragma once
// Writes images into a local image directory the way an operator (or Glance) describes them.

#include <openssl/evp.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace kiln::testing {

inline std::string hexDigest(const std::string& algo, const std::string& bytes) {
  const EVP_MD* md = EVP_get_digestbyname(algo.c_str());
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), out, &len, md, nullptr);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) hex += fmt::format("{:02x}", out[i]);
  return hex;
}

inline std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Adds <dir>/<id>.img and <dir>/<id>.json; `record` overrides or adds fields.
inline void addLocalImage(const std::string& dir, const std::string& id, const std::string& bytes,
                          const std::string& disk_format = "raw",
                          nlohmann::json record = nlohmann::json::object()) {
  std::ofstream(dir + "/" + id + ".img", std::ios::binary) << bytes;
  nlohmann::json doc = {{"id", id},
                        {"name", id},
                        {"status", "active"},
                        {"disk_format", disk_format},
                        {"container_format", "bare"},
                        {"size", bytes.size()},
                        {"checksum", hexDigest("md5", bytes)},
                        {"os_hash_algo", "sha512"},
                        {"os_hash_value", hexDigest("sha512", bytes)}};
  if (record.is_object()) doc.update(record);
  std::ofstream(dir + "/" + id + ".json") << doc.dump(2);
}

}  // namespace kiln::testing
