// TokenProvider: how the KMS layer gets a provider's token, with or without the cache. Internal.
#pragma once

#include <memory>

#include "azkms/clock.hpp"
#include "azkms/source.hpp"
#include "azkms/token.hpp"

namespace azkms::kms {

class TokenProvider {
 public:
  virtual ~TokenProvider() = default;
  // A token usable now; fetched from the source when there is no fresh one.
  virtual AccessToken get(Deadline deadline) = 0;
  // Forgets the current token (Key Vault refused it).
  virtual void invalidate() = 0;
};

// `cache`: false fetches on every call (for callers that cache themselves, and for tests).
std::shared_ptr<TokenProvider> make_token_provider(std::shared_ptr<TokenSource> source,
                                                   TokenRequest request, bool cache,
                                                   std::shared_ptr<Clock> clock);

}  // namespace azkms::kms
