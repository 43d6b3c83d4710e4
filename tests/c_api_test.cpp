// The C API: registries from JSON, callbacks from C, documents, errors through bson_error_t,
// and the KMS credential callback invoked exactly as libmongoc invokes it (the installed
// function pointer and userdata, an empty params document, an initialised out document).
// Then libmongoc itself: a real mongoc_client_encryption_t creating a data key through the
// installed callback against the Key Vault emulator (no MongoDB server: it stops at the key
// vault insert, after Key Vault has wrapped the key).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>

#include "azkms/azkms.h"
#include "emulator.hpp"
#include "key_vault.hpp"
#include "test_tls.hpp"

namespace {

using namespace std::chrono_literals;

struct TokenState {
  std::atomic<int> calls{0};
  bool fail = false;
  std::string last_resource;
  std::int64_t last_timeout_ms = -1;
};

bool issue_token(void* userdata, const char* resource, int64_t timeout_ms, azkms_token_t* token,
                 bson_error_t* error) {
  auto* state = static_cast<TokenState*>(userdata);
  const int n = ++state->calls;
  state->last_resource = resource;
  state->last_timeout_ms = timeout_ms;
  if (state->fail) {
    bson_set_error(error, 1, 2, "the secret store is locked");
    return false;
  }
  const std::string value = "c-token-" + std::to_string(n);
  const auto expires = std::chrono::duration_cast<std::chrono::seconds>(
      (std::chrono::system_clock::now() + 1h).time_since_epoch());
  azkms_token_set(token, value.c_str(), expires.count());
  return true;
}

bool forget_to_set(void*, const char*, int64_t, azkms_token_t*, bson_error_t*) { return true; }

std::string access_token(const bson_t* doc, const char* provider) {
  bson_iter_t iter;
  bson_iter_t child;
  if (!bson_iter_init_find(&iter, doc, provider) || !bson_iter_recurse(&iter, &child) ||
      !bson_iter_find(&child, "accessToken")) {
    return {};
  }
  return bson_iter_utf8(&child, nullptr);
}

struct Registry {
  azkms_registry_t* ptr;
  explicit Registry(azkms_registry_t* p) : ptr(p) {}
  ~Registry() { azkms_registry_destroy(ptr); }
};

TEST(CApiTest, ARegistryFromJsonDescribesItsProviders) {
  bson_error_t error;
  Registry registry(azkms_registry_new_from_json(
      R"({"providers": {"azure": {"source": "imds", "clientId": "abc"}, "azure:x": {}}})", &error));
  ASSERT_NE(registry.ptr, nullptr) << error.message;
  char* text = azkms_registry_describe(registry.ptr);
  const std::string description = text;
  bson_free(text);
  EXPECT_NE(description.find("azure: IMDS"), std::string::npos) << description;
  EXPECT_NE(description.find("client id abc"), std::string::npos) << description;
  EXPECT_NE(description.find("azure:x: auto-detected"), std::string::npos) << description;
}

TEST(CApiTest, ConfigurationErrorsComeThroughBsonError) {
  bson_error_t error;
  EXPECT_EQ(azkms_registry_new_from_json(R"({"providers": {"azure": {"sorce": "imds"}}})", &error),
            nullptr);
  EXPECT_EQ(error.domain, AZKMS_ERROR_DOMAIN);
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CONFIGURATION));
  EXPECT_NE(std::string(error.message).find("providers.azure.sorce"), std::string::npos)
      << error.message;

  EXPECT_EQ(azkms_registry_new_from_file("/nonexistent/kms.json", &error), nullptr);
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CONFIGURATION));
  EXPECT_EQ(azkms_registry_new_from_json(nullptr, &error), nullptr);
  EXPECT_EQ(azkms_registry_new_from_json("{", nullptr), nullptr);  // NULL error is allowed
  azkms_registry_destroy(nullptr);
}

TEST(CApiTest, ARegistryFromAFile) {
  const auto dir = azkms::testing::make_temp_dir("azkms-capi");
  const auto path = (dir / "kms.json").string();
  {
    std::ofstream out(path);
    out << R"({"providers": {"azure": {"source": "app-service"}}})";
  }
  bson_error_t error;
  Registry registry(azkms_registry_new_from_file(path.c_str(), &error));
  EXPECT_NE(registry.ptr, nullptr) << error.message;
  std::filesystem::remove_all(dir);
}

