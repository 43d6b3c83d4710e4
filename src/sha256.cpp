#include "sha256.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "azkms/error.hpp"

namespace azkms {

std::string sha256(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &length, EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorCode::kCrypt, "SHA-256 failed (EVP_Digest)");
  }
  return std::string(reinterpret_cast<const char*>(out.data()), length);
}

std::string sha256_hex(std::string_view data) {
  const std::string digest = sha256(data);
  std::array<char, 2 * EVP_MAX_MD_SIZE + 1> text{};
  std::size_t length = 0;
  if (OPENSSL_buf2hexstr_ex(text.data(), text.size(), &length,
                            reinterpret_cast<const unsigned char*>(digest.data()), digest.size(),
                            '\0') != 1) {
    throw Error(ErrorCode::kCrypt, "cannot encode a SHA-256 digest");
  }
  // OpenSSL writes upper case; the revocation protocol's hashes are lower case.
  std::string hex(text.data());
  std::transform(hex.begin(), hex.end(), hex.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return hex;
}

}  // namespace azkms
