// run_demo: see demo.hpp.
//
// Part of the command-line tool, not of the library, because it links the emulator. Built as
// its own static library (azkms_demo) so that the demo's test links it too.
#include "demo.hpp"

#include <cstdio>
#include <filesystem>
#include <random>

#include "azkms/crypt_session.hpp"
#include "azkms/error.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"
#include "emulator.hpp"
#include "key_vault.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using Ms = std::chrono::duration<double, std::milli>;

// "the system-assigned identity", "the default (AZURE_CLIENT_ID) identity" (workload identity
// has no system-assigned one), or the user-assigned identity selected.
std::string identity_of(const DemoOptions& options) {
  if (!options.identity.is_system_assigned()) return options.identity.describe();
  return "the " + std::string(default_identity(options.environment)) + " identity";
}

emulator::Endpoint endpoint_for(SourceKind kind) {
  switch (kind) {
    case SourceKind::kImds:
      return emulator::Endpoint::kImds;
    case SourceKind::kAppService:
      return emulator::Endpoint::kAppService;
    case SourceKind::kAppService2017:
      return emulator::Endpoint::kAppService2017;
    case SourceKind::kAzureMl:
      return emulator::Endpoint::kAzureMl;
    case SourceKind::kCloudShell:
      return emulator::Endpoint::kCloudShell;
    case SourceKind::kAzureArc:
      return emulator::Endpoint::kAzureArc;
    case SourceKind::kServiceFabric:
      return emulator::Endpoint::kServiceFabric;
    case SourceKind::kWorkloadIdentity:
      return emulator::Endpoint::kWorkloadIdentity;
    case SourceKind::kCustom:
      break;
  }
  throw Error(ErrorCode::kConfiguration, "the demo emulates hosting environments; \"" +
                                             std::string(to_string(kind)) + "\" is not one");
}

// Prints "[  12.3 ms] what" after running a step; a failure names the step.
class Steps {
 public:
  explicit Steps(std::ostream& out) : out_(out) {}

  template <typename F>
  auto run(const std::string& what, F&& step) {
    const auto start = std::chrono::steady_clock::now();
    try {
      if constexpr (std::is_void_v<decltype(step())>) {
        step();
        print(start, what);
      } else {
        auto result = step();
        print(start, what);
        return result;
      }
    } catch (Error& e) {
      throw Error(e.code(), "demo step \"" + what + "\" failed: " + e.what())
          .with_http_status(e.http_status());
    } catch (const std::exception& e) {
      throw Error(ErrorCode::kConfiguration, "demo step \"" + what + "\" failed: " + e.what());
    }
  }
  void note(const std::string& text) { out_ << "             " << text << "\n"; }

 private:
  void print(std::chrono::steady_clock::time_point start, const std::string& what) {
    const Ms took = std::chrono::steady_clock::now() - start;
    char time[32];
    std::snprintf(time, sizeof time, "[%8.1f ms] ", took.count());
    out_ << time << what << "\n";
  }
  std::ostream& out_;
};

// A private scratch directory for the demo's key vault file, removed afterwards.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::random_device random;
    path = fs::temp_directory_path() / ("azkms-demo-" + std::to_string(random()));
    fs::create_directories(path);
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::replace);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

std::string lifetime_of(const AccessToken& token) {
  const auto left = std::chrono::duration_cast<std::chrono::seconds>(
      token.expires_on - std::chrono::system_clock::now());
  return std::to_string(left.count()) + " s";
}

}  // namespace

