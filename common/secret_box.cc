#include "common/secret_box.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <memory>
#include <vector>

#include "common/fs.h"
#include "common/unique_fd.h"

namespace kiln {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

std::string base64(const std::vector<unsigned char>& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                          static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Result<std::vector<unsigned char>> unbase64(const std::string& text) {
  if (text.empty() || text.size() % 4 != 0) return Error::invalid("A sealed secret is malformed");
  std::vector<unsigned char> out(text.size() / 4 * 3);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return Error::invalid("A sealed secret is malformed");
  std::size_t pad = 0;
  if (text.ends_with("==")) {
    pad = 2;
  } else if (text.ends_with("=")) {
    pad = 1;
  }
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

}  // namespace

Result<SecretBox> SecretBox::loadOrCreate(const std::string& key_path) {
  std::array<unsigned char, 32> key{};
  UniqueFd fd(::open(key_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.valid()) {
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0 ||
        st.st_size != static_cast<off_t>(key.size())) {
      return Error::internal(
          fmt::format("Key file '{}' must be a regular 32-byte file of mode 0600", key_path));
    }
    if (::read(fd.get(), key.data(), key.size()) != static_cast<ssize_t>(key.size())) {
      return Error::internal(fmt::format("Cannot read key file '{}'", key_path));
    }
    return SecretBox(key);
  }
  if (errno != ENOENT) {
    return Error::internal(
        fmt::format("Cannot open key file '{}': {}", key_path, fs::errnoText(errno)));
  }
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return Error::internal("Cannot generate a key: the random generator failed");
  }
  std::string bytes(reinterpret_cast<const char*>(key.data()), key.size());
  if (auto w = fs::writeFileAtomically(key_path, bytes, 0600); !w) return w.error();
  return SecretBox(key);
}

Result<std::string> SecretBox::seal(const std::string& plaintext) const {
  std::vector<unsigned char> out(kNonceBytes + plaintext.size() + kTagBytes);
  if (RAND_bytes(out.data(), kNonceBytes) != 1) return Error::internal("Random generator failed");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), out.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data() + kNonceBytes, &len,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + kNonceBytes + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          out.data() + kNonceBytes + plaintext.size()) != 1) {
    return Error::internal("Sealing a secret failed");
  }
  return base64(out);
}

Result<std::string> SecretBox::open(const std::string& sealed) const {
  auto data = unbase64(sealed);
  if (!data) return data.error();
  if (data->size() < static_cast<std::size_t>(kNonceBytes + kTagBytes)) {
    return Error::invalid("A sealed secret is malformed");
  }
  std::size_t text_len = data->size() - kNonceBytes - kTagBytes;
  std::string plain(text_len, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), data->data()) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len,
                        data->data() + kNonceBytes, static_cast<int>(text_len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes,
                          data->data() + kNonceBytes + text_len) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + len, &len) !=
          1) {
    return Error::invalid("A sealed secret does not open with this host's key");
  }
  return plain;
}

}  // namespace kiln
