#include "agent/rpc/http_tls.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <string_view>

#include <fmt/format.h>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/error.hpp>

#include "common/fs.h"
#include "common/log.h"
#include "common/unique_fd.h"

namespace kiln::rpc::httpd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = asio::ssl;

namespace {

constexpr std::size_t kMaxPemFileBytes = 1024 * 1024;
// TLS 1.2 suites with forward secrecy and AEAD only (Mozilla's "intermediate" list); TLS 1.3 uses
// OpenSSL's defaults, which are all of that kind.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct BioFree {
  void operator()(BIO* bio) const { ::BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { ::X509_free(cert); }
};
using UniqueBio = std::unique_ptr<BIO, BioFree>;
using UniqueX509 = std::unique_ptr<X509, X509Free>;

// The reason of OpenSSL's most recent error on this thread, and the queue emptied.
std::string lastOpenSslError() {
  unsigned long code = ::ERR_peek_last_error();
  std::string reason = code != 0 && ::ERR_reason_error_string(code) != nullptr
                           ? ::ERR_reason_error_string(code)
                           : "unknown OpenSSL error";
  ::ERR_clear_error();
  return reason;
}

// Reads a PEM file given as `option` through one descriptor, so the file that is checked is the
// file that is read. A secret (the private key) must not be accessible by group or others.
Result<std::string> readPemFile(const std::string& path, std::string_view option, bool secret) {
  // O_NONBLOCK: opening a FIFO planted at the path must not hang the daemon.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int err = errno;
    std::string message = fmt::format("Cannot open {} '{}': {}", option, path, fs::errnoText(err));
    return err == ENOENT ? Error::notFound(std::move(message)) : Error::invalid(std::move(message));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::internal(
        fmt::format("Cannot stat {} '{}': {}", option, path, fs::errnoText(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Error::invalid(fmt::format("{} '{}' is not a regular file", option, path));
  }
  if (secret && (st.st_mode & 077) != 0) {
    return Error::invalid(fmt::format(
        "{} '{}' has mode {:04o}; a private key must not be accessible by group or others "
        "(chmod 600)",
        option, path, st.st_mode & 07777));
  }
  return fs::readAll(fd.get(), path, kMaxPemFileBytes, option);
}

// Adds every certificate of the CA file to the trust store and to the list of acceptable issuers
// the server sends (so a client with several certificates picks the right one).
Result<void> loadClientCas(SSL_CTX* ctx, const std::string& pem, const std::string& path) {
  UniqueBio bio(::BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Error::internal("Cannot allocate an OpenSSL buffer");
  std::size_t count = 0;
  while (UniqueX509 cert{::PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    if (::X509_STORE_add_cert(::SSL_CTX_get_cert_store(ctx), cert.get()) != 1 ||
        ::SSL_CTX_add_client_CA(ctx, cert.get()) != 1) {
      return Error::invalid(fmt::format("Cannot use certificate {} of [api] ca_file '{}': {}",
                                        count + 1, path, lastOpenSslError()));
    }
    ++count;
  }
  ::ERR_clear_error();  // the read that ended the loop
  if (count == 0) {
    return Error::invalid(fmt::format("[api] ca_file '{}' holds no PEM certificate", path));
  }
  return success();
}

}  // namespace

std::string describeTlsError(const beast::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) {
    const char* reason = ::ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (reason != nullptr) return reason;
  }
  return ec.message();
}

Result<std::shared_ptr<ssl::context>> makeTlsContext(const TlsSettings& settings) {
  if (settings.key_file.empty()) {
    return Error::invalid("[api] cert_file is set but [api] key_file is not");
  }
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();
  ::ERR_clear_error();
  ::SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  ::SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
  if (::SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
    return Error::internal(
        fmt::format("OpenSSL refused kiln's cipher list: {}", lastOpenSslError()));
  }
  // An encrypted key would make OpenSSL prompt on the terminal; a daemon fails instead.
  context->set_password_callback(
      [](std::size_t, ssl::context::password_purpose) { return std::string(); });

  Result<std::string> cert = readPemFile(settings.cert_file, "[api] cert_file", false);
  if (!cert) return cert.error();
  beast::error_code ec;
  context->use_certificate_chain(asio::buffer(*cert), ec);
  if (ec) {
    return Error::invalid(fmt::format("[api] cert_file '{}' holds no usable PEM certificate: {}",
                                      settings.cert_file, describeTlsError(ec)));
  }
  Result<std::string> key = readPemFile(settings.key_file, "[api] key_file", true);
  if (!key) return key.error();
  context->use_private_key(asio::buffer(*key), ssl::context::pem, ec);
  OPENSSL_cleanse(key->data(), key->size());
  // OpenSSL compares the key with the certificate as it loads it.
  bool mismatch =
      ec && ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH;
  if (mismatch || (!ec && ::SSL_CTX_check_private_key(ctx) != 1)) {
    ::ERR_clear_error();
    return Error::invalid(
        fmt::format("The private key in [api] key_file '{}' does not match the certificate in "
                    "[api] cert_file '{}'",
                    settings.key_file, settings.cert_file));
  }
  if (ec) {
    return Error::invalid(
        fmt::format("[api] key_file '{}' holds no usable unencrypted PEM private key: {}",
                    settings.key_file, describeTlsError(ec)));
  }
  if (X509* own = ::SSL_CTX_get0_certificate(ctx);
      own != nullptr && ::X509_cmp_current_time(X509_get0_notAfter(own)) < 0) {
    log::warn("The certificate in [api] cert_file '{}' has expired; clients will refuse it",
              settings.cert_file);
  }
  if (!settings.ca_file.empty()) {
    Result<std::string> cas = readPemFile(settings.ca_file, "[api] ca_file", false);
    if (!cas) return cas.error();
    if (auto loaded = loadClientCas(ctx, *cas, settings.ca_file); !loaded) return loaded.error();
    ::SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // Without an id context OpenSSL refuses to resume sessions of verified clients.
    static constexpr unsigned char kSessionContext[] = "kilnd";
    ::SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  }
  return context;
}

}  // namespace kiln::rpc::httpd