TEST(CApiTest, TheInstalledCallbackFillsAzureExactlyAsLibmongocAsks) {
  TokenState state;
  Registry registry(azkms_registry_new());
  bson_error_t error;
  ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", issue_token, &state, &error))
      << error.message;
  ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure:prod", issue_token, &state, &error));

  mongoc_kms_credentials_provider_callback_fn fn = nullptr;
  void* userdata = nullptr;
  ASSERT_TRUE(azkms_registry_credentials_callback(registry.ptr, &fn, &userdata, &error));
  EXPECT_EQ(fn, &azkms_kms_credentials_callback);
  EXPECT_EQ(userdata, registry.ptr);
  EXPECT_EQ(state.calls.load(), 0);  // installing fetches nothing

  // What _mongoc_crypt does: an empty params document and an initialised, empty out.
  bson_t params = BSON_INITIALIZER;
  bson_t out = BSON_INITIALIZER;
  ASSERT_TRUE(fn(userdata, &params, &out, &error)) << error.message;
  EXPECT_EQ(access_token(&out, "azure"), "c-token-1");
  EXPECT_EQ(bson_count_keys(&out), 1u);  // named providers are never filled on demand
  bson_iter_t iter;
  bson_iter_t child;
  ASSERT_TRUE(bson_iter_init_find(&iter, &out, "azure") && bson_iter_recurse(&iter, &child));
  int fields = 0;
  while (bson_iter_next(&child)) ++fields;
  EXPECT_EQ(fields, 1);  // {"accessToken": ...} only, as libmongocrypt requires
  EXPECT_EQ(state.last_resource, "https://vault.azure.net");
  EXPECT_GT(state.last_timeout_ms, 0);
  bson_destroy(&out);

  // Again: from the cache.
  bson_t again = BSON_INITIALIZER;
  ASSERT_TRUE(fn(userdata, &params, &again, &error));
  EXPECT_EQ(access_token(&again, "azure"), "c-token-1");
  EXPECT_EQ(state.calls.load(), 1);
  bson_destroy(&again);

  // After Key Vault refused it.
  ASSERT_TRUE(azkms_registry_invalidate(registry.ptr, "azure", &error));
  bson_t fresh = BSON_INITIALIZER;
  ASSERT_TRUE(fn(userdata, &params, &fresh, &error));
  EXPECT_EQ(access_token(&fresh, "azure"), "c-token-2");
  bson_destroy(&fresh);
  bson_destroy(&params);
}

TEST(CApiTest, ACallbackFailureSetsTheErrorWithoutSecrets) {
  TokenState state;
  Registry registry(azkms_registry_new());
  bson_error_t error;
  ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", issue_token, &state, &error));
  bson_t params = BSON_INITIALIZER;
  bson_t out = BSON_INITIALIZER;
  ASSERT_TRUE(azkms_kms_credentials_callback(registry.ptr, &params, &out, &error));
  const std::string token = access_token(&out, "azure");
  bson_destroy(&out);

  state.fail = true;
  ASSERT_TRUE(azkms_registry_invalidate(registry.ptr, "azure", &error));
  bson_t failed = BSON_INITIALIZER;
  EXPECT_FALSE(azkms_kms_credentials_callback(registry.ptr, &params, &failed, &error));
  EXPECT_EQ(error.domain, AZKMS_ERROR_DOMAIN);
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CALLBACK));
  EXPECT_NE(std::string(error.message).find("the secret store is locked"), std::string::npos)
      << error.message;
  EXPECT_EQ(std::string(error.message).find(token), std::string::npos);
  EXPECT_TRUE(bson_empty(&failed));
  bson_destroy(&failed);
  bson_destroy(&params);
}

TEST(CApiTest, ACallbackThatSetsNoTokenIsAnError) {
  Registry registry(azkms_registry_new());
  bson_error_t error;
  ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", forget_to_set, nullptr, &error));
  bson_t params = BSON_INITIALIZER;
  bson_t out = BSON_INITIALIZER;
  EXPECT_FALSE(azkms_kms_credentials_callback(registry.ptr, &params, &out, &error));
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CALLBACK));
  bson_destroy(&out);
  bson_destroy(&params);
}

