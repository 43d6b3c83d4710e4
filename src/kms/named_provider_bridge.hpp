// On-demand credentials for named Azure KMS providers ("azure:prod") on libmongocrypt >= 1.9.
//
// Why a bridge: libmongocrypt tracks the need for on-demand credentials per provider type, so
// it never asks for a named provider's token (an empty named document is refused, and named
// entries given to mongocrypt_ctx_provide_kms_providers are ignored). What it does support is a
// named provider configured with client credentials, for which it fetches a token itself as a
// KMS request of its own (an OAuth client_credentials POST) and caches the answer per provider
// name until expires_in - 5 s.
//
// The bridge configures each named provider with placeholder client credentials: a random
// secret made for this session and an identity platform endpoint under the reserved `.invalid`
// domain, which can never resolve. CryptSession owns the KMS transport, so it recognises those
// token requests and answers them in-process with a token from the registry's cache for that
// name's identity. The placeholder never leaves the process; a request that is not exactly one
// of ours is refused, never sent.
#pragma once

#include <bson/bson.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/clock.hpp"
#include "azkms/http.hpp"
#include "azkms/token.hpp"
#include "fork_safety.hpp"

namespace azkms {

class NamedProviderBridge final : private detail::ForkAware {
 public:
  // The host every placeholder names. Under `.invalid` (RFC 6761): no resolver answers it.
  static constexpr std::string_view kPlaceholderHost = "login.azkms.invalid";
  // The longest lifetime an answer announces. libmongocrypt keeps the token it is given until
  // then (a Key Vault 401 does not clear it), so a short lifetime bounds how long a token the
  // registry has since replaced can be used; re-asking costs only an in-process answer.
  static constexpr std::chrono::seconds kMaxAnnouncedLifetime{60};

  // One placeholder per name ("azure:<name>"), each with a fresh random secret.
  explicit NamedProviderBridge(std::vector<std::string> names);
  ~NamedProviderBridge() = default;  // fork_registration_ goes first
  NamedProviderBridge(const NamedProviderBridge&) = delete;
  NamedProviderBridge& operator=(const NamedProviderBridge&) = delete;

  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return names_; }
  [[nodiscard]] bool serves(std::string_view provider) const;

  // Appends {"azure:<name>": {tenantId, clientId, clientSecret, identityPlatformEndpoint}}
  // for each name to a kmsProviders document.
  void append_placeholders(bson_t* kms_providers) const;

  // True when a KMS request goes to the placeholder host ("login.azkms.invalid:443").
  [[nodiscard]] static bool is_placeholder_endpoint(std::string_view endpoint) noexcept;

  // The provider a placeholder token request is for. Throws ErrorCode::kKms when the request
  // is not a client_credentials POST to /<tenant>/oauth2/v2.0/token carrying one of this
  // bridge's secrets.
  [[nodiscard]] const std::string& provider_of(const HttpRequest& request) const;

  // The token endpoint's answer for libmongocrypt: 200 with access_token, token_type and an
  // expires_in no longer than kMaxAnnouncedLifetime and than the token's remaining life.
  // Remembers which provider the token went to (see provider_of_token).
  [[nodiscard]] HttpResponse answer(const std::string& provider, const AccessToken& token,
                                    SystemTime now);

  // The named provider a Key Vault request's bearer token was handed to; nullopt for a token
  // this bridge did not hand out (the base "azure" provider's).
  [[nodiscard]] std::optional<std::string> provider_of_token(std::string_view bearer) const;

 private:
  void remember(const std::string& provider, std::string token_digest);

  // fork() (fork_safety.hpp): mutex_ is held across it, so that a child whose parent was
  // answering a token request at the fork finds it unlocked, and the digests whole.
  void before_fork() override { mutex_.lock(); }
  void after_fork_in_parent() override { mutex_.unlock(); }
  void after_fork_in_child() override { mutex_.unlock(); }

  struct Placeholder {
    std::string provider;
    std::string client_id;
    std::string secret;  // hex; never sent anywhere
  };

  std::vector<std::string> names_;
  std::vector<Placeholder> placeholders_;
  // The most recent tokens handed to each provider, as SHA-256 digests (no copy of a token is
  // kept); a few per provider, since a 401 names a token handed out shortly before.
  static constexpr std::size_t kRememberedTokens = 4;
  mutable std::mutex mutex_;
  std::map<std::string, std::vector<std::string>, std::less<>> recent_digests_;
  // Last: registered once everything above exists, unregistered before any of it goes.
  detail::ForkRegistration fork_registration_{*this};
};

}  // namespace azkms
