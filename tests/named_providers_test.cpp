// Named Azure KMS providers ("azure:prod", "azure:analytics") with on-demand credentials, end to
// end: the identity emulator (App Service) issues each identity's tokens, the HTTPS Key Vault
// emulator checks them against its ledger and grants each key to one identity only, and a
// recording transport sees every request that leaves the session.
//
// These need libmongocrypt >= 1.9 (the mongocrypt-next test stage builds against one); with an
// older libmongocrypt only the test of the clear refusal runs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <set>

#include "azkms/crypt_session.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "key_vault.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Sends through libcurl and keeps a copy of every request. Refuses (401) every request that
// carries a bearer token named in `revoked`, as Key Vault does once a token is revoked.
class RecordingHttp final : public HttpClient {
 public:
  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    const std::string auth = request.header("Authorization").value_or("");
    const std::string bearer = auth.starts_with("Bearer ") ? auth.substr(7) : "";
    {
      std::lock_guard lock(mutex);
      requests.push_back(request);
      bearers.push_back(bearer);
      if (revoke_next && !bearer.empty()) {
        revoked.insert(bearer);
        revoke_next = false;
      }
      if (revoked.contains(bearer)) {
        return {401, {}, R"({"error":{"code":"Unauthorized","message":"revoked"}})"};
      }
    }
    return inner->send(request, options);
  }

  std::shared_ptr<HttpClient> inner = make_curl_http_client();
  std::mutex mutex;
  std::vector<HttpRequest> requests;
  std::vector<std::string> bearers;
  std::set<std::string> revoked;
  bool revoke_next = false;  // revoke the token of the next request that carries one
};

class NamedProvidersTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    identity_ = new emulator::Emulator();
    identity_->start();
    emulator::KeyVaultOptions options;
    options.keys = {"prod-key", "analytics-key", "base-key"};
    options.log = [](std::string_view line) {
      std::lock_guard lock(log_mutex_);
      log_lines_.emplace_back(line);
    };
    vault_ = new emulator::KeyVaultServer(identity_->ledger(), options);
    vault_->start();
    // Each key may be used by one identity only: a token of another identity gets 403.
    vault_->restrict("prod-key", {system_client_id()});
    vault_->restrict("analytics-key", {analytics_client_id()});
    vault_->restrict("base-key", {system_client_id()});
  }
  static void TearDownTestSuite() {
    delete vault_;
    delete identity_;
  }

  static std::string system_client_id() { return emulator::default_identities()[0].client_id; }
  static std::string analytics_client_id() { return emulator::default_identities()[1].client_id; }

  void SetUp() override {
    if (!CryptSession::supports_named_providers()) {
      // The stage built against a newer libmongocrypt must not pass by skipping.
      if (std::getenv("AZKMS_REQUIRE_NAMED_PROVIDERS") != nullptr) {
        FAIL() << "AZKMS_REQUIRE_NAMED_PROVIDERS is set, but libmongocrypt "
               << CryptSession::libmongocrypt_version() << " has no named KMS providers";
      }
      GTEST_SKIP() << "libmongocrypt " << CryptSession::libmongocrypt_version()
                   << " has no named KMS providers";
    }
    vault_->clear_faults();
    {
      std::lock_guard lock(log_mutex_);
      log_lines_.clear();
    }
    dir_ = testing::make_temp_dir("azkms-named");
    key_vault_ = std::make_shared<FileKeyVault>(dir_ / "keys.json");
    providers_ = make_providers();
    http_ = std::make_shared<RecordingHttp>();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // azure (system-assigned), azure:prod (system-assigned) and azure:analytics (a user-assigned
  // identity), all on the emulator's App Service endpoint.
  static std::shared_ptr<KmsProviders> make_providers(bool with_analytics = true) {
    auto env = std::make_shared<MapEnvironment>(
        identity_->client_environment(emulator::Endpoint::kAppService));
    KmsProvidersOptions options;
    options.environment = env;
    auto providers = std::make_shared<KmsProviders>(options);
    providers->add("azure");
    providers->add("azure:prod", ProviderConfig{SourceKind::kAppService, {}});
    if (with_analytics) {
      providers->add("azure:analytics",
                     ProviderConfig{SourceKind::kAppService,
                                    IdentitySelector::client_id(analytics_client_id())});
    }
    return providers;
  }

  std::unique_ptr<CryptSession> session(std::shared_ptr<KmsProviders> providers = nullptr) {
    CryptSessionOptions options;
    options.providers = providers ? providers : providers_;
    options.key_vault = key_vault_;
    options.http = http_;
    options.ca_file = vault_->ca_file();
    options.kms_attempt_timeout = 5s;
    return std::make_unique<CryptSession>(options);
  }
  static AzureMasterKey master_key(const std::string& provider, const std::string& key) {
    return {provider, vault_->endpoint(), key, ""};
  }

  // The identities Key Vault saw using `key`, from its log ("wrapkey prod-key/(latest): 200 for
  // client id ...").
  static std::set<std::string> identities_that_used(const std::string& key) {
    std::set<std::string> seen;
    std::lock_guard lock(log_mutex_);
    for (const auto& line : log_lines_) {
      if (line.find(" " + key + "/") == std::string::npos) continue;
      const auto at = line.find("for client id ");
      if (at != std::string::npos) seen.insert(line.substr(at + 14, 36));
    }
    return seen;
  }

  static emulator::Emulator* identity_;
  static emulator::KeyVaultServer* vault_;
  static std::mutex log_mutex_;
  static std::vector<std::string> log_lines_;
  fs::path dir_;
  std::shared_ptr<FileKeyVault> key_vault_;
  std::shared_ptr<KmsProviders> providers_;
  std::shared_ptr<RecordingHttp> http_;
};
emulator::Emulator* NamedProvidersTest::identity_ = nullptr;
emulator::KeyVaultServer* NamedProvidersTest::vault_ = nullptr;
std::mutex NamedProvidersTest::log_mutex_;
std::vector<std::string> NamedProvidersTest::log_lines_;

