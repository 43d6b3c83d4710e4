// NamedProviderBridge: the placeholder credentials and the in-process token answers that give
// named Azure KMS providers on-demand credentials. Independent of the libmongocrypt version.
#include "kms/named_provider_bridge.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "azkms/error.hpp"
#include "azkms/kms_providers.hpp"

namespace azkms {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// The placeholders as JSON, read back from the BSON the bridge appends.
json placeholders_of(const NamedProviderBridge& bridge) {
  bson_t doc = BSON_INITIALIZER;
  bridge.append_placeholders(&doc);
  char* text = bson_as_relaxed_extended_json(&doc, nullptr);
  json result = json::parse(text);
  bson_free(text);
  bson_destroy(&doc);
  return result;
}

HttpRequest token_request(const std::string& secret, std::string grant = "client_credentials") {
  HttpRequest request;
  request.method = "POST";
  request.url = "https://" + std::string(NamedProviderBridge::kPlaceholderHost) +
                "/azkms-named-provider/oauth2/v2.0/token";
  request.body =
      "client_id=azkms-prod&scope=https%3A%2F%2Fvault.azure.net%2F.default&"
      "client_secret=" +
      secret + "&grant_type=" + grant;
  return request;
}

AccessToken token_expiring_in(std::chrono::seconds life, SystemTime now, std::string value) {
  AccessToken token;
  token.token = Secret(std::move(value));
  token.expires_on = now + life;
  return token;
}

TEST(NamedProviderBridgeTest, PlaceholdersNameTheReservedDomainAndAFreshSecretEach) {
  NamedProviderBridge bridge({"azure:prod", "azure:analytics"});
  const json doc = placeholders_of(bridge);
  ASSERT_EQ(doc.size(), 2u);
  for (const auto& name : {"azure:prod", "azure:analytics"}) {
    const json& entry = doc.at(name);
    EXPECT_EQ(entry.at("identityPlatformEndpoint"), "login.azkms.invalid");
    EXPECT_TRUE(is_azure_provider_name(name));
    EXPECT_EQ(entry.at("clientSecret").get<std::string>().size(), 32u);
    EXPECT_FALSE(entry.at("tenantId").get<std::string>().empty());
    EXPECT_FALSE(entry.at("clientId").get<std::string>().empty());
  }
  EXPECT_NE(doc["azure:prod"]["clientSecret"], doc["azure:analytics"]["clientSecret"]);
  // Another session's bridge makes other secrets.
  const json other = placeholders_of(NamedProviderBridge({"azure:prod"}));
  EXPECT_NE(other["azure:prod"]["clientSecret"], doc["azure:prod"]["clientSecret"]);
}

TEST(NamedProviderBridgeTest, RecognisesOnlyThePlaceholderHost) {
  EXPECT_TRUE(NamedProviderBridge::is_placeholder_endpoint("login.azkms.invalid"));
  EXPECT_TRUE(NamedProviderBridge::is_placeholder_endpoint("login.azkms.invalid:443"));
  EXPECT_FALSE(NamedProviderBridge::is_placeholder_endpoint("login.azkms.invalid.example.com"));
  EXPECT_FALSE(NamedProviderBridge::is_placeholder_endpoint("login.microsoftonline.com:443"));
  EXPECT_FALSE(NamedProviderBridge::is_placeholder_endpoint("my-vault.vault.azure.net"));
}

TEST(NamedProviderBridgeTest, AttributesATokenRequestByItsSecret) {
  NamedProviderBridge bridge({"azure:prod", "azure:analytics"});
  const json doc = placeholders_of(bridge);
  EXPECT_EQ(bridge.provider_of(token_request(doc["azure:prod"]["clientSecret"])), "azure:prod");
  EXPECT_EQ(bridge.provider_of(token_request(doc["azure:analytics"]["clientSecret"])),
            "azure:analytics");
}

TEST(NamedProviderBridgeTest, RefusesAnythingThatIsNotOneOfItsTokenRequests) {
  NamedProviderBridge bridge({"azure:prod"});
  const std::string secret = placeholders_of(bridge)["azure:prod"]["clientSecret"];
  const std::string stranger =
      placeholders_of(NamedProviderBridge({"azure:prod"}))["azure:prod"]["clientSecret"];
  std::vector<HttpRequest> refused = {token_request(stranger), token_request(secret, "password"),
                                      token_request("")};
  HttpRequest get = token_request(secret);
  get.method = "GET";
  refused.push_back(get);
  HttpRequest other_path = token_request(secret);
  other_path.url = "https://login.azkms.invalid/keys/k/wrapkey";
  refused.push_back(other_path);
  HttpRequest no_secret = token_request(secret);
  no_secret.body = "grant_type=client_credentials";
  refused.push_back(no_secret);
  for (const auto& request : refused) {
    try {
      (void)bridge.provider_of(request);
      ADD_FAILURE() << "accepted: " << request.body;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kKms);
      EXPECT_NE(std::string(e.what()).find("not sent anywhere"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos) << e.what();
    }
  }
}

TEST(NamedProviderBridgeTest, AnswersWithAShortAnnouncedLifetime) {
  NamedProviderBridge bridge({"azure:prod"});
  const SystemTime now = std::chrono::system_clock::now();
  const HttpResponse answer =
      bridge.answer("azure:prod", token_expiring_in(3600s, now, "tok-long"), now);
  EXPECT_EQ(answer.status, 200);
  const json body = json::parse(answer.body);
  EXPECT_EQ(body.at("access_token"), "tok-long");
  EXPECT_EQ(body.at("token_type"), "Bearer");
  EXPECT_EQ(body.at("expires_in"), NamedProviderBridge::kMaxAnnouncedLifetime.count());

  // A token with less life left than that is announced with what it has.
  const json shorter =
      json::parse(bridge.answer("azure:prod", token_expiring_in(30s, now, "tok-short"), now).body);
  EXPECT_EQ(shorter.at("expires_in"), 30);
  // Never so short that libmongocrypt (which keeps it until expires_in - 5 s) finds it stale.
  const json floor =
      json::parse(bridge.answer("azure:prod", token_expiring_in(1s, now, "tok-floor"), now).body);
  EXPECT_GT(floor.at("expires_in").get<int>(), 5);
}

TEST(NamedProviderBridgeTest, KnowsWhichProviderATokenWentTo) {
  NamedProviderBridge bridge({"azure:prod", "azure:analytics"});
  const SystemTime now = std::chrono::system_clock::now();
  (void)bridge.answer("azure:prod", token_expiring_in(3600s, now, "tok-prod"), now);
  (void)bridge.answer("azure:analytics", token_expiring_in(3600s, now, "tok-analytics"), now);
  EXPECT_EQ(bridge.provider_of_token("tok-prod"), "azure:prod");
  EXPECT_EQ(bridge.provider_of_token("tok-analytics"), "azure:analytics");
  EXPECT_EQ(bridge.provider_of_token("tok-base"), std::nullopt);
}

TEST(NamedProviderBridgeTest, RemembersOnlyTheLatestFewTokensPerProvider) {
  NamedProviderBridge bridge({"azure:prod"});
  const SystemTime now = std::chrono::system_clock::now();
  for (int i = 0; i < 100; ++i) {
    (void)bridge.answer("azure:prod", token_expiring_in(3600s, now, "tok-" + std::to_string(i)),
                        now);
  }
  EXPECT_EQ(bridge.provider_of_token("tok-99"), "azure:prod");
  EXPECT_EQ(bridge.provider_of_token("tok-0"), std::nullopt);
}

}  // namespace
}  // namespace azkms
