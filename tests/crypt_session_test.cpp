// CryptSession: the libmongocrypt state machine end to end.
//  - Against an in-memory Key Vault (an HttpClient that answers wrapkey/unwrapkey), for exact
//    control of statuses: retries, 401 -> invalidate + one retry, 403, typed errors.
//  - Against the emulator: App Service identity endpoint + the HTTPS Key Vault emulator with
//    real RSA-OAEP-256, through libcurl with TLS verification and the emulator's CA file.
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "azkms/crypt_session.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "key_vault.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kEndpoint = "127.0.0.1:8443";

// Quick retries so that retry tests do not wait half a second per attempt.
RetryPolicy fast_retries() {
  RetryPolicy policy = RetryPolicy::identity_endpoint();
  policy.initial_backoff = 1ms;
  policy.max_backoff = 5ms;
  return policy;
}

// ---------------------------------------------------------------------------------------------
// An in-memory Key Vault. wrapkey answers the reversed base64url string (a valid base64url of
// the same length) and remembers it; unwrapkey accepts only values it produced.
class FakeKeyVault final : public HttpClient {
 public:
  struct Seen {
    std::string method;
    std::string url;
    std::string bearer;
    std::string operation;  // "wrapkey" / "unwrapkey"
  };

  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    std::lock_guard lock(mutex_);
    const auto auth = request.header("Authorization").value_or("");
    const std::string bearer = auth.starts_with("Bearer ") ? auth.substr(7) : "";
    const std::string path = request.url.substr(0, request.url.find('?'));
    const std::string operation = path.substr(path.rfind('/') + 1);
    seen.push_back({request.method, request.url, bearer, operation});
    last_options = options;
    for (const auto& header : request.headers) {
      if (header.name == "Authorization") authorization_marked_sensitive = header.sensitive;
    }
    if (!scripted.empty()) {
      const int status = scripted.front();
      scripted.pop_front();
      if (status == 0) throw Error(ErrorCode::kConnection, "connection reset (scripted)");
      return {status, {}, R"({"error":{"code":"Scripted","message":"scripted"}})"};
    }
    if (rejected.contains(bearer)) {
      return {401, {}, R"({"error":{"code":"Unauthorized","message":"expired"}})"};
    }
    if (forbidden) {
      return {403, {}, R"({"error":{"code":"Forbidden","message":"no wrapKey permission"}})"};
    }
    const json body = json::parse(request.body);
    if (body.value("alg", "") != "RSA-OAEP-256") return {400, {}, R"({"error":{}})"};
    const std::string value = body.at("value").get<std::string>();
    if (operation == "wrapkey") {
      std::string wrapped(value.rbegin(), value.rend());
      wrapped_values.insert(wrapped);
      return {200,
              {},
              json{{"kid", "https://" + std::string(kEndpoint) + "/keys/k/1"}, {"value", wrapped}}
                  .dump()};
    }
    if (operation == "unwrapkey" && wrapped_values.contains(value)) {
      return {
          200, {}, json{{"kid", "k"}, {"value", std::string(value.rbegin(), value.rend())}}.dump()};
    }
    return {400, {}, R"({"error":{"code":"BadParameter"}})"};
  }

  std::mutex mutex_;
  std::vector<Seen> seen;
  std::deque<int> scripted;  // statuses answered first, in order (0: transport error)
  std::set<std::string> rejected;
  bool forbidden = false;
  std::set<std::string> wrapped_values;
  HttpOptions last_options;
  bool authorization_marked_sensitive = false;
};

// Issues "tok-1", "tok-2", ... and counts.
struct TokenIssuer {
  std::shared_ptr<std::atomic<int>> issued = std::make_shared<std::atomic<int>>(0);
  TokenCallback callback() const {
    return [issued = issued](const TokenRequest& request, Deadline) {
      AccessToken token;
      token.token = Secret("tok-" + std::to_string(++*issued));
      token.resource = request.resource;
      token.expires_on = std::chrono::system_clock::now() + 1h;
      token.source = "test issuer";
      return token;
    };
  }
};

class CryptSessionFakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("azkms-crypt");
    providers_ = std::make_shared<KmsProviders>();
    providers_->add_callback("azure", issuer_.callback(), TokenRequest{}, "test issuer");
    key_vault_ = std::make_shared<FileKeyVault>(dir_ / "keys.json");
    http_ = std::make_shared<FakeKeyVault>();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<CryptSession> session() {
    CryptSessionOptions options;
    options.providers = providers_;
    options.key_vault = key_vault_;
    options.http = http_;
    options.kms_retry = fast_retries();
    options.ca_file = "/tmp/some-ca.pem";
    return std::make_unique<CryptSession>(options);
  }
  static AzureMasterKey master_key() { return {"azure", kEndpoint, "mongo-key", ""}; }

  fs::path dir_;
  TokenIssuer issuer_;
  std::shared_ptr<KmsProviders> providers_;
  std::shared_ptr<FileKeyVault> key_vault_;
  std::shared_ptr<FakeKeyVault> http_;
};

TEST_F(CryptSessionFakeTest, ReportsLibmongocryptVersion) {
  EXPECT_FALSE(CryptSession::libmongocrypt_version().empty());
}

TEST_F(CryptSessionFakeTest, CreatesADataKeyAndStoresIt) {
  auto crypt = session();
  EXPECT_EQ(*issuer_.issued, 0);  // nothing fetched before libmongocrypt asks
  const DataKeyId id = crypt->create_data_key(master_key(), {"customer-ssn"});
  EXPECT_EQ(*issuer_.issued, 1);

  const auto keys = key_vault_->all();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(DataKeyId::of(keys[0]), id);
  const std::string text = keys[0].relaxed_json();
  EXPECT_NE(text.find("\"provider\" : \"azure\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"keyVaultEndpoint\" : \"127.0.0.1:8443\""), std::string::npos);
  EXPECT_NE(text.find("\"keyName\" : \"mongo-key\""), std::string::npos);
  EXPECT_NE(text.find("customer-ssn"), std::string::npos);

  ASSERT_EQ(http_->seen.size(), 1u);
  EXPECT_EQ(http_->seen[0].method, "POST");
  EXPECT_EQ(http_->seen[0].url, "https://127.0.0.1:8443/keys/mongo-key//wrapkey?api-version=7.1");
  EXPECT_EQ(http_->seen[0].bearer, "tok-1");
  EXPECT_TRUE(http_->authorization_marked_sensitive);
  EXPECT_EQ(http_->last_options.ca_file, "/tmp/some-ca.pem");
  const auto stats = crypt->stats();
  EXPECT_EQ(stats.credential_requests, 1u);
  EXPECT_EQ(stats.kms_requests, 1u);
}

TEST_F(CryptSessionFakeTest, AKeyVersionGoesIntoThePath) {
  auto crypt = session();
  (void)crypt->create_data_key({"azure", kEndpoint, "mongo-key", "0123abcd"});
  ASSERT_EQ(http_->seen.size(), 1u);
  EXPECT_EQ(http_->seen[0].url,
            "https://127.0.0.1:8443/keys/mongo-key/0123abcd/wrapkey?api-version=7.1");
}