TEST_F(NamedProvidersTest, EachNamedProviderUsesItsOwnIdentityAndOneTokenForManyOperations) {
  auto crypt = session();
  const DataKeyId prod = crypt->create_data_key(master_key("azure:prod", "prod-key"), {"prod"});
  const DataKeyId analytics =
      crypt->create_data_key(master_key("azure:analytics", "analytics-key"), {"analytics"});
  const DataKeyId base = crypt->create_data_key(master_key("azure", "base-key"), {"base"});

  for (int i = 0; i < 50; ++i) {
    const std::string value = "value " + std::to_string(i);
    for (const auto& key : {prod, analytics, base}) {
      const BsonValue ciphertext = crypt->encrypt(BsonValue::utf8(value), key, Algorithm::kRandom);
      EXPECT_EQ(crypt->decrypt(ciphertext).as_utf8(), value);
    }
  }
  // A restarted application (a new session, so libmongocrypt's data key cache is empty)
  // decrypts through Key Vault again, with each key's own identity.
  const BsonValue prod_ciphertext =
      crypt->encrypt(BsonValue::utf8("p"), prod, Algorithm::kDeterministic);
  const BsonValue analytics_ciphertext =
      crypt->encrypt(BsonValue::utf8("a"), analytics, Algorithm::kDeterministic);
  auto restarted = session();
  EXPECT_EQ(restarted->decrypt(prod_ciphertext).as_utf8(), "p");
  EXPECT_EQ(restarted->decrypt(analytics_ciphertext).as_utf8(), "a");

  // Key Vault saw each key used by its provider's identity and by no other.
  EXPECT_EQ(identities_that_used("prod-key"), std::set<std::string>{system_client_id()});
  EXPECT_EQ(identities_that_used("analytics-key"), std::set<std::string>{analytics_client_id()});
  EXPECT_EQ(identities_that_used("base-key"), std::set<std::string>{system_client_id()});
  // One upstream token request per identity, however many operations.
  EXPECT_EQ(providers_->fetch_count("azure:prod"), 1u);
  EXPECT_EQ(providers_->fetch_count("azure:analytics"), 1u);
  EXPECT_EQ(providers_->fetch_count("azure"), 1u);
  EXPECT_GE(crypt->stats().named_token_requests, 2u);
}

