#include "certificate.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include <stdexcept>

#include "encoding.hpp"

namespace azkms::emulator {
namespace {

[[noreturn]] void fail(const char* step) {
  throw std::runtime_error(std::string("emulator: certificate generation failed at ") + step);
}

void check(int rc, const char* step) {
  if (rc <= 0) fail(step);
}

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(length));
}

void add_extension(X509* x509, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x509, x509, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (extension == nullptr) fail("X509V3_EXT_conf_nid");
  const int rc = X509_add_ext(x509, extension, -1);
  X509_EXTENSION_free(extension);
  check(rc, "X509_add_ext");
}

}  // namespace

Certificate make_self_signed_certificate(const CertificateOptions& options) {
  Certificate result;
  result.private_key.reset(EVP_RSA_gen(static_cast<unsigned>(options.rsa_bits)), EVP_PKEY_free);
  if (!result.private_key) fail("EVP_RSA_gen");

  result.x509.reset(X509_new(), X509_free);
  X509* x509 = result.x509.get();
  if (x509 == nullptr) fail("X509_new");
  check(X509_set_version(x509, 2), "X509_set_version");

  std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(BN_new(), BN_free);
  if (!serial) fail("BN_new");
  check(BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY), "BN_rand");
  if (BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x509)) == nullptr) {
    fail("BN_to_ASN1_INTEGER");
  }

  // Valid from an hour ago, so that small clock differences never make it "not yet valid".
  if (X509_gmtime_adj(X509_getm_notBefore(x509), -3600) == nullptr) fail("notBefore");
  const long validity_seconds =
      static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(options.validity).count());
  if (X509_gmtime_adj(X509_getm_notAfter(x509), validity_seconds) == nullptr) fail("notAfter");

  X509_NAME* name = X509_get_subject_name(x509);
  check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("azkms emulator"), -1, -1,
                                   0),
        "X509_NAME_add_entry_by_txt(O)");
  check(X509_NAME_add_entry_by_txt(
            name, "CN", MBSTRING_ASC,
            reinterpret_cast<const unsigned char*>(options.common_name.c_str()), -1, -1, 0),
        "X509_NAME_add_entry_by_txt(CN)");
  check(X509_set_issuer_name(x509, name), "X509_set_issuer_name");
  check(X509_set_pubkey(x509, result.private_key.get()), "X509_set_pubkey");

  std::string san;
  for (const auto& ip : options.ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + ip;
  for (const auto& dns : options.dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + dns;
  if (!san.empty()) add_extension(x509, NID_subject_alt_name, san);
  add_extension(x509, NID_ext_key_usage, "serverAuth");
  add_extension(x509, NID_subject_key_identifier, "hash");

  check(X509_sign(x509, result.private_key.get(), EVP_sha256()), "X509_sign");

  std::unique_ptr<BIO, decltype(&BIO_free)> cert_bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!cert_bio) fail("BIO_new");
  check(PEM_write_bio_X509(cert_bio.get(), x509), "PEM_write_bio_X509");
  result.certificate_pem = bio_to_string(cert_bio.get());

  std::unique_ptr<BIO, decltype(&BIO_free)> key_bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!key_bio) fail("BIO_new");
  check(PEM_write_bio_PrivateKey(key_bio.get(), result.private_key.get(), nullptr, nullptr, 0,
                                 nullptr, nullptr),
        "PEM_write_bio_PrivateKey");
  result.private_key_pem = bio_to_string(key_bio.get());

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  check(X509_digest(x509, EVP_sha1(), digest, &digest_length), "X509_digest");
  result.sha1_thumbprint =
      hex_encode(std::string_view(reinterpret_cast<const char*>(digest), digest_length));
  return result;
}

}  // namespace azkms::emulator