// A callback that sets exactly what `value` and `expires_on` say, counting its calls.
struct FixedToken {
  std::string value;
  std::int64_t expires_on = 0;
  std::atomic<int> calls{0};
};

bool issue_fixed(void* userdata, const char*, int64_t, azkms_token_t* token, bson_error_t*) {
  auto* fixed = static_cast<FixedToken*>(userdata);
  ++fixed->calls;
  azkms_token_set(token, fixed->value.c_str(), fixed->expires_on);
  return true;
}

// Asks for the "azure" credentials as libmongoc would; the error message when it fails.
std::optional<std::string> credentials_error(azkms_registry_t* registry) {
  bson_t params = BSON_INITIALIZER;
  bson_t out = BSON_INITIALIZER;
  bson_error_t error{};
  const bool ok = azkms_kms_credentials_callback(registry, &params, &out, &error);
  bson_destroy(&out);
  bson_destroy(&params);
  if (ok) return std::nullopt;
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CALLBACK)) << error.message;
  return std::string(error.message);
}

TEST(CApiTest, AnExpiryPastTwentyTwoSixtyTwoIsCachedNotRefetchedEveryTime) {
  // INT64_MAX seconds once overflowed into an expiry in the past: the callback then ran on
  // every operation.
  for (std::int64_t far : {std::numeric_limits<std::int64_t>::max(), std::int64_t{9'300'000'000},
                           std::int64_t{100'000'000'000}}) {
    FixedToken fixed{"c-token-forever", far};
    Registry registry(azkms_registry_new());
    bson_error_t error;
    ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", issue_fixed, &fixed, &error));
    for (int i = 0; i < 3; ++i) {
      const auto failure = credentials_error(registry.ptr);
      EXPECT_FALSE(failure.has_value()) << failure.value_or("");
    }
    EXPECT_EQ(fixed.calls.load(), 1) << far;
  }
}

TEST(CApiTest, ATokenThatWouldForgeAHeaderIsRefused) {
  for (const char* bad : {"c-token\r\nX-Injected: yes", "c-token\n", "c token", "c-token\t",
                          "c-token\"", "c-tok=en", "c-token\x7f", "c-t\xc3\xa9oken"}) {
    const auto expires = std::chrono::duration_cast<std::chrono::seconds>(
        (std::chrono::system_clock::now() + 1h).time_since_epoch());
    FixedToken fixed{bad, expires.count()};
    Registry registry(azkms_registry_new());
    bson_error_t error;
    ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", issue_fixed, &fixed, &error));
    const auto failure = credentials_error(registry.ptr);
    ASSERT_TRUE(failure.has_value()) << "accepted " << bad;
    EXPECT_NE(failure->find("RFC 6750"), std::string::npos) << *failure;
    EXPECT_EQ(failure->find("c-tok"), std::string::npos) << *failure;
    EXPECT_EQ(failure->find("X-Injected"), std::string::npos) << *failure;
  }
}

TEST(CApiTest, ATokenAlreadyExpiredIsRefusedNamingTheClock) {
  for (std::int64_t past : {std::int64_t{1}, std::int64_t{1'500'000'000}, std::int64_t{-1},
                            std::numeric_limits<std::int64_t>::min()}) {
    FixedToken fixed{"c-token-stale", past};
    Registry registry(azkms_registry_new());
    bson_error_t error;
    ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", issue_fixed, &fixed, &error));
    const auto failure = credentials_error(registry.ptr);
    ASSERT_TRUE(failure.has_value()) << "accepted an expiry of " << past;
    EXPECT_EQ(failure->find("c-token-stale"), std::string::npos) << *failure;
    if (past == 1'500'000'000) {
      EXPECT_NE(failure->find("already expired"), std::string::npos) << *failure;
      EXPECT_NE(failure->find("2017-07-14T02:40:00Z"), std::string::npos) << *failure;
      EXPECT_NE(failure->find("clock"), std::string::npos) << *failure;
    }
  }
}

TEST(CApiTest, InstallingNeedsTheAzureProvider) {
  TokenState state;
  Registry registry(azkms_registry_new());
  bson_error_t error;
  ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure:prod", issue_token, &state, &error));
  mongoc_auto_encryption_opts_t* auto_opts = mongoc_auto_encryption_opts_new();
  EXPECT_FALSE(azkms_install_auto_encryption(auto_opts, registry.ptr, &error));
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CONFIGURATION));
  EXPECT_NE(std::string(error.message).find("\"azure\""), std::string::npos);
  mongoc_auto_encryption_opts_destroy(auto_opts);

  bson_t on_demand = BSON_INITIALIZER;
  EXPECT_FALSE(azkms_registry_append_on_demand(registry.ptr, &on_demand, &error));
  bson_destroy(&on_demand);
  // A NULL userdata (registry) is an error, not a crash.
  bson_t params = BSON_INITIALIZER;
  bson_t out = BSON_INITIALIZER;
  EXPECT_FALSE(azkms_kms_credentials_callback(nullptr, &params, &out, &error));
  bson_destroy(&out);
  bson_destroy(&params);
}

TEST(CApiTest, InstallsOnBothOptionTypes) {
  TokenState state;
  Registry registry(azkms_registry_new());
  bson_error_t error;
  ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, "azure", issue_token, &state, &error));
  mongoc_auto_encryption_opts_t* auto_opts = mongoc_auto_encryption_opts_new();
  EXPECT_TRUE(azkms_install_auto_encryption(auto_opts, registry.ptr, &error)) << error.message;
  mongoc_auto_encryption_opts_destroy(auto_opts);
  mongoc_client_encryption_opts_t* client_opts = mongoc_client_encryption_opts_new();
  EXPECT_TRUE(azkms_install_client_encryption(client_opts, registry.ptr, &error));
  mongoc_client_encryption_opts_destroy(client_opts);
  EXPECT_FALSE(azkms_install_client_encryption(nullptr, registry.ptr, &error));
  EXPECT_EQ(state.calls.load(), 0);

  bson_t on_demand = BSON_INITIALIZER;
  ASSERT_TRUE(azkms_registry_append_on_demand(registry.ptr, &on_demand, &error));
  bson_t* expected = BCON_NEW("azure", "{", "}");
  EXPECT_TRUE(bson_equal(&on_demand, expected));
  bson_destroy(expected);
  bson_destroy(&on_demand);
}

