#include "certificate_authority.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdexcept>
#include <string_view>

namespace azkms::emulator {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("emulator certificates: " + what + " failed");
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

PkeyPtr generate_key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) fail("EC P-256 key generation");
  return key;
}

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  if (size < 0) fail("BIO_get_mem_data");
  return std::string(data, static_cast<std::size_t>(size));
}

std::string certificate_to_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) fail("PEM_write_bio_X509");
  return bio_to_string(bio.get());
}

std::string key_to_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    fail("PEM_write_bio_PrivateKey");
  }
  return bio_to_string(bio.get());
}

void add_extension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, ctx, nid, value.c_str());
  if (ext == nullptr) fail("extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) fail("X509_add_ext");
}

// Fills everything but the extensions and the signature.
X509Ptr new_certificate(const std::string& common_name, EVP_PKEY* subject_key,
                        X509_NAME* issuer_name, int days) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) fail("X509_new");

  // 127-bit positive random serial: unique per certificate, as RFC 5280 asks.
  BnPtr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    fail("serial number");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), 60L * 60 * 24 * days) == nullptr) {
    fail("validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>("azkms emulator"), -1, -1,
                                 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1) {
    fail("subject name");
  }
  if (X509_set_issuer_name(cert.get(), issuer_name != nullptr ? issuer_name : name) != 1) {
    fail("issuer name");
  }
  if (X509_set_pubkey(cert.get(), subject_key) != 1) fail("X509_set_pubkey");
  return cert;
}

std::string subject_alt_names(const std::vector<std::string>& dns_names,
                              const std::vector<std::string>& ip_addresses) {
  // Appended piece by piece: `"," + ("DNS:" + dns)` makes GCC 12 at -O3 report a false
  // -Wrestrict (overlapping memcpy) inside std::string's operator+.
  std::string san;
  const auto add = [&san](std::string_view kind, const std::string& value) {
    if (!san.empty()) san += ',';
    san.append(kind).append(value);
  };
  for (const auto& dns : dns_names) add("DNS:", dns);
  for (const auto& ip : ip_addresses) add("IP:", ip);
  return san;
}

PemCertificate make_server_certificate(const std::string& common_name,
                                       const std::vector<std::string>& dns_names,
                                       const std::vector<std::string>& ip_addresses, int days,
                                       X509* issuer, EVP_PKEY* issuer_key) {
  if (dns_names.empty() && ip_addresses.empty()) {
    throw std::invalid_argument("emulator certificates: a server certificate needs a name");
  }
  PkeyPtr key = generate_key();
  X509Ptr cert = new_certificate(common_name, key.get(), X509_get_subject_name(issuer), days);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(cert.get(), &ctx, NID_ext_key_usage, "serverAuth");
  add_extension(cert.get(), &ctx, NID_subject_alt_name, subject_alt_names(dns_names, ip_addresses));
  add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) fail("X509_sign");
  return PemCertificate{certificate_to_pem(cert.get()), key_to_pem(key.get())};
}

}  // namespace

struct CertificateAuthority::Impl {
  PkeyPtr key;
  X509Ptr cert;
  std::string pem;
};

CertificateAuthority::CertificateAuthority(const std::string& common_name, int days)
    : impl_(std::make_unique<Impl>()) {
  impl_->key = generate_key();
  impl_->cert = new_certificate(common_name, impl_->key.get(), nullptr, days);
  X509* cert = impl_->cert.get();
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  add_extension(cert, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_extension(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(cert, &ctx, NID_subject_key_identifier, "hash");
  add_extension(cert, &ctx, NID_authority_key_identifier, "keyid:always");
  if (X509_sign(cert, impl_->key.get(), EVP_sha256()) == 0) fail("X509_sign");
  impl_->pem = certificate_to_pem(cert);
}

CertificateAuthority::~CertificateAuthority() = default;
CertificateAuthority::CertificateAuthority(CertificateAuthority&&) noexcept = default;
CertificateAuthority& CertificateAuthority::operator=(CertificateAuthority&&) noexcept = default;

const std::string& CertificateAuthority::certificate_pem() const { return impl_->pem; }

PemCertificate CertificateAuthority::issue_server_certificate(
    const std::string& common_name, const std::vector<std::string>& dns_names,
    const std::vector<std::string>& ip_addresses, int days) const {
  return make_server_certificate(common_name, dns_names, ip_addresses, days, impl_->cert.get(),
                                 impl_->key.get());
}

}  // namespace azkms::emulator
