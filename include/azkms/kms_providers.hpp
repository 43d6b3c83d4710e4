// KmsProviders: the registry of Azure KMS providers, and the kmsProviders documents made from
// it.
//
// A provider is the base "azure" or a named "azure:<name>" (libmongocrypt >= 1.9 syntax; the
// name is [A-Za-z0-9_]+). Each is bound to its own credentials: a managed identity source
// (named, or detected from the environment on first use), an identity selector and a
// resource, or a user's TokenCallback (the official way to plug in another SDK). Tokens go
// through the token cache, so asking for a document thousands of times a second costs a
// memory read, not a request to an identity endpoint.
//
// The registry never fills a provider before it is asked (the client-side encryption
// specification forbids eager filling): registering does no I/O and no detection, and a
// document holds exactly the providers named in the call that made it.
//
// JSON configuration (from_json / from_file), validated strictly: unknown fields, wrong types
// and conflicting selectors are ErrorCode::kConfiguration errors naming the field.
//
//   {
//     "version": 1,                                  // optional; 1 is the only version
//     "tokenTimeoutMs": 10000,                       // optional; budget for obtaining a token
//                                                    // when the caller gives no deadline
//     "providers": {                                 // required, at least one
//       "azure":      { "source": "auto" },          // detect the hosting environment
//       "azure:prod": { "source": "app-service",     // or imds, app-service-2017, azure-ml,
//                                                    // cloud-shell, azure-arc, service-fabric,
//                                                    // workload-identity
//                       "clientId": "<uuid>",        // at most one of clientId, objectId,
//                                                    // resourceId (none: system-assigned)
//                       "resource": "https://vault.azure.net" },   // optional, the default
//       "azure:sdk":  { "source": "callback", "callback": "my-sdk" }  // a TokenCallback given
//                                                    // in KmsProvidersOptions::callbacks
//     }
//   }
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/bson.hpp"
#include "azkms/cache.hpp"
#include "azkms/clock.hpp"
#include "azkms/environment.hpp"
#include "azkms/export.h"
#include "azkms/secret.hpp"
#include "azkms/source.hpp"
#include "azkms/span.hpp"
#include "azkms/token.hpp"

namespace azkms {

inline constexpr std::string_view kAzureProvider = "azure";

// True for "azure" and "azure:<name>" with a name of [A-Za-z0-9_]+.
[[nodiscard]] AZKMS_EXPORT bool is_azure_provider_name(std::string_view name) noexcept;
// True for "azure:<name>" (a valid named provider).
[[nodiscard]] AZKMS_EXPORT bool is_named_provider(std::string_view name) noexcept;

// Credentials of one provider when they come from a managed identity source.
struct AZKMS_EXPORT ProviderConfig {
  // nullopt: detect the hosting environment, on the first request for a token.
  std::optional<SourceKind> source;
  IdentitySelector identity;
  std::string resource{kKeyVaultResource};
};

struct AZKMS_EXPORT KmsProvidersOptions {
  // Where detection and sources read their variables. Default: the process environment.
  std::shared_ptr<const Environment> environment;
  // HTTP client, clock and per-attempt timeout of managed identity sources.
  SourceContext context;
  // Tokens are cached (refreshed ahead of expiry, single flight) unless this is false. One
  // TokenCache serves every provider of the registry; its clock defaults to context.clock.
  bool cache = true;
  CacheOptions cache_options;
  // Budget for obtaining a token when the caller has no deadline of its own (the libmongoc
  // callback). Overridden by "tokenTimeoutMs" in a JSON configuration.
  std::chrono::milliseconds token_timeout{10'000};
  // Callbacks that a JSON configuration can bind a provider to ("callback": "<key>").
  std::map<std::string, TokenCallback, std::less<>> callbacks;
};

// What a document was made of, without the secret: for printing and for tests.
struct AZKMS_EXPORT ProvidedCredential {
  std::string provider;  // "azure", "azure:prod"
  std::string source;    // display name of the source that issued the token ("App Service")
  SystemTime expires_on{};
};

// A kmsProviders document with credentials: {"azure": {"accessToken": "..."}, ...}.
// It holds tokens, so it has no printable form except the redacted one.
class AZKMS_EXPORT KmsProvidersDocument {
 public:
  KmsProvidersDocument() = default;
  KmsProvidersDocument(BsonDocument document, std::vector<ProvidedCredential> credentials)
      : document_(std::move(document)), credentials_(std::move(credentials)) {}
  KmsProvidersDocument(KmsProvidersDocument&&) noexcept = default;
  KmsProvidersDocument& operator=(KmsProvidersDocument&&) noexcept = default;
  KmsProvidersDocument(const KmsProvidersDocument&) = default;
  KmsProvidersDocument& operator=(const KmsProvidersDocument&) = default;
  ~KmsProvidersDocument();  // wipes the tokens