TEST_F(CryptSessionFakeTest, EncryptsAndDecryptsBothAlgorithms) {
  auto crypt = session();
  const DataKeyId id = crypt->create_data_key(master_key());
  const BsonValue plain = BsonValue::utf8("457-55-5462");

  const BsonValue det1 = crypt->encrypt(plain, id, Algorithm::kDeterministic);
  const BsonValue det2 = crypt->encrypt(plain, id, Algorithm::kDeterministic);
  const BsonValue rnd1 = crypt->encrypt(plain, id, Algorithm::kRandom);
  const BsonValue rnd2 = crypt->encrypt(plain, id, Algorithm::kRandom);
  EXPECT_EQ(det1.binary_subtype(), 6);
  EXPECT_EQ(rnd1.binary_subtype(), 6);
  EXPECT_EQ(det1, det2);
  EXPECT_FALSE(rnd1 == rnd2);
  EXPECT_FALSE(det1 == rnd1);

  for (const auto* ciphertext : {&det1, &rnd1, &rnd2}) {
    EXPECT_EQ(crypt->decrypt(*ciphertext).as_utf8(), "457-55-5462");
  }
  const BsonValue number = crypt->encrypt(BsonValue::int64(42), id, Algorithm::kRandom);
  EXPECT_EQ(crypt->decrypt(number), BsonValue::int64(42));
  // One wrap and one unwrap: libmongocrypt keeps the decrypted key for a minute.
  EXPECT_EQ(http_->seen.size(), 2u);
  EXPECT_EQ(http_->seen[1].operation, "unwrapkey");
  // libmongocrypt asks for credentials only when it must reach Key Vault; the registry's cache
  // answered every time.
  EXPECT_GE(crypt->stats().credential_requests, 2u);
  EXPECT_EQ(*issuer_.issued, 1);
  EXPECT_GE(crypt->stats().key_vault_reads, 1u);
}

TEST_F(CryptSessionFakeTest, EncryptsByKeyAltName) {
  auto crypt = session();
  (void)crypt->create_data_key(master_key(), {"by-name"});
  const BsonValue ciphertext =
      crypt->encrypt(BsonValue::utf8("x"), "by-name", Algorithm::kDeterministic);
  EXPECT_EQ(crypt->decrypt(ciphertext).as_utf8(), "x");
}

TEST_F(CryptSessionFakeTest, AnotherSessionDecryptsWithKeysFromTheFile) {
  BsonValue ciphertext;
  {
    auto writer = session();
    const DataKeyId id = writer->create_data_key(master_key());
    ciphertext = writer->encrypt(BsonValue::utf8("persisted"), id, Algorithm::kRandom);
  }
  auto reader = session();
  EXPECT_EQ(reader->decrypt(ciphertext).as_utf8(), "persisted");
}

TEST_F(CryptSessionFakeTest, AnUnknownKeyIsAKeyVaultError) {
  auto crypt = session();
  DataKeyId missing;
  missing.bytes[0] = 1;
  try {
    (void)crypt->encrypt(BsonValue::utf8("x"), missing, Algorithm::kRandom);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKeyVault) << e.what();
    EXPECT_NE(std::string(e.what()).find(key_vault_->describe()), std::string::npos);
  }
}

TEST_F(CryptSessionFakeTest, DecryptRefusesWhatIsNotCiphertext) {
  auto crypt = session();
  EXPECT_THROW((void)crypt->decrypt(BsonValue::utf8("plain")), Error);
}

TEST_F(CryptSessionFakeTest, RetriesRetryableStatusesAndTransportErrors) {
  auto crypt = session();
  http_->scripted = {503, 0, 429};
  (void)crypt->create_data_key(master_key());
  EXPECT_EQ(http_->seen.size(), 4u);
  EXPECT_EQ(crypt->stats().kms_retries, 3u);
  EXPECT_EQ(key_vault_->all().size(), 1u);
}

TEST_F(CryptSessionFakeTest, GivesUpAfterThePolicysAttemptsWithATypedError) {
  auto crypt = session();
  http_->scripted = {503, 503, 503, 503, 503, 503};
  try {
    (void)crypt->create_data_key(master_key());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKms);
    EXPECT_EQ(e.http_status(), 503);
    EXPECT_EQ(e.attempts(), fast_retries().max_attempts);
    EXPECT_NE(std::string(e.what()).find("Scripted"), std::string::npos);
  }
  EXPECT_TRUE(key_vault_->all().empty());
}

TEST_F(CryptSessionFakeTest, ANonRetryableStatusIsNotRetried) {
  auto crypt = session();
  http_->scripted = {400};
  EXPECT_THROW((void)crypt->create_data_key(master_key()), Error);
  EXPECT_EQ(http_->seen.size(), 1u);
}

