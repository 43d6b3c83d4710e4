// KmsProviders: registration, the JSON configuration (strict, errors naming the field), lazy
// credentials for exactly the providers asked for, named providers, the cache, and the
// documents (BSON, Extended JSON, redacted JSON). End to end against the identity emulator.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "azkms/error.hpp"
#include "azkms/kms_providers.hpp"
#include "emulator.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

using namespace std::chrono_literals;

Deadline soon() { return std::chrono::steady_clock::now() + 10s; }

// A token callback that counts its calls and issues "token-<source>-<n>".
struct CountingCallback {
  std::string prefix;
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  std::chrono::seconds lifetime{3600};

  TokenCallback callback() const {
    return [prefix = prefix, calls = calls, lifetime = lifetime](const TokenRequest& request,
                                                                 Deadline) {
      AccessToken token;
      token.token = Secret(prefix + "-" + std::to_string(++*calls));
      token.resource = request.resource;
      token.expires_on = std::chrono::system_clock::now() + lifetime;
      return token;
    };
  }
};

std::string access_token_of(const BsonDocument& doc, const char* provider) {
  bson_iter_t iter;
  bson_iter_t child;
  if (!bson_iter_init_find(&iter, doc.get(), provider) || !BSON_ITER_HOLDS_DOCUMENT(&iter) ||
      !bson_iter_recurse(&iter, &child) || !bson_iter_find(&child, "accessToken") ||
      !BSON_ITER_HOLDS_UTF8(&child)) {
    return {};
  }
  return bson_iter_utf8(&child, nullptr);
}

std::vector<std::string> keys_of(const BsonDocument& doc) {
  std::vector<std::string> keys;
  bson_iter_t iter;
  bson_iter_init(&iter, doc.get());
  while (bson_iter_next(&iter)) keys.emplace_back(bson_iter_key(&iter));
  return keys;
}

// Expects from_json to fail with kConfiguration and a message containing `needle`.
void expect_config_error(const std::string& json, const std::string& needle,
                         KmsProvidersOptions options = {}) {
  try {
    (void)KmsProviders::from_json(json, std::move(options), "cfg.json");
    ADD_FAILURE() << "accepted: " << json;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << json;
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message \"" << e.what() << "\" lacks \"" << needle << "\"";
  }
}

// ---------------------------------------------------------------------------------------------
// Names

TEST(KmsProviderNamesTest, AzureAndNamedAzureProviders) {
  EXPECT_TRUE(is_azure_provider_name("azure"));
  EXPECT_TRUE(is_azure_provider_name("azure:prod"));
  EXPECT_TRUE(is_azure_provider_name("azure:Tenant_2"));
  EXPECT_FALSE(is_named_provider("azure"));
  EXPECT_TRUE(is_named_provider("azure:prod"));
  for (const char* bad : {"", "aws", "azure:", "azure:a-b", "azure:a b", "Azure", "azure:prod:x",
                          "azure:ü", "gcp:prod"}) {
    EXPECT_FALSE(is_azure_provider_name(bad)) << bad;
  }
}

TEST(KmsProvidersTest, RegistrationChecksNamesAndDuplicates) {
  KmsProviders registry;
  registry.add("azure").add("azure:prod", ProviderConfig{SourceKind::kImds, {}, "https://x.y"});
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"azure", "azure:prod"}));
  EXPECT_TRUE(registry.contains("azure:prod"));
  EXPECT_FALSE(registry.contains("azure:test"));
  EXPECT_THROW(registry.add("azure"), Error);
  EXPECT_THROW(registry.add("aws"), Error);
  EXPECT_THROW(registry.add("azure:x", ProviderConfig{std::nullopt, {}, "http://vault"}), Error);
  EXPECT_THROW(registry.add("azure:y", ProviderConfig{SourceKind::kCustom, {}, "https://v"}),
               Error);
  EXPECT_THROW(registry.add_callback("azure:z", TokenCallback{}), Error);
  EXPECT_THROW(registry.add_source("azure:w", nullptr), Error);
}

// ---------------------------------------------------------------------------------------------
// Laziness and exactness

TEST(KmsProvidersTest, DescribeReportsTheResourceAsSentNotTheScope) {
  KmsProviders registry;
  registry.add("azure:scoped",
               ProviderConfig{SourceKind::kAppService, {}, "https://vault.azure.net/.default"});
  const std::string text = registry.describe("azure:scoped");
  EXPECT_NE(text.find("resource https://vault.azure.net"), std::string::npos) << text;
  EXPECT_EQ(text.find(".default"), std::string::npos) << text;
}