  // The document for libmongocrypt (mongocrypt_ctx_provide_kms_providers) or libmongoc.
  [[nodiscard]] const BsonDocument& bson() const noexcept { return document_; }
  // Relaxed Extended JSON with the tokens in it, for tools that take kmsProviders as JSON.
  [[nodiscard]] Secret extended_json() const;
  // The same JSON with every accessToken replaced by "[redacted]": safe to print.
  [[nodiscard]] std::string redacted_json() const;
  [[nodiscard]] const std::vector<ProvidedCredential>& credentials() const noexcept {
    return credentials_;
  }

 private:
  BsonDocument document_;
  std::vector<ProvidedCredential> credentials_;
};

class AZKMS_EXPORT KmsProviders {
 public:
  explicit KmsProviders(KmsProvidersOptions options = {});
  ~KmsProviders();
  KmsProviders(KmsProviders&&) noexcept;
  KmsProviders& operator=(KmsProviders&&) noexcept;
  KmsProviders(const KmsProviders&) = delete;
  KmsProviders& operator=(const KmsProviders&) = delete;

  // Builds a registry from the JSON format above. `origin` names the text in errors
  // ("config.json"). Throws ErrorCode::kConfiguration naming the offending field.
  static KmsProviders from_json(std::string_view json, KmsProvidersOptions options = {},
                                std::string_view origin = "configuration");
  static KmsProviders from_file(const std::filesystem::path& path,
                                KmsProvidersOptions options = {});

  // Registration. Throws kConfiguration for an invalid or already registered name, a callback
  // that is empty, or a resource that is not an https URL. No I/O happens here.
  KmsProviders& add(std::string name, ProviderConfig config = {});
  KmsProviders& add_callback(std::string name, TokenCallback callback, TokenRequest request = {},
                             std::string display_name = "custom callback");
  KmsProviders& add_source(std::string name, std::shared_ptr<TokenSource> source,
                           TokenRequest request = {});

  [[nodiscard]] bool contains(std::string_view name) const;
  [[nodiscard]] std::vector<std::string> names() const;  // sorted
  // One line without secrets: "azure:prod: App Service (forced), client id 1234..., resource
  // https://vault.azure.net". Detection is not triggered; "auto-detected" until it has run.
  [[nodiscard]] std::string describe(std::string_view name) const;
  [[nodiscard]] std::chrono::milliseconds token_timeout() const;

  // A token for the provider: from the cache while it is fresh, otherwise fetched (detecting
  // the environment first if needed). Throws kConfiguration for an unknown provider, or the
  // source's error.
  AccessToken token(std::string_view name, Deadline deadline);
  AccessToken token(std::string_view name);  // deadline: now + token_timeout()
  // Drops the provider's cached token so that the next token() fetches a new one (after Key
  // Vault answered 401 to it). A no-op for a provider that has no token yet.
  // `claims`: Key Vault's claims challenge (JSON), when its 401 carried one; passed on to
  // sources that accept claims (workload identity).
  void invalidate(std::string_view name, std::string_view claims = {});
  // Tokens obtained from the provider's source (not from the cache) so far. The cache renews
  // in the background, so this may grow without a call to token().
  [[nodiscard]] std::uint64_t fetch_count(std::string_view name) const;

  // {"<name>": {}, ...}: the on-demand configuration for libmongocrypt and libmongoc.
  [[nodiscard]] BsonDocument on_demand_document(Span<std::string> names) const;
  // The kmsProviders document with credentials for exactly `names`, in that order.
  KmsProvidersDocument credentials(Span<std::string> names, Deadline deadline);
  KmsProvidersDocument credentials(std::initializer_list<std::string_view> names,
                                   Deadline deadline);
  KmsProvidersDocument credentials(std::initializer_list<std::string_view> names);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace azkms
