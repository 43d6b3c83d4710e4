// A Key Vault claims challenge (Continuous Access Evaluation: 401 with
// `WWW-Authenticate: Bearer ..., error="insufficient_claims", claims="<base64 JSON>"`) reaches the
// token endpoint that accepts claims, workload identity's, with the next token request.
#include <gtest/gtest.h>

#include <mutex>

#include "azkms/crypt_session.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "encoding.hpp"
#include "key_vault.hpp"
#include "kms/kms_http.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;

constexpr const char* kClaims =
    R"({"access_token":{"nbf":{"essential":true,"value":"1700000000"}}})";

std::string challenge_header(const std::string& claims_json) {
  std::string encoded = base64url_encode(claims_json);
  return "Bearer authorization=\"https://login.microsoftonline.com/tenant\", "
         "error=\"insufficient_claims\", claims=\"" +
         encoded + "\"";
}

// Answers the first Key Vault request with the claims challenge, then passes requests on.
class ChallengingHttp final : public HttpClient {
 public:
  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    {
      std::lock_guard lock(mutex);
      if (!challenged) {
        challenged = true;
        return {401,
                {{"WWW-Authenticate", challenge_header(kClaims)}},
                R"({"error":{"code":"Unauthorized","message":"claims needed"}})"};
      }
    }
    return inner->send(request, options);
  }
  std::shared_ptr<HttpClient> inner = make_curl_http_client();
  std::mutex mutex;
  bool challenged = false;
};

TEST(ClaimsChallengeTest, ReadsTheDecodedClaimsOfAChallenge) {
  HttpResponse response{401, {{"WWW-Authenticate", challenge_header(kClaims)}}, ""};
  EXPECT_EQ(claims_challenge(response), kClaims);
  response.headers = {{"WWW-Authenticate", "Bearer authorization=\"x\", resource=\"y\""}};
  EXPECT_EQ(claims_challenge(response), "");
  response.headers = {{"WWW-Authenticate", "Bearer claims=\"not base64!\""}};
  EXPECT_EQ(claims_challenge(response), "");
  response.headers = {{"WWW-Authenticate", challenge_header("[1,2]")}};  // not an object
  EXPECT_EQ(claims_challenge(response), "");
}

TEST(ClaimsChallengeTest, AKeyVaultChallengeReachesWorkloadIdentity) {
  emulator::Emulator identity;
  identity.start();
  emulator::KeyVaultOptions vault_options;
  vault_options.keys = {"mongo-key"};
  emulator::KeyVaultServer vault(identity.ledger(), vault_options);
  vault.start();
  const fs::path dir = testing::make_temp_dir("azkms-claims");

  auto env = std::make_shared<MapEnvironment>(
      identity.client_environment(emulator::Endpoint::kWorkloadIdentity));
  KmsProvidersOptions provider_options;
  provider_options.environment = env;
  auto providers = std::make_shared<KmsProviders>(provider_options);
  providers->add("azure");
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = std::make_shared<FileKeyVault>(dir / "keys.json");
  options.http = std::make_shared<ChallengingHttp>();
  options.ca_file = vault.ca_file();
  CryptSession crypt(options);

  (void)crypt.create_data_key({"azure", vault.endpoint(), "mongo-key", ""});
  EXPECT_EQ(crypt.stats().unauthorized_retries, 1u);
  const auto received = identity.claims_received();
  ASSERT_EQ(received.size(), 1u);  // the retry's token request, and only that one
  EXPECT_EQ(received[0], kClaims);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace azkms
