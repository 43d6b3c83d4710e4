// Key Vault faults through the libmongocrypt session, table-driven like the identity fault
// matrix: every fault the Key Vault emulator can produce (and a Key Vault that is down), for
// both operations that reach Key Vault (wrapkey when a data key is created, unwrapkey when a
// value is decrypted by a session that has not seen its key yet). Each case checks the
// outcome (success, or the typed error with its HTTP status), the requests Key Vault served,
// that the call returned before its deadline (plus slack), that nothing was stored on a
// failed data key creation, and that the same session works once the fault is gone.
// Identity endpoint faults while libmongocrypt asks for credentials are checked too.
//
// The table is printed into docs/reliability.md; KmsFaultTable.DocumentedTableIsInSync keeps
// it there (AZKMS_WRITE_FAULT_MATRIX=1 rewrites it).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "azkms/crypt_session.hpp"
#include "azkms/error.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"
#include "emulator.hpp"
#include "fault_matrix.hpp"
#include "key_vault.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

enum class Op { kWrap, kUnwrap };

struct KmsRow {
  std::string name;
  std::string fault;  // Key Vault emulator case; "down": the vault is stopped
  int times = 1;
  std::optional<ErrorCode> error;  // nullopt: the operation succeeds
  int http_status = 0;
  int requests = 1;  // requests Key Vault serves
  milliseconds deadline{10'000};
};

const std::vector<KmsRow>& kms_rows() {
  using enum ErrorCode;
  static const std::vector<KmsRow> kRows{
      {"400 Bad Request", "400", 1, kKms, 400, 1},
      {"401 once: token dropped, one retry with a fresh token", "401", 1, std::nullopt, 0, 2},
      {"401 to the fresh token too", "401", 10, kKms, 401, 2},
      {"403 identity not granted", "403", 1, kKms, 403, 1},
      {"404 key not found", "404", 1, kKms, 404, 1},
      {"408 once, then success", "408", 1, std::nullopt, 0, 2},
      {"429 with Retry-After: 1 once, then success", "429", 1, std::nullopt, 0, 2},
      {"500 once, then success", "500", 1, std::nullopt, 0, 2},
      {"502 once, then success", "502", 1, std::nullopt, 0, 2},
      {"503 once, then success", "503", 1, std::nullopt, 0, 2},
      {"504 once, then success", "504", 1, std::nullopt, 0, 2},
      {"503, persistent", "503", 10, kKms, 503, 3},
      {"501 (not retryable)", "501", 1, kKms, 501, 1},
      {"per-attempt timeout once, then success", "slow", 1, std::nullopt, 0, 2},
      {"per-attempt timeout, persistent", "slow", 10, kTimeout, 0, 3},
      {"caller's deadline (600 ms) shorter than one attempt", "slow", 10, kTimeout, 0, 1,
       milliseconds{600}},
      {"connection reset mid-body once, then success", "reset", 1, std::nullopt, 0, 2},
      {"connection reset mid-body, persistent", "reset", 10, kConnection, 0, 3},
      {"connection closed without an answer once, then success", "close", 1, std::nullopt, 0, 2},
      {"connection refused (Key Vault down)", "down", 1, kConnection, 0, 0},
      {"redirect (302)", "redirect", 1, kRedirect, 0, 1},
      {"malformed JSON", "bad-json", 1, kKms, 0, 1},
      {"empty JSON object", "empty-json", 1, kKms, 0, 1},
      {"truncated JSON", "truncated", 1, kKms, 0, 1},
      {"HTML body", "html", 1, kKms, 0, 1},
      {"XML body", "xml", 1, kKms, 0, 1},
      {"value not base64url", "bad-value", 1, kKms, 0, 1},
      {"body over the size cap (24 MiB)", "giant", 1, kResponseTooLarge, 0, 1},
  };
  return kRows;
}

std::string kms_markdown() {
  std::ostringstream out;
  out << kms_rows().size() << " rows, each for wrapkey (data key creation) and unwrapkey "
      << "(decryption): " << 2 * kms_rows().size() << " cases.\n\n"
      << "| # | Key Vault fault | emulator case | outcome | requests served |\n"
      << "|---|---|---|---|---|\n";
  int number = 0;
  for (const auto& row : kms_rows()) {
    std::string outcome = "**success**";
    if (row.error) {
      outcome = std::string(to_string(*row.error)) +
                (row.http_status ? " " + std::to_string(row.http_status) : "");
    }
    out << "| " << ++number << " | " << row.name << " | "
        << (row.fault == "down"
                ? std::string("server stopped")
                : "`" + row.fault + "`" + (row.times > 1 ? " x" + std::to_string(row.times) : ""))
        << " | " << outcome << " | " << row.requests << " |\n";
  }
  return out.str();
}

RetryPolicy fast_kms_retries() {
  RetryPolicy policy = RetryPolicy::identity_endpoint();
  policy.max_attempts = 3;
  policy.initial_backoff = milliseconds{20};
  policy.max_backoff = milliseconds{50};
  policy.jitter = 0;
  return policy;
}

class KmsFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    identity_ = new emulator::Emulator();
    identity_->start();
    emulator::KeyVaultOptions options;
    options.keys = {"mongo-key"};
    vault_ = new emulator::KeyVaultServer(identity_->ledger(), options);
    vault_->start();
  }
  static void TearDownTestSuite() {
    delete vault_;
    delete identity_;
  }

  void SetUp() override {
    vault_->clear_faults();
    identity_->clear_faults();
    dir_ = testing::make_temp_dir("azkms-kms-faults");
    providers_ = make_providers();
    key_vault_ = std::make_shared<FileKeyVault>(dir_ / "keys.json");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The App Service identity endpoint of the emulator, as detection finds it.
  static std::shared_ptr<KmsProviders> make_providers() {
    auto env = std::make_shared<MapEnvironment>(
        identity_->client_environment(emulator::Endpoint::kAppService));
    KmsProvidersOptions options;
    options.environment = env;
    options.context.http =
        std::make_shared<testing::LoopbackOnlyHttpClient>(make_curl_http_client());
    options.context.attempt_timeout = seconds{2};
    options.context.retry_policy = Harness::fast(RetryPolicy::identity_endpoint());
    options.cache_options.error_backoff_initial = milliseconds{1};
    options.cache_options.error_backoff_max = milliseconds{1};
    auto providers = std::make_shared<KmsProviders>(options);
    providers->add("azure");
    return providers;
  }

  std::unique_ptr<CryptSession> session() {
    CryptSessionOptions options;
    options.providers = providers_;
    options.key_vault = key_vault_;
    options.ca_file = vault_->ca_file();
    options.kms_retry = fast_kms_retries();
    options.kms_attempt_timeout = seconds{2};
    return std::make_unique<CryptSession>(options);
  }
  static AzureMasterKey master_key() { return {"azure", vault_->endpoint(), "mongo-key", ""}; }

  using Harness = fault_matrix::Harness;
  static emulator::Emulator* identity_;
  static emulator::KeyVaultServer* vault_;
  fs::path dir_;
  std::shared_ptr<KmsProviders> providers_;
  std::shared_ptr<FileKeyVault> key_vault_;
};
emulator::Emulator* KmsFaults::identity_ = nullptr;
emulator::KeyVaultServer* KmsFaults::vault_ = nullptr;