// Workload identity has no system-assigned identity: without a selector it is the app that
// AZURE_CLIENT_ID names, and describe() says so.
TEST(KmsProvidersTest, DescribeNamesWorkloadIdentitysDefaultIdentity) {
  KmsProviders registry;
  registry.add("azure:wi",
               ProviderConfig{SourceKind::kWorkloadIdentity, {}, "https://vault.azure.net"});
  registry.add("azure:app", ProviderConfig{SourceKind::kAppService, {}, "https://vault.azure.net"});
  const std::string text = registry.describe("azure:wi");
  EXPECT_NE(text.find("default (AZURE_CLIENT_ID) identity"), std::string::npos) << text;
  EXPECT_EQ(text.find("system-assigned"), std::string::npos) << text;
  EXPECT_NE(registry.describe("azure:app").find("system-assigned identity"), std::string::npos);
}

TEST(KmsProvidersTest, NothingIsFetchedOrDetectedBeforeItIsAsked) {
  // An App Service source named with no App Service variables: registering must not fail,
  // because nothing is looked at until a token is asked for.
  KmsProvidersOptions options;
  options.environment = std::make_shared<MapEnvironment>();
  KmsProviders registry(options);
  CountingCallback base{"base"};
  registry.add_callback("azure", base.callback());
  registry.add("azure:app", ProviderConfig{SourceKind::kAppService, {}, "https://vault.azure.net"});
  EXPECT_EQ(*base.calls, 0);
  EXPECT_EQ(registry.fetch_count("azure"), 0u);
  EXPECT_NE(registry.describe("azure:app").find("not contacted yet"), std::string::npos);

  try {
    (void)registry.token("azure:app", soon());
    FAIL() << "expected a configuration error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_NE(std::string(e.what()).find("IDENTITY_ENDPOINT"), std::string::npos) << e.what();
  }
  EXPECT_EQ(*base.calls, 0);
}

TEST(KmsProvidersTest, TheDocumentHoldsExactlyTheProvidersAskedFor) {
  KmsProviders registry;
  CountingCallback base{"base"};
  CountingCallback prod{"prod"};
  CountingCallback test{"test"};
  registry.add_callback("azure", base.callback());
  registry.add_callback("azure:prod", prod.callback());
  registry.add_callback("azure:test", test.callback());

  const auto only_prod = registry.credentials({"azure:prod"}, soon());
  EXPECT_EQ(keys_of(only_prod.bson()), std::vector<std::string>{"azure:prod"});
  EXPECT_EQ(access_token_of(only_prod.bson(), "azure:prod"), "prod-1");
  EXPECT_EQ(*base.calls, 0);
  EXPECT_EQ(*test.calls, 0);

  const auto two = registry.credentials({"azure:test", "azure"}, soon());
  EXPECT_EQ(keys_of(two.bson()), (std::vector<std::string>{"azure:test", "azure"}));
  EXPECT_EQ(access_token_of(two.bson(), "azure"), "base-1");
  EXPECT_EQ(access_token_of(two.bson(), "azure:test"), "test-1");
  ASSERT_EQ(two.credentials().size(), 2u);
  EXPECT_EQ(two.credentials()[0].provider, "azure:test");
  EXPECT_EQ(two.credentials()[0].source, "custom callback");

  // Each provider document holds accessToken and nothing else, as libmongocrypt requires.
  bson_iter_t iter;
  bson_iter_t child;
  ASSERT_TRUE(bson_iter_init_find(&iter, two.bson().get(), "azure"));
  ASSERT_TRUE(bson_iter_recurse(&iter, &child));
  int fields = 0;
  while (bson_iter_next(&child)) ++fields;
  EXPECT_EQ(fields, 1);
}