TEST(CApiTest, AppendsCredentialsForExactlyTheNamedProviders) {
  TokenState state;
  Registry registry(azkms_registry_new());
  bson_error_t error;
  for (const char* name : {"azure", "azure:prod", "azure:test"}) {
    ASSERT_TRUE(azkms_registry_add_callback(registry.ptr, name, issue_token, &state, &error));
  }
  const char* names[] = {"azure:prod", "azure:test"};
  bson_t out = BSON_INITIALIZER;
  ASSERT_TRUE(azkms_registry_append_credentials(registry.ptr, names, 2, &out, &error))
      << error.message;
  EXPECT_EQ(bson_count_keys(&out), 2u);
  EXPECT_FALSE(access_token(&out, "azure:prod").empty());
  EXPECT_FALSE(bson_has_field(&out, "azure"));
  EXPECT_EQ(state.calls.load(), 2);
  // Appending a provider already in the document is refused.
  EXPECT_FALSE(azkms_registry_append_credentials(registry.ptr, names, 1, &out, &error));
  bson_destroy(&out);

  const char* unknown[] = {"azure:nope"};
  bson_t none = BSON_INITIALIZER;
  EXPECT_FALSE(azkms_registry_append_credentials(registry.ptr, unknown, 1, &none, &error));
  EXPECT_EQ(error.code, static_cast<std::uint32_t>(AZKMS_ERROR_CONFIGURATION));
  bson_destroy(&none);
}

// ---------------------------------------------------------------------------------------------
// libmongoc itself calling the installed callback.

