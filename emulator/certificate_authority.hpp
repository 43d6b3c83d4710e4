// A throwaway certificate authority created in memory, and server certificates it signs for
// loopback names. Key Vault clients verify the server against a CA bundle (there is no pinning
// as with Service Fabric, whose self-signed certificate comes from certificate.hpp), so the Key
// Vault emulator needs a real CA: clients are given it explicitly (e.g. CURLOPT_CAINFO) and TLS
// is verified end to end exactly as against Azure; nothing here asks a client to skip checks.
//
// Keys are EC P-256 (fast to generate, accepted by every TLS 1.2+ client); signatures SHA-256.
// Certificates carry the extensions strict verifiers insist on (basicConstraints, keyUsage,
// subject/authority key identifiers, and for servers extendedKeyUsage serverAuth and a
// subjectAltName, since host names are never matched against the common name).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace azkms::emulator {

struct PemCertificate {
  std::string certificate_pem;
  std::string private_key_pem;  // PKCS#8, unencrypted: emulator use only
};

class CertificateAuthority {
 public:
  // Generates a new self-signed CA (CA:TRUE, keyCertSign) valid from an hour ago for `days`.
  explicit CertificateAuthority(const std::string& common_name = "azkms emulator CA",
                                int days = 30);
  ~CertificateAuthority();
  CertificateAuthority(CertificateAuthority&&) noexcept;
  CertificateAuthority& operator=(CertificateAuthority&&) noexcept;
  CertificateAuthority(const CertificateAuthority&) = delete;
  CertificateAuthority& operator=(const CertificateAuthority&) = delete;

  [[nodiscard]] const std::string& certificate_pem() const;

  // A leaf certificate for a TLS server, signed by this CA, with subjectAltName entries for
  // each DNS name and IP address (IPv4 or IPv6 literal).
  [[nodiscard]] PemCertificate issue_server_certificate(
      const std::string& common_name, const std::vector<std::string>& dns_names,
      const std::vector<std::string>& ip_addresses, int days = 30) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace azkms::emulator