TEST_F(CryptSessionFakeTest, A401DropsTheTokenAndRetriesOnceWithAFreshOne) {
  auto crypt = session();
  http_->rejected = {"tok-1"};
  (void)crypt->create_data_key(master_key());
  ASSERT_EQ(http_->seen.size(), 2u);
  EXPECT_EQ(http_->seen[0].bearer, "tok-1");
  EXPECT_EQ(http_->seen[1].bearer, "tok-2");
  EXPECT_EQ(crypt->stats().unauthorized_retries, 1u);
  EXPECT_EQ(providers_->fetch_count("azure"), 2u);
  EXPECT_EQ(key_vault_->all().size(), 1u);
}

TEST_F(CryptSessionFakeTest, A401ToTheFreshTokenTooIsATypedErrorAfterOneRetry) {
  auto crypt = session();
  http_->rejected = {"tok-1", "tok-2", "tok-3"};
  try {
    (void)crypt->create_data_key(master_key());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKms);
    EXPECT_EQ(e.http_status(), 401);
    const std::string message = e.what();
    EXPECT_EQ(message.find("tok-"), std::string::npos) << message;
    EXPECT_NE(message.find("/keys/mongo-key//wrapkey"), std::string::npos) << message;
  }
  EXPECT_EQ(http_->seen.size(), 2u);  // once, then once more: never a loop
  EXPECT_EQ(*issuer_.issued, 2);
}

TEST_F(CryptSessionFakeTest, A403IsATypedErrorNamingTheIdentity) {
  auto crypt = session();
  http_->forbidden = true;
  try {
    (void)crypt->create_data_key(master_key());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKms);
    EXPECT_EQ(e.http_status(), 403);
    const std::string message = e.what();
    EXPECT_NE(message.find("Forbidden"), std::string::npos) << message;
    EXPECT_NE(message.find("Key Vault Crypto User"), std::string::npos) << message;
    EXPECT_NE(message.find("test issuer"), std::string::npos) << message;
    EXPECT_EQ(message.find("tok-"), std::string::npos) << message;
  }
  EXPECT_EQ(http_->seen.size(), 1u);  // 403 is not retried and does not refresh the token
  EXPECT_EQ(*issuer_.issued, 1);
}

TEST_F(CryptSessionFakeTest, ACredentialFailureStopsTheOperationTyped) {
  auto providers = std::make_shared<KmsProviders>();
  providers->add_callback("azure", [](const TokenRequest&, Deadline) -> AccessToken {
    throw Error(ErrorCode::kConnection, "identity endpoint unreachable");
  });
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = key_vault_;
  options.http = http_;
  CryptSession crypt(options);
  try {
    (void)crypt.create_data_key(master_key());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConnection);
  }
  EXPECT_TRUE(http_->seen.empty());
}

TEST_F(CryptSessionFakeTest, InvalidMasterKeysAreConfigurationErrors) {
  auto crypt = session();
  for (const AzureMasterKey& bad :
       {AzureMasterKey{"aws", kEndpoint, "k", ""}, AzureMasterKey{"azure", "", "k", ""},
        AzureMasterKey{"azure", kEndpoint, "", ""},
        AzureMasterKey{"azure", "localhost:8443", "k", ""}}) {
    try {
      (void)crypt->create_data_key(bad);
      ADD_FAILURE() << "accepted endpoint \"" << bad.key_vault_endpoint << "\"";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << e.what();
    }
  }
  EXPECT_TRUE(http_->seen.empty());
}

