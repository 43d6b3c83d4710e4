// TokenProvider: how the KMS layer gets a provider's token, through the shared TokenCache or,
// for callers that cache themselves, straight from the source. Internal.
#pragma once

#include <memory>

#include "azkms/cache.hpp"
#include "azkms/clock.hpp"
#include "azkms/source.hpp"
#include "azkms/token.hpp"

namespace azkms::kms {

class TokenProvider {
 public:
  virtual ~TokenProvider() = default;
  // A token usable now; fetched from the source when there is no fresh one.
  virtual AccessToken get(Deadline deadline) = 0;
  // Forgets the current token (Key Vault refused it, with `claims` when it sent a challenge).
  virtual void invalidate(std::string_view claims) = 0;
};

// `cache` null: every call fetches.
std::shared_ptr<TokenProvider> make_token_provider(std::shared_ptr<TokenSource> source,
                                                   TokenRequest request,
                                                   const std::shared_ptr<TokenCache>& cache);

}  // namespace azkms::kms