TEST_F(NamedProvidersTest, ThePlaceholderNeverLeavesTheProcess) {
  auto crypt = session();
  const DataKeyId prod = crypt->create_data_key(master_key("azure:prod", "prod-key"));
  const DataKeyId analytics =
      crypt->create_data_key(master_key("azure:analytics", "analytics-key"));
  auto restarted = session();
  (void)restarted->decrypt(crypt->encrypt(BsonValue::utf8("x"), prod, Algorithm::kRandom));
  (void)restarted->decrypt(crypt->encrypt(BsonValue::utf8("y"), analytics, Algorithm::kRandom));

  std::lock_guard lock(http_->mutex);
  ASSERT_FALSE(http_->requests.empty());
  for (const auto& request : http_->requests) {
    EXPECT_TRUE(request.url.starts_with("https://" + vault_->endpoint() + "/keys/")) << request.url;
    EXPECT_EQ(request.url.find(".invalid"), std::string::npos) << request.url;
    EXPECT_EQ(request.body.find("client_secret"), std::string::npos);
    EXPECT_EQ(request.body.find("grant_type"), std::string::npos);
  }
  EXPECT_GE(crypt->stats().named_token_requests + restarted->stats().named_token_requests, 2u);
}

TEST_F(NamedProvidersTest, ARevokedTokenOfANamedProviderIsReplacedByItself) {
  auto crypt = session();
  (void)crypt->create_data_key(master_key("azure:analytics", "analytics-key"));
  const auto fetched = providers_->fetch_count("azure:analytics");
  // Key Vault refuses the token libmongocrypt holds from now on (a revoked token): the
  // session must drop it from azkms's cache and from libmongocrypt's, not resend it.
  http_->revoke_next = true;
  const DataKeyId id = crypt->create_data_key(master_key("azure:analytics", "analytics-key"));
  EXPECT_EQ(crypt->stats().unauthorized_retries, 1u);
  EXPECT_EQ(providers_->fetch_count("azure:analytics"), fetched + 1);
  EXPECT_EQ(providers_->fetch_count("azure:prod"), 0u);  // another identity, untouched
  // And the session keeps working with the new token.
  const BsonValue ciphertext = crypt->encrypt(BsonValue::utf8("after"), id, Algorithm::kRandom);
  EXPECT_EQ(session()->decrypt(ciphertext).as_utf8(), "after");
  EXPECT_EQ(identities_that_used("analytics-key"), std::set<std::string>{analytics_client_id()});
}

TEST_F(NamedProvidersTest, ARevokedTokenOfTheBaseProviderIsReplacedAlongsideNamedOnes) {
  auto crypt = session();
  (void)crypt->create_data_key(master_key("azure", "base-key"));
  (void)crypt->create_data_key(master_key("azure:prod", "prod-key"));
  const auto fetched = providers_->fetch_count("azure");
  http_->revoke_next = true;
  (void)crypt->create_data_key(master_key("azure", "base-key"));
  EXPECT_EQ(crypt->stats().unauthorized_retries, 1u);
  EXPECT_EQ(providers_->fetch_count("azure"), fetched + 1);
  EXPECT_EQ(providers_->fetch_count("azure:prod"), 1u);  // its token was not refused
  (void)crypt->create_data_key(master_key("azure:prod", "prod-key"));
  EXPECT_EQ(providers_->fetch_count("azure:prod"), 1u);
}

