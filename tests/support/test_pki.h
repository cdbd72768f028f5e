#pragma once
// Certificates for TLS tests, made at test time with the openssl command: a CA, a server
// certificate for 127.0.0.1/localhost and a client certificate it issued, and a second CA with a
// client certificate of its own (which the first CA's server must refuse). EC P-256 keys: fast to
// make, so each test binary can make its own set.

#include <sys/stat.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/command_runner.h"

namespace kiln::testing {

struct TestPki {
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string other_ca_cert;
  std::string other_client_cert;
  std::string other_client_key;
};

namespace detail {

inline void runOpenssl(const std::vector<std::string>& args) {
  PosixCommandRunner runner;
  CommandSpec spec;
  spec.argv = {"openssl"};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.timeout = std::chrono::seconds(30);
  auto out = runner.run(spec);
  if (!out || !out->succeeded()) {
    throw std::runtime_error("openssl " + args.front() +
                             " failed: " + (out ? out->stderr_text : out.error().message));
  }
}

// A certificate and its key under `dir`/`name`.{pem,key}: self-signed when `issuer` is empty,
// else issued by `issuer` (whose key is `issuer`.key).
inline void makeCertificate(const std::string& dir, const std::string& name,
                            const std::string& subject, const std::string& issuer,
                            const std::vector<std::string>& extensions) {
  std::vector<std::string> args = {"req",
                                   "-x509",
                                   "-newkey",
                                   "ec",
                                   "-pkeyopt",
                                   "ec_paramgen_curve:prime256v1",
                                   "-nodes",
                                   "-keyout",
                                   dir + "/" + name + ".key",
                                   "-out",
                                   dir + "/" + name + ".pem",
                                   "-subj",
                                   subject,
                                   "-days",
                                   "2"};
  if (!issuer.empty()) {
    args.insert(args.end(),
                {"-CA", dir + "/" + issuer + ".pem", "-CAkey", dir + "/" + issuer + ".key"});
  }
  for (const auto& extension : extensions) args.insert(args.end(), {"-addext", extension});
  runOpenssl(args);
  ::chmod((dir + "/" + name + ".key").c_str(), 0600);
}

}  // namespace detail

inline TestPki makeTestPki(const std::string& dir) {
  const std::vector<std::string> leaf = {"basicConstraints=critical,CA:FALSE",
                                         "keyUsage=critical,digitalSignature"};
  auto with = [&leaf](std::string usage, std::vector<std::string> more = {}) {
    std::vector<std::string> all = leaf;
    all.push_back(std::move(usage));
    all.insert(all.end(), more.begin(), more.end());
    return all;
  };
  detail::makeCertificate(dir, "ca", "/CN=kiln test CA", "", {});
  detail::makeCertificate(
      dir, "server", "/CN=localhost", "ca",
      with("extendedKeyUsage=serverAuth", {"subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"}));
  detail::makeCertificate(dir, "client", "/CN=kiln test scheduler", "ca",
                          with("extendedKeyUsage=clientAuth"));
  detail::makeCertificate(dir, "other-ca", "/CN=some other CA", "", {});
  detail::makeCertificate(dir, "other-client", "/CN=kiln test scheduler", "other-ca",
                          with("extendedKeyUsage=clientAuth"));
  return {dir + "/ca.pem",           dir + "/server.pem",      dir + "/server.key",
          dir + "/client.pem",       dir + "/client.key",      dir + "/other-ca.pem",
          dir + "/other-client.pem", dir + "/other-client.key"};
}

}  // namespace kiln::testing
