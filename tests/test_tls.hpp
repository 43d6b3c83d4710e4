// Test helper: a self-signed server certificate made with OpenSSL, written as PEM files.
//
//   auto tls = azkms::testing::make_self_signed_cert(azkms::testing::make_temp_dir("tls"));
//   httplib::SSLServer server(tls.cert_pem.c_str(), tls.key_pem.c_str());
//   options.ca_file = tls.cert_pem;                  // trust it as an anchor, or
//   options.pinned_sha1_thumbprint = tls.sha1_thumbprint;  // pin it (Service Fabric)
//
// The certificate names 127.0.0.1, ::1 and localhost (subjectAltName), is valid from an hour
// ago for a day, and carries an RSA-2048 key. Header-only so any test can include it.
#pragma once

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace azkms::testing {

struct TlsFiles {
  std::filesystem::path cert_pem;  // the certificate (also usable as a CA file)
  std::filesystem::path key_pem;   // its private key, unencrypted
  std::string sha1_thumbprint;     // 40 upper-case hex digits, no separators
};

// A fresh directory under $TMPDIR (or /tmp); the caller removes it if it cares.
inline std::filesystem::path make_temp_dir(const std::string& prefix = "azkms") {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return std::filesystem::path(buffer.data());
}

namespace detail {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct FileClose {
  void operator()(FILE* f) const { std::fclose(f); }
};

inline void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test certificate: ") + what + " failed");
}

inline void add_extension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  check(ext != nullptr, "X509V3_EXT_conf_nid");
  const int added = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  check(added == 1, "X509_add_ext");
}

}  // namespace detail

// Writes <dir>/<name>.crt.pem and <dir>/<name>.key.pem. Each call makes a new key, so two
// calls give two certificates with different thumbprints.
inline TlsFiles make_self_signed_cert(const std::filesystem::path& dir,
                                      const std::string& name = "server",
                                      const std::string& common_name = "127.0.0.1") {
  using detail::check;
  std::unique_ptr<EVP_PKEY, detail::PkeyFree> key(EVP_RSA_gen(2048));
  check(key != nullptr, "EVP_RSA_gen");

  std::unique_ptr<X509, detail::X509Free> cert(X509_new());
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert.get(), 2) == 1, "X509_set_version");
  // A random serial: two certificates from one test run must not look like the same one.
  {
    BIGNUM* serial = BN_new();
    check(serial != nullptr && BN_rand(serial, 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1,
          "BN_rand");
    check(BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get())) != nullptr,
          "BN_to_ASN1_INTEGER");
    BN_free(serial);
  }
  check(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600) != nullptr, "notAfter");
  check(X509_set_pubkey(cert.get(), key.get()) == 1, "X509_set_pubkey");
  X509_NAME* subject = X509_get_subject_name(cert.get());
  check(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                   -1, 0) == 1,
        "subject");
  check(X509_set_issuer_name(cert.get(), subject) == 1, "issuer");
  detail::add_extension(cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  detail::add_extension(cert.get(), NID_key_usage,
                        "critical,digitalSignature,keyEncipherment,keyCertSign");
  detail::add_extension(cert.get(), NID_ext_key_usage, "serverAuth");
  detail::add_extension(cert.get(), NID_subject_key_identifier, "hash");
  detail::add_extension(cert.get(), NID_subject_alt_name, "IP:127.0.0.1,IP:::1,DNS:localhost");
  check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "X509_sign");

  TlsFiles files;
  files.cert_pem = dir / (name + ".crt.pem");
  files.key_pem = dir / (name + ".key.pem");
  {
    std::unique_ptr<FILE, detail::FileClose> f(std::fopen(files.cert_pem.c_str(), "wb"));
    check(f != nullptr && PEM_write_X509(f.get(), cert.get()) == 1, "writing the certificate");
  }
  {
    std::unique_ptr<FILE, detail::FileClose> f(std::fopen(files.key_pem.c_str(), "wb"));
    check(f != nullptr &&
              PEM_write_PrivateKey(f.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "writing the key");
  }

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  check(X509_digest(cert.get(), EVP_sha1(), digest, &length) == 1, "X509_digest");
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned int i = 0; i < length; ++i) {
    files.sha1_thumbprint += kHex[digest[i] >> 4];
    files.sha1_thumbprint += kHex[digest[i] & 0x0f];
  }
  return files;
}

}  // namespace azkms::testing