// Named providers (tests/named_providers_test.cpp) can stand in for the base one only where
// libmongocrypt has them.
TEST_F(CryptSessionFakeTest, TheSessionNeedsAnAzureProvider) {
  auto providers = std::make_shared<KmsProviders>();
  if (!CryptSession::supports_named_providers()) {
    providers->add_callback("azure:prod", issuer_.callback());
  }
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = key_vault_;
  try {
    CryptSession crypt(options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
  }
  options.providers = nullptr;
  EXPECT_THROW(CryptSession{options}, Error);
}

TEST_F(CryptSessionFakeTest, ManyThreadsShareOneSession) {
  auto crypt = session();
  const DataKeyId id = crypt->create_data_key(master_key());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string text = "value-" + std::to_string(t) + "-" + std::to_string(i);
        try {
          const auto ciphertext = crypt->encrypt(BsonValue::utf8(text), id, Algorithm::kRandom);
          if (crypt->decrypt(ciphertext).as_utf8() != text) ++failures;
        } catch (const Error&) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(*issuer_.issued, 1);
}

// ---------------------------------------------------------------------------------------------
// End to end: App Service identity endpoint and HTTPS Key Vault emulator.

class CryptSessionEmulatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    identity_ = new emulator::Emulator();
    identity_->start();
    emulator::KeyVaultOptions options;
    options.keys = {"mongo-key", "other-key"};
    vault_ = new emulator::KeyVaultServer(identity_->ledger(), options);
    vault_->start();
  }
  static void TearDownTestSuite() {
    delete vault_;
    delete identity_;
  }

  void SetUp() override {
    vault_->clear_faults();
    vault_->unrestrict("mongo-key");
    dir_ = testing::make_temp_dir("azkms-crypt-e2e");
    auto env = std::make_shared<MapEnvironment>(
        identity_->client_environment(emulator::Endpoint::kAppService));
    KmsProvidersOptions provider_options;
    provider_options.environment = env;
    providers_ = std::make_shared<KmsProviders>(provider_options);
    providers_->add("azure");  // detected: App Service
    key_vault_ = std::make_shared<FileKeyVault>(dir_ / "keys.json");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<CryptSession> session(std::string ca_file = vault_->ca_file()) {
    CryptSessionOptions options;
    options.providers = providers_;
    options.key_vault = key_vault_;
    options.ca_file = std::move(ca_file);
    options.kms_retry = fast_retries();
    options.kms_attempt_timeout = 5s;
    return std::make_unique<CryptSession>(options);
  }
  static AzureMasterKey master_key(std::string version = {}) {
    return {"azure", vault_->endpoint(), "mongo-key", std::move(version)};
  }

  static emulator::Emulator* identity_;
  static emulator::KeyVaultServer* vault_;
  fs::path dir_;
  std::shared_ptr<KmsProviders> providers_;
  std::shared_ptr<FileKeyVault> key_vault_;
};
emulator::Emulator* CryptSessionEmulatorTest::identity_ = nullptr;
emulator::KeyVaultServer* CryptSessionEmulatorTest::vault_ = nullptr;

TEST_F(CryptSessionEmulatorTest, CreateEncryptDecrypt) {
  const auto wraps = vault_->wrap_count();
  const auto unwraps = vault_->unwrap_count();
  auto crypt = session();
  const DataKeyId id = crypt->create_data_key(master_key(), {"e2e"});
  EXPECT_EQ(vault_->wrap_count() - wraps, 1u);

  const BsonValue det =
      crypt->encrypt(BsonValue::utf8("secret field"), id, Algorithm::kDeterministic);
  const BsonValue rnd = crypt->encrypt(BsonValue::utf8("secret field"), "e2e", Algorithm::kRandom);
  EXPECT_EQ(crypt->decrypt(det).as_utf8(), "secret field");
  EXPECT_EQ(crypt->decrypt(rnd).as_utf8(), "secret field");
  EXPECT_GE(vault_->unwrap_count() - unwraps, 1u);

  // A second session (a restarted application) decrypts with the stored key.
  auto restarted = session();
  EXPECT_EQ(restarted->decrypt(det).as_utf8(), "secret field");
  EXPECT_EQ(providers_->fetch_count("azure"), 1u);  // one token served everything
}

