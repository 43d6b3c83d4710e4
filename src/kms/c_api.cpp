// The C API: a thin shell around KmsProviders. No exception crosses it; every failure becomes
// a bson_error_t whose message is an azkms::Error message (secret-free by construction).
#include "azkms/azkms.h"

#include <array>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "azkms/error.hpp"
#include "azkms/kms_providers.hpp"
#include "azkms/version.h"

struct _azkms_registry_t {
  std::unique_ptr<azkms::KmsProviders> providers;
};

struct _azkms_token_t {
  azkms::AccessToken token;
  bool set = false;
};

namespace {

using azkms::Error;
using azkms::ErrorCode;

// Every ErrorCode and its C code. Both sides are ABI (programs compare bson_error_t.code with
// the C codes, and may store either number): an entry is added for a new code, never changed.
struct CodePair {
  ErrorCode code;
  azkms_error_code_t c_code;
};
constexpr std::array<CodePair, 18> kCodePairs{{
    {ErrorCode::kConfiguration, AZKMS_ERROR_CONFIGURATION},
    {ErrorCode::kNoSource, AZKMS_ERROR_NO_SOURCE},
    {ErrorCode::kUnsupportedSelector, AZKMS_ERROR_UNSUPPORTED_SELECTOR},
    {ErrorCode::kTimeout, AZKMS_ERROR_TIMEOUT},
    {ErrorCode::kConnection, AZKMS_ERROR_CONNECTION},
    {ErrorCode::kTls, AZKMS_ERROR_TLS},
    {ErrorCode::kRedirect, AZKMS_ERROR_REDIRECT},
    {ErrorCode::kHttpStatus, AZKMS_ERROR_HTTP_STATUS},
    {ErrorCode::kResponseTooLarge, AZKMS_ERROR_RESPONSE_TOO_LARGE},
    {ErrorCode::kMalformedResponse, AZKMS_ERROR_MALFORMED_RESPONSE},
    {ErrorCode::kIdentityMismatch, AZKMS_ERROR_IDENTITY_MISMATCH},
    {ErrorCode::kArcChallenge, AZKMS_ERROR_ARC_CHALLENGE},
    {ErrorCode::kKms, AZKMS_ERROR_KMS},
    {ErrorCode::kCrypt, AZKMS_ERROR_CRYPT},
    {ErrorCode::kKeyVault, AZKMS_ERROR_KEY_VAULT},
    {ErrorCode::kUnsupported, AZKMS_ERROR_UNSUPPORTED},
    {ErrorCode::kCallback, AZKMS_ERROR_CALLBACK},
    {ErrorCode::kCancelled, AZKMS_ERROR_CANCELLED},
}};

// One C code per ErrorCode and one ErrorCode per C code, with the same number on both sides
// (error.hpp promises it): the pairs are the values 1, 2, 3... in order, without a gap or a
// repeat, so a pair that is renumbered, repeated, or mismatched stops the build here.
constexpr bool code_pairs_match() {
  for (std::size_t i = 0; i < kCodePairs.size(); ++i) {
    const auto value = static_cast<int>(i + 1);
    if (static_cast<int>(kCodePairs[i].code) != value) return false;
    if (static_cast<int>(kCodePairs[i].c_code) != value) return false;
  }
  return true;
}
static_assert(code_pairs_match(),
              "kCodePairs must pair each azkms::ErrorCode with the azkms_error_code_t of the same "
              "value, in order");

constexpr azkms_error_code_t c_code_of(ErrorCode code) noexcept {
  for (const auto& pair : kCodePairs) {
    if (pair.code == code) return pair.c_code;
  }
  return AZKMS_ERROR_INTERNAL;
}

void set_error(bson_error_t* error, std::uint32_t code, const char* message) {
  if (error != nullptr) bson_set_error(error, AZKMS_ERROR_DOMAIN, code, "%s", message);
}

// Runs `body`, turning any exception into `error` and false.
template <typename Body>
bool guarded(bson_error_t* error, Body&& body) noexcept {
  try {
    return body();
  } catch (const Error& e) {
    set_error(error, c_code_of(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    set_error(error, AZKMS_ERROR_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    set_error(error, AZKMS_ERROR_INTERNAL, e.what());
  } catch (...) {
    set_error(error, AZKMS_ERROR_INTERNAL, "unexpected failure");
  }
  return false;
}

azkms::KmsProviders& providers_of(azkms_registry_t* registry) {
  if (registry == nullptr || !registry->providers) {
    throw Error(ErrorCode::kConfiguration, "the azkms registry is NULL");
  }
  return *registry->providers;
}

void require_azure(azkms::KmsProviders& providers) {
  if (!providers.contains(azkms::kAzureProvider)) {
    throw Error(ErrorCode::kConfiguration,
                "libmongoc asks for on-demand credentials only for the provider \"azure\", "
                "which this registry does not have; add it to the configuration");
  }
}

const char* require_text(const char* text, const char* what) {
  if (text == nullptr) throw Error(ErrorCode::kConfiguration, std::string(what) + " is NULL");
  return text;
}

}  // namespace

extern "C" {

const char* azkms_version(void) { return AZKMS_VERSION_STRING; }

azkms_registry_t* azkms_registry_new(void) {
  auto* registry = new _azkms_registry_t;
  registry->providers = std::make_unique<azkms::KmsProviders>();
  return registry;
}

azkms_registry_t* azkms_registry_new_from_json(const char* json, bson_error_t* error) {
  azkms_registry_t* result = nullptr;
  guarded(error, [&] {
    auto providers = azkms::KmsProviders::from_json(require_text(json, "the JSON configuration"));
    result = new _azkms_registry_t{std::make_unique<azkms::KmsProviders>(std::move(providers))};
    return true;
  });
  return result;
}

azkms_registry_t* azkms_registry_new_from_file(const char* path, bson_error_t* error) {
  azkms_registry_t* result = nullptr;
  guarded(error, [&] {
    auto providers =
        azkms::KmsProviders::from_file(require_text(path, "the configuration file path"));
    result = new _azkms_registry_t{std::make_unique<azkms::KmsProviders>(std::move(providers))};
    return true;
  });
  return result;
}

void azkms_registry_destroy(azkms_registry_t* registry) { delete registry; }

void azkms_token_set(azkms_token_t* token, const char* access_token, int64_t expires_on) {
  if (token == nullptr || access_token == nullptr) return;
  token->token.token = azkms::Secret(access_token);
  // Clamped, never converted as it is: INT64_MAX (a caller's "never expires") in nanoseconds
  // overflows, and the wrapped-around expiry made the callback run on every operation.
  token->token.expires_on = azkms::from_unix_seconds_clamped(expires_on);
  token->set = true;
}

bool azkms_registry_add_callback(azkms_registry_t* registry, const char* provider,
                                 azkms_token_callback_fn fn, void* userdata, bson_error_t* error) {
  return guarded(error, [&] {
    auto& providers = providers_of(registry);
    const std::string name = require_text(provider, "the provider name");
    if (fn == nullptr) throw Error(ErrorCode::kConfiguration, "the token callback is NULL");
    providers.add_callback(
        name,
        [fn, userdata, name](const azkms::TokenRequest& request, azkms::Deadline deadline) {
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
              deadline - std::chrono::steady_clock::now());
          _azkms_token_t token;
          bson_error_t callback_error{};
          if (!fn(userdata, request.resource.c_str(), std::max<std::int64_t>(left.count(), 0),
                  &token, &callback_error)) {
            throw Error(ErrorCode::kCallback, "the token callback of provider \"" + name +
                                                  "\" failed: " + callback_error.message);
          }
          if (!token.set || token.token.token.empty()) {
            throw Error(ErrorCode::kCallback, "the token callback of provider \"" + name +
                                                  "\" returned true without azkms_token_set");
          }
          token.token.resource = request.resource;
          return token.token;
        },
        azkms::TokenRequest{}, "C callback");
    return true;
  });
}

bool azkms_registry_append_credentials(azkms_registry_t* registry, const char* const* providers,
                                       size_t count, bson_t* out, bson_error_t* error) {
  return guarded(error, [&] {
    auto& registered = providers_of(registry);
    if (out == nullptr) throw Error(ErrorCode::kConfiguration, "the output document is NULL");
    if (providers == nullptr && count > 0) {
      throw Error(ErrorCode::kConfiguration, "the provider list is NULL");
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < count; ++i) names.emplace_back(require_text(providers[i], "a name"));
    for (const auto& name : names) {
      if (bson_has_field(out, name.c_str())) {
        throw Error(ErrorCode::kConfiguration, "the output document already has \"" + name + "\"");
      }
    }
    const auto document =
        registered.credentials(azkms::Span<std::string>(names),
                               std::chrono::steady_clock::now() + registered.token_timeout());
    if (!bson_concat(out, document.bson().get())) {
      throw Error(ErrorCode::kConfiguration, "cannot append to the output document");
    }
    return true;
  });
}

bool azkms_registry_append_on_demand(azkms_registry_t* registry, bson_t* out, bson_error_t* error) {
  return guarded(error, [&] {
    auto& providers = providers_of(registry);
    require_azure(providers);
    if (out == nullptr) throw Error(ErrorCode::kConfiguration, "the output document is NULL");
    bson_t empty;
    bson_append_document_begin(out, "azure", -1, &empty);
    bson_append_document_end(out, &empty);
    return true;
  });
}

bool azkms_registry_invalidate(azkms_registry_t* registry, const char* provider,
                               bson_error_t* error) {
  return guarded(error, [&] {
    providers_of(registry).invalidate(require_text(provider, "the provider name"));
    return true;
  });
}

char* azkms_registry_describe(const azkms_registry_t* registry) {
  try {
    std::string text;
    if (registry != nullptr && registry->providers) {
      for (const auto& name : registry->providers->names()) {
        text += registry->providers->describe(name) + "\n";
      }
    }
    return bson_strdup(text.c_str());
  } catch (...) {
    return bson_strdup("");
  }
}

bool azkms_kms_credentials_callback(void* userdata, const bson_t* /*params*/, bson_t* out,
                                    bson_error_t* error) {
  return guarded(error, [&] {
    auto& providers = providers_of(static_cast<azkms_registry_t*>(userdata));
    require_azure(providers);
    if (out == nullptr) throw Error(ErrorCode::kConfiguration, "the output document is NULL");
    const std::string azure(azkms::kAzureProvider);
    const auto document =
        providers.credentials(azkms::Span<std::string>(&azure, 1),
                              std::chrono::steady_clock::now() + providers.token_timeout());
    if (!bson_concat(out, document.bson().get())) {
      throw Error(ErrorCode::kConfiguration, "cannot append to the credentials document");
    }
    return true;
  });
}

bool azkms_registry_credentials_callback(azkms_registry_t* registry,
                                         mongoc_kms_credentials_provider_callback_fn* fn,
                                         void** userdata, bson_error_t* error) {
  return guarded(error, [&] {
    require_azure(providers_of(registry));
    if (fn == nullptr || userdata == nullptr) {
      throw Error(ErrorCode::kConfiguration, "fn and userdata must not be NULL");
    }
    *fn = &azkms_kms_credentials_callback;
    *userdata = registry;
    return true;
  });
}

bool azkms_install_auto_encryption(mongoc_auto_encryption_opts_t* opts, azkms_registry_t* registry,
                                   bson_error_t* error) {
  mongoc_kms_credentials_provider_callback_fn fn = nullptr;
  void* userdata = nullptr;
  if (!azkms_registry_credentials_callback(registry, &fn, &userdata, error)) return false;
  if (opts == nullptr) {
    set_error(error, AZKMS_ERROR_CONFIGURATION, "the auto encryption options are NULL");
    return false;
  }
  mongoc_auto_encryption_opts_set_kms_credential_provider_callback(opts, fn, userdata);
  return true;
}

bool azkms_install_client_encryption(mongoc_client_encryption_opts_t* opts,
                                     azkms_registry_t* registry, bson_error_t* error) {
  mongoc_kms_credentials_provider_callback_fn fn = nullptr;
  void* userdata = nullptr;
  if (!azkms_registry_credentials_callback(registry, &fn, &userdata, error)) return false;
  if (opts == nullptr) {
    set_error(error, AZKMS_ERROR_CONFIGURATION, "the client encryption options are NULL");
    return false;
  }
  mongoc_client_encryption_opts_set_kms_credential_provider_callback(opts, fn, userdata);
  return true;
}

}  // extern "C"
