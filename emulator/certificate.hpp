// Self-signed TLS certificates generated in memory with OpenSSL, for the emulator's HTTPS
// servers (Service Fabric, Key Vault). Nothing is written to disk unless a caller does it.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace azkms::emulator {

struct CertificateOptions {
  std::string common_name = "127.0.0.1";
  // Subject alternative names: IP addresses ("127.0.0.1", "::1") and DNS names.
  std::vector<std::string> ip_addresses = {"127.0.0.1"};
  std::vector<std::string> dns_names;
  std::chrono::hours validity{24 * 7};
  int rsa_bits = 2048;
};

struct Certificate {
  std::shared_ptr<X509> x509;
  std::shared_ptr<EVP_PKEY> private_key;
  std::string certificate_pem;
  std::string private_key_pem;
  // SHA-1 of the DER certificate: 40 uppercase hex digits, as IDENTITY_SERVER_THUMBPRINT.
  std::string sha1_thumbprint;
};

// Throws std::runtime_error naming the OpenSSL step that failed.
Certificate make_self_signed_certificate(const CertificateOptions& options = {});

}  // namespace azkms::emulator
