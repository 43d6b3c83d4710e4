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
  // Set by a TokenCache asking again because the token it held was refused
  // (TokenHandle::invalidate() or force_refresh()): the hex SHA-256 of that token. App Service
  // and Service Fabric cache tokens on the platform's side for hours; they are sent this with
  // the client capability cp1 (MSI v1 token revocation), so that the platform issues a new
  // token instead of handing back the refused one. Other sources ignore it.
  std::string token_sha256_to_refresh{};
  // Set by a TokenCache asking again after invalidate() was given the resource's claims
  // challenge (Key Vault's 401 `WWW-Authenticate: Bearer ..., claims="<base64 JSON>"`, decoded):
  // the JSON claims. Workload identity passes them to the token endpoint (`claims=`); managed
  // identity endpoints take none.
  std::string claims{};  // {}: aggregates may leave it out without a warning

  // Written out (not defaulted) so that the header compiles as C++17.
  friend bool operator==(const TokenRequest& a, const TokenRequest& b) {
    return a.resource == b.resource && a.identity == b.identity &&
           a.token_sha256_to_refresh == b.token_sha256_to_refresh && a.claims == b.claims;
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
