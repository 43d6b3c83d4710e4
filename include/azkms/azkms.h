/* azkms.h: the C API. Azure Key Vault credentials for MongoDB client-side encryption in the
 * C driver (libmongoc >= 1.23), from every Azure hosting environment, cached.
 *
 *   bson_error_t error;
 *   azkms_registry_t *registry = azkms_registry_new_from_file ("kms.json", &error);
 *   bson_t kms_providers = BSON_INITIALIZER;
 *   azkms_registry_append_on_demand (registry, &kms_providers, &error);  // {"azure": {}}
 *   mongoc_auto_encryption_opts_set_kms_providers (opts, &kms_providers);
 *   azkms_install_auto_encryption (opts, registry, &error);
 *   ... create the client, use it ...
 *   azkms_registry_destroy (registry);  // after every client that uses it is destroyed
 *
 * libmongoc asks for credentials through the installed callback when an operation needs
 * Key Vault, and not before; the registry answers from its token cache. The configuration
 * file format is described in docs/encryption.md (and in kms_providers.hpp).
 *
 * Errors are reported through bson_error_t: domain AZKMS_ERROR_DOMAIN, code an
 * azkms_error_code_t, message without secrets (tokens never appear in an error).
 *
 * Thread safety: a registry may be used from any number of threads (libmongoc calls the
 * callback from the thread running the operation). Create and destroy it on one thread.
 */
#ifndef AZKMS_H
#define AZKMS_H

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "azkms/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* bson_error_t.domain of azkms errors ("AZKM"). */
#define AZKMS_ERROR_DOMAIN 0x415A4B4Du

/* bson_error_t.code of azkms errors; mirrors azkms::ErrorCode. */
typedef enum {
  AZKMS_ERROR_CONFIGURATION = 1,
  AZKMS_ERROR_NO_SOURCE = 2,
  AZKMS_ERROR_UNSUPPORTED_SELECTOR = 3,
  AZKMS_ERROR_TIMEOUT = 4,
  AZKMS_ERROR_CONNECTION = 5,
  AZKMS_ERROR_TLS = 6,
  AZKMS_ERROR_REDIRECT = 7,
  AZKMS_ERROR_HTTP_STATUS = 8,
  AZKMS_ERROR_RESPONSE_TOO_LARGE = 9,
  AZKMS_ERROR_MALFORMED_RESPONSE = 10,
  AZKMS_ERROR_IDENTITY_MISMATCH = 11,
  AZKMS_ERROR_ARC_CHALLENGE = 12,
  AZKMS_ERROR_KMS = 13,
  AZKMS_ERROR_CRYPT = 14,
  AZKMS_ERROR_KEY_VAULT = 15,
  AZKMS_ERROR_UNSUPPORTED = 16,
  AZKMS_ERROR_CALLBACK = 17,
  AZKMS_ERROR_CANCELLED = 18,
  AZKMS_ERROR_INTERNAL = 100 /* an unexpected failure (e.g. out of memory) */
} azkms_error_code_t;

typedef struct _azkms_registry_t azkms_registry_t;

/* The version of the library this program runs with, e.g. "0.2.0" (AZKMS_VERSION_STRING in
 * azkms/version.h is the version of the headers it was compiled with). */
AZKMS_EXPORT const char* azkms_version(void);

/* An empty registry: add providers with azkms_registry_add_callback. Never NULL. */
AZKMS_EXPORT azkms_registry_t* azkms_registry_new(void);
/* A registry from a JSON configuration (text or file). NULL with `error` set on failure. */
AZKMS_EXPORT azkms_registry_t* azkms_registry_new_from_json(const char* json, bson_error_t* error);
AZKMS_EXPORT azkms_registry_t* azkms_registry_new_from_file(const char* path, bson_error_t* error);
/* Accepts NULL. Must outlive every mongoc client and opts the registry was installed on. */
AZKMS_EXPORT void azkms_registry_destroy(azkms_registry_t* registry);

/* A token from the application's own code (another SDK, a secret store...). */
typedef struct _azkms_token_t azkms_token_t;
/* Sets the token a callback returns. `expires_on` is absolute, in Unix seconds; a value past
 * 2200-01-01 (INT64_MAX for "never") is read as that date. The token must be an RFC 6750
 * bearer token (letters, digits, - . _ ~ + / and a trailing =) that has not expired yet, or
 * the callback fails with AZKMS_ERROR_CALLBACK. */
AZKMS_EXPORT void azkms_token_set(azkms_token_t* token, const char* access_token,
                                  int64_t expires_on);
/* Called when the cache needs a token for `resource` ("https://vault.azure.net"). Must return
 * within `timeout_ms`. Return true after azkms_token_set, or false with `error` set. */
typedef bool (*azkms_token_callback_fn)(void* userdata, const char* resource, int64_t timeout_ms,
                                        azkms_token_t* token, bson_error_t* error);
/* Adds provider `provider` ("azure" or "azure:<name>") bound to `fn`. */
AZKMS_EXPORT bool azkms_registry_add_callback(azkms_registry_t* registry, const char* provider,
                                              azkms_token_callback_fn fn, void* userdata,
                                              bson_error_t* error);

/* Appends {"<name>": {"accessToken": "..."}} to `out` (initialised by the caller) for exactly
 * the `count` providers named, fetching or reading cached tokens. `out` holds secrets: wipe
 * or destroy it promptly, never print it. */
AZKMS_EXPORT bool azkms_registry_append_credentials(azkms_registry_t* registry,
                                                    const char* const* providers, size_t count,
                                                    bson_t* out, bson_error_t* error);
/* Appends {"azure": {}} to `out`: the on-demand kmsProviders entry to give libmongoc with
 * mongoc_*_opts_set_kms_providers. Fails when the registry has no "azure" provider. */
AZKMS_EXPORT bool azkms_registry_append_on_demand(azkms_registry_t* registry, bson_t* out,
                                                  bson_error_t* error);
/* Drops the cached token of `provider` (the next request fetches a new one). */
AZKMS_EXPORT bool azkms_registry_invalidate(azkms_registry_t* registry, const char* provider,
                                            bson_error_t* error);
/* One line per provider, no secrets. Free with bson_free. */
AZKMS_EXPORT char* azkms_registry_describe(const azkms_registry_t* registry);

/* The KMS credential callback, with the signature of
 * mongoc_kms_credentials_provider_callback_fn; `userdata` is the registry. It appends
 * {"azure": {"accessToken": ...}} to `out` (libmongoc only asks on demand for the base
 * "azure" provider: named providers cannot be on demand, see docs/encryption.md). */
AZKMS_EXPORT bool azkms_kms_credentials_callback(void* userdata, const bson_t* params, bson_t* out,
                                                 bson_error_t* error);
/* The function and userdata that azkms_install_* give libmongoc for this registry. */
AZKMS_EXPORT bool azkms_registry_credentials_callback(
    azkms_registry_t* registry, mongoc_kms_credentials_provider_callback_fn* fn, void** userdata,
    bson_error_t* error);

/* Install the registry as the KMS credential callback. Fails (nothing installed) when the
 * registry has no "azure" provider. */
AZKMS_EXPORT bool azkms_install_auto_encryption(mongoc_auto_encryption_opts_t* opts,
                                                azkms_registry_t* registry, bson_error_t* error);
AZKMS_EXPORT bool azkms_install_client_encryption(mongoc_client_encryption_opts_t* opts,
                                                  azkms_registry_t* registry, bson_error_t* error);

#ifdef __cplusplus
}
#endif

#endif /* AZKMS_H */
