// CryptSession: MongoDB explicit client-side encryption with data keys wrapped by Azure Key
// Vault, on libmongocrypt (1.7.2 on Debian 12; named providers need >= 1.9). It owns a
// mongocrypt_t and runs each operation's state machine to completion:
//  - NEED_KMS_CREDENTIALS: the base "azure" provider is answered on demand from the
//    KmsProviders registry (libmongocrypt is configured with {"azure": {}} and the
//    need-credentials state), so a token is fetched, or read from the cache, only when
//    libmongocrypt asks;
//  - named providers ("azure:prod", libmongocrypt >= 1.9): every "azure:<name>" registered when
//    the session is created is served on demand too, each from its own binding in the
//    registry. libmongocrypt asks for their tokens as KMS requests to a placeholder endpoint
//    under ".invalid"; the session answers them in-process and never sends them;
//  - NEED_KMS: each Key Vault request libmongocrypt builds is sent over TLS (verification
//    always on; extra trust only through `ca_file`) within the operation's deadline, retried on
//    408/429/500/502/503/504 (this retry only: libmongocrypt's own, where it has one, stays
//    off), with the status read before the response is handed over; a 401 drops the cached
//    token of the provider it was for and the operation is run again once with a fresh one;
//  - NEED_MONGO_KEYS: answered from a KeyVault.
// Thread-safe: each call runs its own libmongocrypt context. libmongocrypt caches decrypted
// data keys for a minute, so repeated operations with one key reach Key Vault once a minute.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/bson.hpp"
#include "azkms/clock.hpp"
#include "azkms/export.h"
#include "azkms/http.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"
#include "azkms/retry.hpp"

namespace azkms {

// The Azure master key of a data key. keyVaultEndpoint is host[:port] (no scheme), e.g.
// "my-vault.vault.azure.net". libmongocrypt 1.7.2 refuses a host without a dot, so a local
// Key Vault is addressed as 127.0.0.1:<port>, not localhost.
struct AZKMS_EXPORT AzureMasterKey {
  std::string provider{kAzureProvider};  // "azure", or "azure:<name>" (libmongocrypt >= 1.9)
  std::string key_vault_endpoint;
  std::string key_name;
  std::string key_version;  // empty: the key's current version
};

enum class Algorithm {
  kDeterministic,  // AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic: equal inputs, equal outputs
  kRandom,         // AEAD_AES_256_CBC_HMAC_SHA_512-Random
};
AZKMS_EXPORT std::string_view to_string(Algorithm algorithm) noexcept;

// Counters, for tests, the demo and the benchmark.
struct AZKMS_EXPORT CryptStats {
  std::uint64_t credential_requests = 0;   // NEED_KMS_CREDENTIALS answered
  std::uint64_t named_token_requests = 0;  // named providers' token requests answered in-process
  std::uint64_t kms_requests = 0;          // HTTP exchanges with Key Vault (every attempt)
  std::uint64_t kms_retries = 0;           // attempts after a retryable answer or failure
  std::uint64_t unauthorized_retries = 0;  // operations run again after a 401
  std::uint64_t key_vault_reads = 0;       // NEED_MONGO_KEYS answered
};

struct AZKMS_EXPORT CryptSessionOptions {
  std::shared_ptr<KmsProviders> providers;  // required
  std::shared_ptr<KeyVault> key_vault;      // required
  // The client for Key Vault. Default: libcurl (shared connections, TLS always verified).
  std::shared_ptr<HttpClient> http;
  std::shared_ptr<Clock> clock;  // default: the system clock
  // PEM file of extra trust anchors for Key Vault TLS, e.g. the local emulator's CA.
  std::string ca_file;
  // Per Key Vault attempt; the MongoDB specification's 10 s.
  std::chrono::milliseconds kms_attempt_timeout{10'000};
  // Deadline of an operation when the caller gives none.
  std::chrono::milliseconds operation_timeout{30'000};
  RetryPolicy kms_retry = RetryPolicy::identity_endpoint();
};

class AZKMS_EXPORT CryptSession {
 public:
  // Throws kConfiguration for missing options, kCrypt when libmongocrypt cannot initialise.
  explicit CryptSession(CryptSessionOptions options);
  ~CryptSession();
  CryptSession(const CryptSession&) = delete;
  CryptSession& operator=(const CryptSession&) = delete;

  // Creates a data key wrapped by `master_key`, stores it in the key vault and returns its id.
  // A named provider is ErrorCode::kUnsupported with libmongocrypt < 1.9, and one not
  // registered when the session was created is ErrorCode::kConfiguration, before any request.
  DataKeyId create_data_key(const AzureMasterKey& master_key,
                            const std::vector<std::string>& key_alt_names = {},
                            std::optional<Deadline> deadline = std::nullopt);

  // Explicit encryption of one value with the data key `key` (by id or by keyAltName). The
  // result is BSON binary subtype 6.
  BsonValue encrypt(const BsonValue& value, const DataKeyId& key, Algorithm algorithm,
                    std::optional<Deadline> deadline = std::nullopt);
  BsonValue encrypt(const BsonValue& value, std::string_view key_alt_name, Algorithm algorithm,
                    std::optional<Deadline> deadline = std::nullopt);
  // Explicit decryption of a subtype 6 value.
  BsonValue decrypt(const BsonValue& ciphertext, std::optional<Deadline> deadline = std::nullopt);

  [[nodiscard]] CryptStats stats() const;
  // "1.7.2"
  static std::string libmongocrypt_version();
  // True when the libmongocrypt in use (>= 1.9) accepts named providers ("azure:<name>").
  static bool supports_named_providers();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace azkms
