#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): the TLS context of the TCP listener, built
// from the PEM files an operator names, and OpenSSL's reasons put into words.

#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/error.hpp>

#include "agent/rpc/http_server.h"
#include "common/result.h"

namespace kiln::rpc::httpd {

// TLS 1.2 or later with forward-secret AEAD suites; client certificates required when the
// settings name a CA file. The key file must not be accessible by group or others. Errors name
// the option and file, and why it is refused (missing, readable by others, key and certificate
// mismatch).
Result<std::shared_ptr<boost::asio::ssl::context>> makeTlsContext(const TlsSettings& settings);

// "certificate verify failed", "peer did not return a certificate", ...: OpenSSL's reason, which
// is what an operator debugging a client needs.
std::string describeTlsError(const boost::beast::error_code& ec);

}  // namespace kiln::rpc::httpd
