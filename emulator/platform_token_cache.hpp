// The token cache App Service and Service Fabric keep on the platform's side: a request for an
// identity and resource gets the token issued before while it has more than a few minutes
// left, however often the client asks, unless the request names that token's SHA-256 in
// token_sha256_to_refresh (MSI v1 token revocation, with xms_cc=cp1): then a new one is issued.
// This is what makes a client's plain retry after a Key Vault 401 get the same refused token.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

namespace azkms::emulator {

class PlatformTokenCache {
 public:
  using Clock = std::chrono::system_clock;
  struct Entry {
    std::string token;
    Clock::time_point expires;
  };
  // Issues a new token for (client id, resource) with the given lifetime.
  using Issue = std::function<Entry()>;

  // A token handed back from the cache is kept while it has more than this left.
  static constexpr std::chrono::minutes kMinRemaining{5};

  // The cached entry for the key, or a newly issued one (then cached). `refresh_hash` is the
  // request's token_sha256_to_refresh (lower or upper case hex); `reused` says which happened.
  Entry get(const std::string& scope, const std::string& client_id, const std::string& resource,
            const std::string& refresh_hash, const Issue& issue, bool& reused);

  // Lowercase hex SHA-256, as the revocation protocol names tokens.
  static std::string sha256_hex(const std::string& token);

 private:
  std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, std::string>, Entry> entries_;
};

}  // namespace azkms::emulator