TEST_F(CryptSessionEmulatorTest, AnExplicitKeyVersionIsUsed) {
  const std::string version = vault_->latest_version("mongo-key");
  auto crypt = session();
  const DataKeyId id = crypt->create_data_key(master_key(version));
  const auto ciphertext = crypt->encrypt(BsonValue::utf8("v"), id, Algorithm::kRandom);
  auto restarted = session();
  EXPECT_EQ(restarted->decrypt(ciphertext).as_utf8(), "v");
}

TEST_F(CryptSessionEmulatorTest, A401RefreshesTheTokenAndRetriesOnce) {
  auto crypt = session();
  (void)providers_->token("azure");  // a cached token that Key Vault will refuse once
  const auto unauthorized = vault_->unauthorized_count();
  vault_->inject("401", 1);
  (void)crypt->create_data_key(master_key());
  EXPECT_EQ(vault_->unauthorized_count() - unauthorized, 1u);
  EXPECT_EQ(crypt->stats().unauthorized_retries, 1u);
  EXPECT_EQ(providers_->fetch_count("azure"), 2u);
  EXPECT_EQ(key_vault_->all().size(), 1u);
}

TEST_F(CryptSessionEmulatorTest, A401ThatPersistsIsATypedErrorWithoutSecrets) {
  auto crypt = session();
  const std::string token = providers_->token("azure").token.reveal();
  vault_->inject("401", 5);
  try {
    (void)crypt->create_data_key(master_key());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKms);
    EXPECT_EQ(e.http_status(), 401);
    EXPECT_EQ(std::string(e.what()).find(token), std::string::npos);
  }
  EXPECT_EQ(crypt->stats().kms_requests, 2u);
}

TEST_F(CryptSessionEmulatorTest, AnIdentityNotGrantedGets403Typed) {
  auto crypt = session();
  vault_->restrict("mongo-key", {"somebody-else"});
  const auto forbidden = vault_->forbidden_count();
  try {
    (void)crypt->create_data_key(master_key());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKms);
    EXPECT_EQ(e.http_status(), 403);
    EXPECT_NE(std::string(e.what()).find("App Service"), std::string::npos) << e.what();
  }
  EXPECT_EQ(vault_->forbidden_count() - forbidden, 1u);
  EXPECT_EQ(crypt->stats().unauthorized_retries, 0u);
  EXPECT_TRUE(key_vault_->all().empty());
}

TEST_F(CryptSessionEmulatorTest, RetryableStatusesAreRetried) {
  auto crypt = session();
  vault_->inject("503", 1);
  vault_->inject("429", 1);
  (void)crypt->create_data_key(master_key());
  EXPECT_EQ(crypt->stats().kms_retries, 2u);
}

TEST_F(CryptSessionEmulatorTest, ABrokenResponseIsATypedError) {
  for (const char* fault : {"bad-json", "empty-json", "html", "bad-value"}) {
    auto crypt = session();
    vault_->inject(fault, 1);
    try {
      (void)crypt->create_data_key(master_key());
      ADD_FAILURE() << fault << " accepted";
    } catch (const Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::kKms || e.code() == ErrorCode::kCrypt)
          << fault << ": " << e.what();
    }
  }
  EXPECT_TRUE(key_vault_->all().empty());
}

TEST_F(CryptSessionEmulatorTest, TlsVerificationStaysOnWithoutTheCaFile) {
  auto crypt = session(/*ca_file=*/"");
  try {
    (void)crypt->create_data_key(master_key());
    FAIL() << "an untrusted certificate was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
  }
  EXPECT_TRUE(key_vault_->all().empty());
}

TEST_F(CryptSessionEmulatorTest, AnUnknownKeyNameIs404Typed) {
  auto crypt = session();
  try {
    (void)crypt->create_data_key({"azure", vault_->endpoint(), "no-such-key", ""});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKms);
    EXPECT_EQ(e.http_status(), 404);
  }
}

}  // namespace
}  // namespace azkms