TEST_F(NamedProvidersTest, ANameWithoutBindingIsAConfigurationErrorBeforeAnyRequest) {
  auto crypt = session();
  try {
    (void)crypt->create_data_key(master_key("azure:nobody", "prod-key"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_NE(std::string(e.what()).find("azure:nobody"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("register"), std::string::npos) << e.what();
  }
  // Registered after the session was made: said so.
  providers_->add("azure:late", ProviderConfig{SourceKind::kAppService, {}});
  try {
    (void)crypt->create_data_key(master_key("azure:late", "prod-key"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_NE(std::string(e.what()).find("after this CryptSession was created"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(http_->requests.empty());
  EXPECT_EQ(providers_->fetch_count("azure:prod"), 0u);
  EXPECT_EQ(providers_->fetch_count("azure:analytics"), 0u);
}

TEST_F(NamedProvidersTest, DecryptingWithAProviderTheSessionLacksIsAClearError) {
  const DataKeyId analytics =
      session()->create_data_key(master_key("azure:analytics", "analytics-key"));
  const BsonValue ciphertext =
      session()->encrypt(BsonValue::utf8("x"), analytics, Algorithm::kRandom);
  auto without = session(make_providers(/*with_analytics=*/false));
  try {
    (void)without->decrypt(ciphertext);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << e.what();
    EXPECT_NE(std::string(e.what()).find("azure:analytics"), std::string::npos) << e.what();
  }
}

TEST_F(NamedProvidersTest, ASessionWithOnlyNamedProvidersNeedsNoBaseProvider) {
  auto env = std::make_shared<MapEnvironment>(
      identity_->client_environment(emulator::Endpoint::kAppService));
  KmsProvidersOptions options;
  options.environment = env;
  auto providers = std::make_shared<KmsProviders>(options);
  providers->add("azure:prod", ProviderConfig{SourceKind::kAppService, {}});
  auto crypt = session(providers);
  const DataKeyId id = crypt->create_data_key(master_key("azure:prod", "prod-key"));
  EXPECT_EQ(crypt->decrypt(crypt->encrypt(BsonValue::utf8("z"), id, Algorithm::kRandom)).as_utf8(),
            "z");
  try {
    (void)crypt->create_data_key(master_key("azure", "base-key"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << e.what();
  }
}

// With a libmongocrypt that has no named providers, a named provider is refused by name and
// version, before any request.
TEST(NamedProvidersUnsupportedTest, OlderLibmongocryptRefusesNamedProvidersClearly) {
  if (CryptSession::supports_named_providers()) {
    GTEST_SKIP() << "libmongocrypt " << CryptSession::libmongocrypt_version()
                 << " has named KMS providers";
  }
  std::atomic<int> issued{0};
  auto providers = std::make_shared<KmsProviders>();
  auto callback = [&issued](const TokenRequest& request, Deadline) {
    ++issued;
    AccessToken token;
    token.token = Secret("tok");
    token.resource = request.resource;
    token.expires_on = std::chrono::system_clock::now() + 1h;
    return token;
  };
  providers->add_callback("azure", callback);
  providers->add_callback("azure:prod", callback);
  const fs::path dir = testing::make_temp_dir("azkms-named-old");
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = std::make_shared<FileKeyVault>(dir / "keys.json");
  auto http = std::make_shared<RecordingHttp>();
  options.http = http;
  CryptSession crypt(options);
  try {
    (void)crypt.create_data_key({"azure:prod", "127.0.0.1:1", "k", ""});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    const std::string message = e.what();
    EXPECT_NE(message.find("azure:prod"), std::string::npos) << message;
    EXPECT_NE(message.find("libmongocrypt >= 1.9"), std::string::npos) << message;
    EXPECT_NE(message.find(CryptSession::libmongocrypt_version()), std::string::npos) << message;
  }
  EXPECT_EQ(issued, 0);
  EXPECT_TRUE(http->requests.empty());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace azkms