TEST_F(KmsFaults, EveryRowForWrapAndUnwrap) {
  // A ciphertext whose data key the unwrap cases must get from Key Vault.
  BsonValue ciphertext;
  {
    auto setup = session();
    const DataKeyId id = setup->create_data_key(master_key());
    ciphertext = setup->encrypt(BsonValue::utf8("a secret field"), id, Algorithm::kRandom);
  }
  for (const auto& row : kms_rows()) {
    for (Op op : {Op::kWrap, Op::kUnwrap}) {
      SCOPED_TRACE("Key Vault fault \"" + row.name + "\" on " +
                   (op == Op::kWrap ? "wrapkey" : "unwrapkey"));
      vault_->clear_faults();
      // A new session: libmongocrypt caches decrypted data keys per session for a minute.
      auto crypt = session();
      const auto stored = key_vault_->all().size();
      const auto served = vault_->requests_served();
      if (row.fault == "down") {
        vault_->stop();
      } else {
        vault_->inject(row.fault, row.times);
      }
      const auto started = std::chrono::steady_clock::now();
      std::optional<Error> error;
      try {
        if (op == Op::kWrap) {
          (void)crypt->create_data_key(master_key(), {}, started + row.deadline);
        } else {
          EXPECT_EQ(crypt->decrypt(ciphertext, started + row.deadline).as_utf8(), "a secret field");
        }
      } catch (const Error& e) {
        error = e;
      }
      const auto elapsed = std::chrono::steady_clock::now() - started;
      if (row.fault == "down") vault_->start();  // same port
      vault_->clear_faults();

      EXPECT_LT(elapsed, row.deadline + seconds{5});
      if (row.error) {
        if (!error) {
          ADD_FAILURE() << "expected " << to_string(*row.error) << ", the operation succeeded";
        } else {
          EXPECT_EQ(error->code(), *row.error) << error->what();
          if (row.http_status != 0) {
            EXPECT_EQ(error->http_status(), row.http_status);
          }
        }
      } else if (error) {
        ADD_FAILURE() << "expected success, got " << to_string(error->code()) << ": "
                      << error->what();
      }
      EXPECT_EQ(vault_->requests_served() - served, static_cast<std::uint64_t>(row.requests))
          << "requests Key Vault served";
      if (op == Op::kWrap) {
        EXPECT_EQ(key_vault_->all().size(), stored + (error ? 0 : 1))
            << "a failed data key creation stored something";
      }

      // Not poisoned: the same session works with the fault gone.
      std::this_thread::sleep_for(milliseconds{5});
      try {
        if (op == Op::kWrap) {
          (void)crypt->create_data_key(master_key());
        } else {
          EXPECT_EQ(crypt->decrypt(ciphertext).as_utf8(), "a secret field");
        }
      } catch (const Error& e) {
        ADD_FAILURE() << "after the fault the session still fails: " << e.what();
      }
    }
  }
}

