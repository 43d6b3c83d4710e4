#include "platform_token_cache.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>

namespace azkms::emulator {

std::string PlatformTokenCache::sha256_hex(const std::string& token) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(token.data(), token.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("emulator: SHA-256 failed");
  }
  std::array<char, 2 * EVP_MAX_MD_SIZE + 1> text{};
  if (OPENSSL_buf2hexstr_ex(text.data(), text.size(), nullptr, digest.data(), length, '\0') != 1) {
    throw std::runtime_error("emulator: hex encoding failed");
  }
  std::string hex(text.data());
  std::transform(hex.begin(), hex.end(), hex.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return hex;
}

PlatformTokenCache::Entry PlatformTokenCache::get(const std::string& scope,
                                                  const std::string& client_id,
                                                  const std::string& resource,
                                                  const std::string& refresh_hash,
                                                  const Issue& issue, bool& reused) {
  std::string wanted_gone = refresh_hash;
  std::transform(wanted_gone.begin(), wanted_gone.end(), wanted_gone.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::lock_guard lock(mutex_);
  const auto key = std::make_tuple(scope, client_id, resource);
  const auto found = entries_.find(key);
  if (found != entries_.end() && found->second.expires - Clock::now() > kMinRemaining &&
      (wanted_gone.empty() || sha256_hex(found->second.token) != wanted_gone)) {
    reused = true;
    return found->second;
  }
  reused = false;
  Entry fresh = issue();
  entries_[key] = fresh;
  return fresh;
}

}  // namespace azkms::emulator