DemoReport run_demo(const DemoOptions& options, std::ostream& out) {
  const auto total_start = std::chrono::steady_clock::now();
  const emulator::Endpoint endpoint = endpoint_for(options.environment);
  Steps steps(out);
  DemoReport report;

  emulator::Emulator identity;
  steps.run("started the identity emulator (" + std::string(emulator::to_string(endpoint)) +
                " and the other endpoints) on 127.0.0.1",
            [&] { identity.start(); });

  emulator::KeyVaultOptions vault_options;
  vault_options.keys = {"mongodb-demo-key"};
  std::unique_ptr<emulator::KeyVaultServer> vault;
  steps.run("started the Key Vault emulator with RSA key \"mongodb-demo-key\"", [&] {
    vault = std::make_unique<emulator::KeyVaultServer>(identity.ledger(), vault_options);
    vault->start();
  });
  steps.note("Key Vault: " + vault->url() + " (TLS verified against its CA " + vault->ca_file() +
             ")");

  // The application's view: the hosting platform's variables, never the process environment.
  auto environment = std::make_shared<MapEnvironment>();
  std::string variables;
  for (const auto& [name, value] : identity.client_environment(endpoint)) {
    environment->set(name, value);
    variables += (variables.empty() ? "" : ", ") + name;
  }
  steps.note("behaving as " + std::string(display_name(options.environment)) + ": " + variables);

  KmsProvidersOptions provider_options;
  provider_options.environment = environment;
  auto providers = std::make_shared<KmsProviders>(provider_options);
  ProviderConfig config;
  if (options.force_source) config.source = options.environment;
  config.identity = options.identity;
  providers->add("azure", config);

  const ScratchDir scratch;
  auto key_vault = std::make_shared<FileKeyVault>(scratch.path / "keys.json");
  CryptSessionOptions session_options;
  session_options.providers = providers;
  session_options.key_vault = key_vault;
  session_options.ca_file = vault->ca_file();
  std::unique_ptr<CryptSession> session;
  steps.run("started a libmongocrypt " + CryptSession::libmongocrypt_version() +
                " session (kmsProviders {\"azure\": {}}, credentials on demand)",
            [&] { session = std::make_unique<CryptSession>(session_options); });

  AzureMasterKey master_key{"azure", vault->endpoint(), "mongodb-demo-key", ""};
  const DataKeyId key_id =
      steps.run("created a data key wrapped by " + vault->endpoint() + "/keys/mongodb-demo-key",
                [&] { return session->create_data_key(master_key, {"demo-key"}); });
  report.data_key_id = key_id.to_string();
  const AccessToken token = providers->token(kAzureProvider);
  report.source = token.source;
  steps.note("data key " + report.data_key_id + " stored in " + key_vault->describe());
  steps.note("credentials: " + providers->describe(kAzureProvider));
  steps.note("token: " + token.token.redacted() + " from " + token.source + " for " +
             identity_of(options) + ", valid for " + lifetime_of(token));

  const BsonValue plain = BsonValue::utf8(options.sample);
  const BsonValue ciphertext =
      steps.run("encrypted the field {ssn: \"" + options.sample + "\"} (deterministic)",
                [&] { return session->encrypt(plain, key_id, Algorithm::kDeterministic); });
  steps.note("ciphertext: BSON binary subtype " + std::to_string(ciphertext.binary_subtype()) +
             ", " + std::to_string(ciphertext.binary_bytes().size()) + " bytes");

  // A new session has no decrypted key in memory: decryption goes to Key Vault (unwrapkey).
  std::unique_ptr<CryptSession> reader;
  const BsonValue decrypted = steps.run("decrypted it in a fresh session", [&] {
    reader = std::make_unique<CryptSession>(session_options);
    return reader->decrypt(ciphertext);
  });
  if (decrypted.as_utf8() != options.sample) {
    throw Error(ErrorCode::kCrypt, "the decrypted value differs from the sample");
  }
  steps.note("plaintext: \"" + decrypted.as_utf8() + "\" (matches)");

  report.token_requests = providers->fetch_count(kAzureProvider);
  report.key_vault_requests = vault->requests_served();
  report.total = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - total_start);
  out << "demo finished in " << report.total.count() << " ms: " << report.token_requests
      << " token request(s) to the identity endpoint, " << report.key_vault_requests
      << " Key Vault request(s), " << vault->wrap_count() << " wrap, " << vault->unwrap_count()
      << " unwrap\n";
  return report;
}

}  // namespace azkms
