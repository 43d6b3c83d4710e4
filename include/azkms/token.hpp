// AccessToken: what every source produces and every consumer reads.
#pragma once

#include <optional>
#include <string>

#include "azkms/clock.hpp"
#include "azkms/export.h"
#include "azkms/identity.hpp"
#include "azkms/secret.hpp"

namespace azkms {

// The Key Vault resource that MongoDB drivers ask for (no trailing slash).
inline constexpr std::string_view kKeyVaultResource = "https://vault.azure.net";

struct AZKMS_EXPORT TokenRequest {
  std::string resource{kKeyVaultResource};
  IdentitySelector identity;

  // Written out (not defaulted) so that the header compiles as C++17.
  friend bool operator==(const TokenRequest& a, const TokenRequest& b) {
    return a.resource == b.resource && a.identity == b.identity;
  }
  friend bool operator!=(const TokenRequest& a, const TokenRequest& b) { return !(a == b); }
};

struct AZKMS_EXPORT AccessToken {
  Secret token;
  std::string token_type = "Bearer";
  std::string resource;
  // Absolute expiry, whatever shape the endpoint used (expires_in, expires_on, dates).
  SystemTime expires_on{};
  // When the endpoint asked to be asked again (refresh_in); empty when it did not say.
  std::optional<SystemTime> refresh_on;
  // The identity the endpoint says it issued the token for, when it says.
  std::string client_id;
  // Display name of the source that produced it ("App Service", "IMDS", ...).
  std::string source;
};

}  // namespace azkms