TEST(KmsProvidersTest, AnUnknownOrRepeatedNameFailsBeforeAnyFetch) {
  KmsProviders registry;
  CountingCallback base{"base"};
  registry.add_callback("azure", base.callback());
  try {
    (void)registry.credentials({"azure", "azure:missing"}, soon());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_NE(std::string(e.what()).find("azure:missing"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("registered: azure"), std::string::npos);
  }
  EXPECT_THROW((void)registry.credentials({"azure", "azure"}, soon()), Error);
  EXPECT_EQ(*base.calls, 0);
}

TEST(KmsProvidersTest, OnDemandDocumentHasEmptyProviders) {
  KmsProviders registry;
  registry.add("azure").add("azure:prod");
  const std::vector<std::string> names = {"azure", "azure:prod"};
  EXPECT_EQ(registry.on_demand_document(names),
            BsonDocument::from_json(R"({"azure": {}, "azure:prod": {}})"));
  const std::vector<std::string> unknown = {"azure:nope"};
  EXPECT_THROW((void)registry.on_demand_document(unknown), Error);
}

// ---------------------------------------------------------------------------------------------
// Cache and invalidation

TEST(KmsProvidersTest, TokensComeFromTheCacheUntilInvalidated) {
  KmsProviders registry;
  CountingCallback base{"base"};
  registry.add_callback("azure", base.callback());
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(access_token_of(registry.credentials({"azure"}, soon()).bson(), "azure"), "base-1");
  }
  EXPECT_EQ(registry.fetch_count("azure"), 1u);
  registry.invalidate("azure");
  EXPECT_EQ(registry.token("azure", soon()).token.reveal(), "base-2");
  EXPECT_EQ(registry.fetch_count("azure"), 2u);
}

TEST(KmsProvidersTest, WithoutTheCacheEveryCallFetches) {
  KmsProvidersOptions options;
  options.cache = false;
  KmsProviders registry(options);
  CountingCallback base{"base"};
  registry.add_callback("azure", base.callback());
  (void)registry.token("azure", soon());
  (void)registry.token("azure", soon());
  EXPECT_EQ(registry.fetch_count("azure"), 2u);
}

TEST(KmsProvidersTest, ACallbackFailureIsACallbackErrorWithoutTheDocument) {
  KmsProviders registry;
  registry.add_callback("azure", [](const TokenRequest&, Deadline) -> AccessToken {
    throw std::runtime_error("the other SDK is unhappy");
  });
  try {
    (void)registry.credentials({"azure"}, soon());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCallback);
  }
}

TEST(KmsProvidersTest, TheCallbackReceivesTheConfiguredRequest) {
  KmsProviders registry;
  TokenRequest seen;
  registry.add_callback(
      "azure:prod",
      [&seen](const TokenRequest& request, Deadline) {
        seen = request;
        AccessToken token;
        token.token = Secret("t");
        token.expires_on = std::chrono::system_clock::now() + 1h;
        return token;
      },
      TokenRequest{"https://vault.azure.cn", IdentitySelector::client_id("abc")});
  (void)registry.token("azure:prod", soon());
  EXPECT_EQ(seen.resource, "https://vault.azure.cn");
  EXPECT_EQ(seen.identity, IdentitySelector::client_id("abc"));
}

// ---------------------------------------------------------------------------------------------
// Documents and secrets

TEST(KmsProvidersDocumentTest, RedactedJsonHidesTokensAndExtendedJsonIsASecret) {
  KmsProviders registry;
  CountingCallback base{"sekrit"};
  registry.add_callback("azure", base.callback());
  const auto document = registry.credentials({"azure"}, soon());
  const std::string redacted = document.redacted_json();
  EXPECT_EQ(redacted.find("sekrit"), std::string::npos);
  EXPECT_NE(redacted.find("[redacted]"), std::string::npos);
  EXPECT_NE(redacted.find("\"azure\""), std::string::npos);

  const Secret json = document.extended_json();
  EXPECT_NE(json.reveal().find("sekrit-1"), std::string::npos);
  std::ostringstream printed;
  printed << json;
  EXPECT_EQ(printed.str().find("sekrit"), std::string::npos);
}

