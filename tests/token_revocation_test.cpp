// MSI v1 token revocation: App Service and Service Fabric keep tokens on the platform's side and
// hand the same one back, so asking again after Key Vault refused a token gets the refused
// token again unless the request names it (xms_cc=cp1&token_sha256_to_refresh=<SHA-256>). The
// emulator's platform cache behaves that way; these tests show that a 401 recovers with a new
// token through every path that drops one: CryptSession's 401 handling, KmsProviders::
// invalidate (what the C API's azkms_registry_invalidate calls) and TokenHandle::force_refresh.
#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "azkms/cache.hpp"
#include "azkms/crypt_session.hpp"
#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "key_vault.hpp"
#include "sha256.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

emulator::Options with_platform_cache() {
  emulator::Options options;
  options.platform_token_cache = true;
  return options;
}

std::shared_ptr<MapEnvironment> environment_of(const emulator::Emulator& emulator,
                                               emulator::Endpoint endpoint) {
  return std::make_shared<MapEnvironment>(emulator.client_environment(endpoint));
}

// Key Vault's transport, refusing (401) every token named in `revoked`, as Key Vault does once
// a token is revoked.
class RevokingHttp final : public HttpClient {
 public:
  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    const std::string auth = request.header("Authorization").value_or("");
    {
      std::lock_guard lock(mutex);
      if (auth.starts_with("Bearer ") && revoked.contains(auth.substr(7))) {
        return {401, {}, R"({"error":{"code":"Unauthorized","message":"revoked"}})"};
      }
    }
    return inner->send(request, options);
  }
  std::shared_ptr<HttpClient> inner = make_curl_http_client();
  std::mutex mutex;
  std::set<std::string> revoked;
};

TEST(TokenRevocationTest, TheEmulatedPlatformHandsBackItsCachedToken) {
  emulator::Emulator identity(with_platform_cache());
  identity.start();
  for (auto endpoint : {emulator::Endpoint::kAppService, emulator::Endpoint::kServiceFabric}) {
    auto source = make_source(*environment_of(identity, endpoint));
    const std::string first =
        source->fetch({}, std::chrono::steady_clock::now() + 10s).token.reveal();
    const std::string again =
        source->fetch({}, std::chrono::steady_clock::now() + 10s).token.reveal();
    EXPECT_EQ(first, again) << source->name() << ": the platform keeps its token";
    TokenRequest refresh;
    refresh.token_sha256_to_refresh = sha256_hex(first);
    const std::string fresh =
        source->fetch(refresh, std::chrono::steady_clock::now() + 10s).token.reveal();
    EXPECT_NE(fresh, first) << source->name() << ": naming the refused token gets a new one";
  }
}

TEST(TokenRevocationTest, AKeyVault401RecoversWithANewTokenFromAppService) {
  emulator::Emulator identity(with_platform_cache());
  identity.start();
  emulator::KeyVaultOptions vault_options;
  vault_options.keys = {"mongo-key"};
  emulator::KeyVaultServer vault(identity.ledger(), vault_options);
  vault.start();
  const fs::path dir = testing::make_temp_dir("azkms-revocation");

  KmsProvidersOptions provider_options;
  provider_options.environment = environment_of(identity, emulator::Endpoint::kAppService);
  auto providers = std::make_shared<KmsProviders>(provider_options);
  providers->add("azure");
  auto http = std::make_shared<RevokingHttp>();
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = std::make_shared<FileKeyVault>(dir / "keys.json");
  options.http = http;
  options.ca_file = vault.ca_file();
  CryptSession crypt(options);

  // The token in use is revoked: Key Vault refuses it from now on.
  const std::string refused = providers->token("azure").token.reveal();
  http->revoked.insert(refused);
  const DataKeyId id = crypt.create_data_key({"azure", vault.endpoint(), "mongo-key", ""});
  EXPECT_EQ(crypt.stats().unauthorized_retries, 1u);
  EXPECT_EQ(providers->fetch_count("azure"), 2u);
  EXPECT_NE(providers->token("azure").token.reveal(), refused);
  EXPECT_EQ(crypt.decrypt(crypt.encrypt(BsonValue::utf8("x"), id, Algorithm::kRandom)).as_utf8(),
            "x");
  fs::remove_all(dir);
}

TEST(TokenRevocationTest, InvalidateAndForceRefreshNameTheRefusedTokenToServiceFabric) {
  emulator::Emulator identity(with_platform_cache());
  identity.start();
  auto source = make_source(*environment_of(identity, emulator::Endpoint::kServiceFabric));
  TokenCache cache;
  TokenHandle handle = cache.handle(source);
  const std::string first = handle.get().token.reveal();
  EXPECT_EQ(handle.get().token.reveal(), first);  // cached by azkms

  const std::string forced =
      handle.force_refresh(std::chrono::steady_clock::now() + 10s)->token.reveal();
  EXPECT_NE(forced, first);

  handle.invalidate();
  const std::string after_invalidate = handle.get().token.reveal();
  EXPECT_NE(after_invalidate, forced);
  // A renewal that was not asked for by a refusal leaves the platform's token alone.
  EXPECT_EQ(source->fetch({}, std::chrono::steady_clock::now() + 10s).token.reveal(),
            after_invalidate);
}

}  // namespace
}  // namespace azkms