TEST(CApiLibmongocTest, ClientEncryptionGetsItsAzureTokenThroughTheCallback) {
  mongoc_init();
  azkms::emulator::Emulator identity;
  identity.start();
  azkms::emulator::KeyVaultOptions vault_options;
  vault_options.keys = {"mongo-key"};
  azkms::emulator::KeyVaultServer vault(identity.ledger(), vault_options);
  vault.start();

  TokenState state;
  Registry registry(azkms_registry_new());
  bson_error_t error;
  // A C callback that hands out a real token from the emulator's ledger, as another SDK would.
  struct LedgerIssuer {
    azkms::emulator::TokenLedger* ledger;
    std::atomic<int> calls{0};
  } issuer{&identity.ledger()};
  ASSERT_TRUE(azkms_registry_add_callback(
      registry.ptr, "azure",
      [](void* userdata, const char* resource, int64_t, azkms_token_t* token, bson_error_t*) {
        auto* self = static_cast<LedgerIssuer*>(userdata);
        ++self->calls;
        const std::string value = self->ledger->issue(
            azkms::emulator::default_identities()[0].client_id, resource, std::chrono::hours(1));
        const auto expires = std::chrono::duration_cast<std::chrono::seconds>(
            (std::chrono::system_clock::now() + std::chrono::hours(1)).time_since_epoch());
        azkms_token_set(token, value.c_str(), expires.count());
        return true;
      },
      &issuer, &error));

  // No MongoDB server exists here: a loopback port nobody listens on, short selection.
  mongoc_client_t* key_vault_client =
      mongoc_client_new("mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300&connectTimeoutMS=300");
  ASSERT_NE(key_vault_client, nullptr);
  mongoc_client_encryption_opts_t* opts = mongoc_client_encryption_opts_new();
  mongoc_client_encryption_opts_set_keyvault_client(opts, key_vault_client);
  mongoc_client_encryption_opts_set_keyvault_namespace(opts, "encryption", "__keyVault");
  bson_t kms_providers = BSON_INITIALIZER;
  ASSERT_TRUE(azkms_registry_append_on_demand(registry.ptr, &kms_providers, &error));
  mongoc_client_encryption_opts_set_kms_providers(opts, &kms_providers);
  bson_t* tls = BCON_NEW("azure", "{", "tlsCAFile", BCON_UTF8(vault.ca_file().c_str()), "}");
  mongoc_client_encryption_opts_set_tls_opts(opts, tls);
  ASSERT_TRUE(azkms_install_client_encryption(opts, registry.ptr, &error)) << error.message;

  mongoc_client_encryption_t* encryption = mongoc_client_encryption_new(opts, &error);
  ASSERT_NE(encryption, nullptr) << error.message;
  EXPECT_EQ(issuer.calls.load(), 0);  // nothing asked yet

  bson_t* master_key = BCON_NEW("keyVaultEndpoint", BCON_UTF8(vault.endpoint().c_str()), "keyName",
                                BCON_UTF8("mongo-key"));
  mongoc_client_encryption_datakey_opts_t* datakey_opts =
      mongoc_client_encryption_datakey_opts_new();
  mongoc_client_encryption_datakey_opts_set_masterkey(datakey_opts, master_key);
  bson_value_t key_id;
  const auto wraps = vault.wrap_count();
  const bool created =
      mongoc_client_encryption_create_datakey(encryption, "azure", datakey_opts, &key_id, &error);
  // The callback ran, Key Vault accepted its token and wrapped the key; only the insert into
  // the key vault collection can fail, for want of a server.
  EXPECT_EQ(issuer.calls.load(), 1);
  EXPECT_EQ(vault.wrap_count() - wraps, 1u);
  EXPECT_EQ(vault.unauthorized_count(), 0u);
  EXPECT_FALSE(created);
  EXPECT_EQ(error.domain, static_cast<std::uint32_t>(MONGOC_ERROR_SERVER_SELECTION))
      << error.message;
  if (created) bson_value_destroy(&key_id);

  mongoc_client_encryption_datakey_opts_destroy(datakey_opts);
  bson_destroy(master_key);
  mongoc_client_encryption_destroy(encryption);
  mongoc_client_encryption_opts_destroy(opts);
  bson_destroy(tls);
  bson_destroy(&kms_providers);
  mongoc_client_destroy(key_vault_client);
}

}  // namespace