TEST(KmsProvidersDocumentTest, DescribeNamesTheSourceButNoSecret) {
  KmsProviders registry;
  CountingCallback base{"sekrit"};
  registry.add_callback("azure", base.callback(),
                        TokenRequest{"https://vault.azure.net", IdentitySelector::client_id("c1")},
                        "my SDK");
  (void)registry.token("azure", soon());
  const std::string text = registry.describe("azure");
  EXPECT_NE(text.find("my SDK"), std::string::npos) << text;
  EXPECT_NE(text.find("c1"), std::string::npos) << text;
  EXPECT_EQ(text.find("sekrit"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// JSON configuration

TEST(KmsProvidersConfigTest, AFullConfigurationLoads) {
  KmsProvidersOptions options;
  CountingCallback sdk{"sdk"};
  options.callbacks["my-sdk"] = sdk.callback();
  options.environment = std::make_shared<MapEnvironment>();
  auto registry = KmsProviders::from_json(R"({
    "version": 1,
    "tokenTimeoutMs": 2500,
    "providers": {
      "azure": {"source": "auto"},
      "azure:prod": {"source": "app-service", "clientId": "11111111-2222-3333-4444-555555555555"},
      "azure:batch": {"source": "imds", "resourceId": "/subscriptions/x/rg/y"},
      "azure:legacy": {"source": "app-service-2017", "objectId": "o-1",
                       "resource": "https://vault.azure.cn"},
      "azure:sdk": {"source": "callback", "callback": "my-sdk"},
      "azure:plain": {}
    }})",
                                          options);
  EXPECT_EQ(registry.names(), (std::vector<std::string>{"azure", "azure:batch", "azure:legacy",
                                                        "azure:plain", "azure:prod", "azure:sdk"}));
  EXPECT_EQ(registry.token_timeout(), 2500ms);
  EXPECT_NE(registry.describe("azure:prod").find("client id 11111111"), std::string::npos);
  EXPECT_NE(registry.describe("azure:legacy").find("https://vault.azure.cn"), std::string::npos);
  EXPECT_NE(registry.describe("azure").find("auto-detected"), std::string::npos);
  EXPECT_EQ(registry.token("azure:sdk", soon()).token.reveal(), "sdk-1");
}

TEST(KmsProvidersConfigTest, EveryMistakeNamesItsField) {
  expect_config_error("{", "cfg.json is not valid JSON");
  expect_config_error("[]", "must be a JSON object");
  expect_config_error(R"({"providers": {"azure": {}}, "extra": 1})", "extra is not a known field");
  expect_config_error(R"({"version": 2, "providers": {"azure": {}}})", "version");
  expect_config_error(R"({"version": "1", "providers": {"azure": {}}})", "version");
  expect_config_error(R"({"tokenTimeoutMs": 0, "providers": {"azure": {}}})", "tokenTimeoutMs");
  expect_config_error(R"({"tokenTimeoutMs": 1.5, "providers": {"azure": {}}})", "tokenTimeoutMs");
  expect_config_error(R"({})", "providers is required");
  expect_config_error(R"({"providers": {}})", "providers must be a non-empty object");
  expect_config_error(R"({"providers": []})", "providers must be a non-empty object");
  expect_config_error(R"({"providers": {"aws": {}}})", "providers.aws");
  expect_config_error(R"({"providers": {"azure:a-b": {}}})", "providers.azure:a-b");
  expect_config_error(R"({"providers": {"azure": 1}})", "providers.azure must be an object");
  expect_config_error(R"({"providers": {"azure": {"clientID": "x"}}})",
                      "providers.azure.clientID is not a known field");
  expect_config_error(R"({"providers": {"azure": {"source": 1}}})",
                      "providers.azure.source must be a string");
  expect_config_error(R"({"providers": {"azure:p": {"source": "app_service"}}})",
                      "providers.azure:p.source \"app_service\" is not one of");
  expect_config_error(R"({"providers": {"azure": {"source": "custom"}}})",
                      "providers.azure.source");
  expect_config_error(R"({"providers": {"azure": {"clientId": ""}}})",
                      "providers.azure.clientId must not be empty");
  expect_config_error(R"({"providers": {"azure": {"clientId": "a", "objectId": "b"}}})",
                      "mutually exclusive");
  expect_config_error(R"({"providers": {"azure": {"resource": "http://vault.azure.net"}}})",
                      "providers.azure.resource");
  expect_config_error(R"({"providers": {"azure": {"source": "callback"}}})",
                      "providers.azure.callback is required");
  expect_config_error(R"({"providers": {"azure": {"source": "callback", "callback": "nope"}}})",
                      "providers.azure.callback names \"nope\"");
  expect_config_error(R"({"providers": {"azure": {"source": "imds", "callback": "x"}}})",
                      "providers.azure.callback is only allowed");
}

TEST(KmsProvidersConfigTest, ErrorsNeverQuoteValuesFromABrokenFile) {
  // A half-written file may hold a client secret someone pasted by mistake: the parse error
  // must not echo the text around the mistake.
  expect_config_error(R"({"providers": {"azure": {"clientSecret": "hunter2", )", "byte");
  try {
    (void)KmsProviders::from_json(R"({"providers": {"azure": {"x": "hunter2", )");
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos);
  }
}

