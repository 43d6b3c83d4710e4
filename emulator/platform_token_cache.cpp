#include "platform_token_cache.hpp"

#include <algorithm>
#include <cctype>

#include "sha256.hpp"

namespace azkms::emulator {

std::string PlatformTokenCache::sha256_hex(const std::string& token) {
  return azkms::sha256_hex(token);
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