// Faults of the identity endpoint while libmongocrypt asks for credentials: the operation
// fails with the source's own typed error before Key Vault is asked, and nothing is stored.
TEST_F(KmsFaults, IdentityEndpointFaultsDuringCredentials) {
  struct IdentityRow {
    const char* fault;
    int times;
    ErrorCode code;
  };
  for (const auto& row : std::vector<IdentityRow>{{"500", 10, ErrorCode::kHttpStatus},
                                                  {"html", 1, ErrorCode::kMalformedResponse},
                                                  {"giant", 1, ErrorCode::kResponseTooLarge},
                                                  {"redirect", 1, ErrorCode::kRedirect},
                                                  {"slow", 10, ErrorCode::kTimeout}}) {
    SCOPED_TRACE(row.fault);
    providers_ = make_providers();  // nothing cached
    auto crypt = session();
    const auto served = vault_->requests_served();
    const auto stored = key_vault_->all().size();
    identity_->inject(emulator::Endpoint::kAppService, row.fault, row.times);
    const auto started = std::chrono::steady_clock::now();
    try {
      (void)crypt->create_data_key(master_key(), {}, started + seconds{10});
      ADD_FAILURE() << "succeeded";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), row.code) << error.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, seconds{15});
    identity_->clear_faults();
    EXPECT_EQ(vault_->requests_served(), served);
    EXPECT_EQ(key_vault_->all().size(), stored);
    std::this_thread::sleep_for(milliseconds{5});
    EXPECT_NO_THROW((void)crypt->create_data_key(master_key()));
  }
}

// Key Vault answers 401 and the identity endpoint is down when the token is renewed.
TEST_F(KmsFaults, A401WhileTheIdentityEndpointFailsIsTyped) {
  auto crypt = session();
  (void)crypt->create_data_key(master_key());  // a cached token
  vault_->inject("401", 1);
  identity_->inject(emulator::Endpoint::kAppService, "503", 10);
  try {
    (void)crypt->create_data_key(master_key());
    ADD_FAILURE() << "succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kHttpStatus) << error.what();
    EXPECT_EQ(error.http_status(), 503);
  }
  identity_->clear_faults();
  vault_->clear_faults();
  std::this_thread::sleep_for(milliseconds{5});
  EXPECT_NO_THROW((void)crypt->create_data_key(master_key()));
  EXPECT_EQ(key_vault_->all().size(), 2u);
}

TEST(KmsFaultTable, DocumentedTableIsInSync) {
  const auto path = fs::path(__FILE__).parent_path().parent_path() / "docs" / "reliability.md";
  constexpr std::string_view kBegin =
      "<!-- kms-faults:begin (generated by tests/kms_faults_test.cpp) -->\n";
  constexpr std::string_view kEnd = "<!-- kms-faults:end -->";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string doc = buffer.str();
  const auto begin = doc.find(kBegin);
  const auto end = doc.find(kEnd);
  ASSERT_NE(begin, std::string::npos) << "docs/reliability.md lacks " << kBegin;
  ASSERT_NE(end, std::string::npos) << "docs/reliability.md lacks " << kEnd;
  const std::string table = kms_markdown();
  const std::string documented = doc.substr(begin + kBegin.size(), end - begin - kBegin.size());
  if (std::getenv("AZKMS_WRITE_FAULT_MATRIX") != nullptr && documented != table) {
    doc.replace(begin + kBegin.size(), end - begin - kBegin.size(), table);
    std::ofstream(path, std::ios::trunc) << doc;
    GTEST_SKIP() << "rewrote the table in " << path;
  }
  EXPECT_EQ(documented, table) << "docs/reliability.md is out of date; regenerate it with "
                                  "AZKMS_WRITE_FAULT_MATRIX=1 kms_faults_test";
}

}  // namespace
}  // namespace azkms