TEST(KmsProvidersConfigTest, LoadsFromAFile) {
  const auto dir = testing::make_temp_dir("azkms-config");
  const auto path = dir / "kms.json";
  {
    std::ofstream out(path);
    out << R"({"providers": {"azure": {"source": "imds", "clientId": "c"}}})";
  }
  auto registry = KmsProviders::from_file(path);
  EXPECT_EQ(registry.names(), std::vector<std::string>{"azure"});
  try {
    (void)KmsProviders::from_file(dir / "missing.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_NE(std::string(e.what()).find("missing.json"), std::string::npos);
  }
  {
    std::ofstream out(path);
    out << R"({"providers": {"azure": {"source": "nope"}}})";
  }
  try {
    (void)KmsProviders::from_file(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// End to end against the identity emulator

class KmsProvidersEmulatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    emulator_ = new emulator::Emulator();
    emulator_->start();
  }
  static void TearDownTestSuite() {
    delete emulator_;
    emulator_ = nullptr;
  }
  static std::shared_ptr<MapEnvironment> environment_for(emulator::Endpoint endpoint) {
    auto env = std::make_shared<MapEnvironment>();
    for (const auto& [name, value] : emulator_->client_environment(endpoint)) env->set(name, value);
    return env;
  }
  static emulator::Emulator* emulator_;
};
emulator::Emulator* KmsProvidersEmulatorTest::emulator_ = nullptr;

TEST_F(KmsProvidersEmulatorTest, DetectsAppServiceAndIssuesAKeyVaultToken) {
  KmsProvidersOptions options;
  options.environment = environment_for(emulator::Endpoint::kAppService);
  auto registry = KmsProviders::from_json(R"({"providers": {"azure": {}}})", options);
  const auto document = registry.credentials({"azure"}, soon());
  const std::string token = access_token_of(document.bson(), "azure");
  ASSERT_FALSE(token.empty());
  const auto issued = emulator_->ledger().lookup(token);
  ASSERT_TRUE(issued.has_value());
  EXPECT_EQ(issued->resource, "https://vault.azure.net");
  EXPECT_EQ(issued->client_id, emulator::default_identities()[0].client_id);
  EXPECT_EQ(document.credentials()[0].source, "App Service");
  EXPECT_NE(registry.describe("azure").find("App Service"), std::string::npos);
}

TEST_F(KmsProvidersEmulatorTest, NamedProvidersCarryTheirOwnIdentities) {
  const auto ids = emulator::default_identities();
  KmsProvidersOptions options;
  options.environment = environment_for(emulator::Endpoint::kAppService);
  auto registry = KmsProviders::from_json(R"({"providers": {
      "azure": {"source": "app-service"},
      "azure:app": {"source": "app-service", "clientId": ")" +
                                              ids[1].client_id + R"("},
      "azure:batch": {"source": "app-service", "resourceId": ")" +
                                              ids[2].resource_id + R"("}}})",
                                          options);
  const auto document = registry.credentials({"azure", "azure:app", "azure:batch"}, soon());
  const auto owner = [&](const char* provider) {
    const auto issued = emulator_->ledger().lookup(access_token_of(document.bson(), provider));
    return issued ? issued->client_id : std::string("(unknown token)");
  };
  EXPECT_EQ(owner("azure"), ids[0].client_id);
  EXPECT_EQ(owner("azure:app"), ids[1].client_id);
  EXPECT_EQ(owner("azure:batch"), ids[2].client_id);
}

TEST_F(KmsProvidersEmulatorTest, OneUpstreamRequestServesManyDocuments) {
  KmsProvidersOptions options;
  options.environment = environment_for(emulator::Endpoint::kImds);
  KmsProviders registry(options);
  registry.add("azure", ProviderConfig{SourceKind::kImds, {}, "https://vault.azure.net"});
  const auto before = emulator_->requests_served(emulator::Endpoint::kImds);
  for (int i = 0; i < 100; ++i) (void)registry.credentials({"azure"}, soon());
  EXPECT_EQ(registry.fetch_count("azure"), 1u);
  EXPECT_EQ(emulator_->requests_served(emulator::Endpoint::kImds) - before, 1u);
}

TEST_F(KmsProvidersEmulatorTest, AnEndpointErrorReachesTheCallerTyped) {
  KmsProvidersOptions options;
  options.environment = environment_for(emulator::Endpoint::kAppService);
  options.context.attempt_timeout = 2s;
  KmsProviders registry(options);
  registry.add("azure", ProviderConfig{SourceKind::kAppService, {}, "https://vault.azure.net"});
  emulator_->inject(emulator::Endpoint::kAppService, "bad-json", 1);
  try {
    (void)registry.credentials({"azure"}, soon());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMalformedResponse) << e.what();
  }
  emulator_->clear_faults();
}

}  // namespace
}  // namespace azkms
