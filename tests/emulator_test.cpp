// The emulator against its own contract: each endpoint's checks, selectors, response shapes,
// the Azure Arc challenge, Service Fabric's certificate, fault cases, inject() and counters.
// Every request goes to loopback, through cpp-httplib's client or libcurl.
#include <curl/curl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <iomanip>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "emulator.hpp"
#include "faults.hpp"
#include "slow_clients.hpp"

namespace azkms::emulator {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kVault = "https://vault.azure.net";

struct Reply {
  bool ok = false;  // a complete HTTP response arrived
  httplib::Error error = httplib::Error::Success;
  int status = 0;
  std::string body;
  httplib::Headers headers;

  [[nodiscard]] json parsed() const { return json::parse(body); }
  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

std::string query(std::initializer_list<std::pair<std::string, std::string>> params) {
  std::string out;
  for (const auto& [name, value] : params) {
    out += (out.empty() ? "?" : "&") + name + "=" + httplib::detail::encode_query_param(value);
  }
  return out;
}

std::string form(std::initializer_list<std::pair<std::string, std::string>> params) {
  return query(params).substr(1);
}

Reply to_reply(httplib::Result result) {
  Reply reply;
  reply.error = result.error();
  if (result) {
    reply.ok = true;
    reply.status = result->status;
    reply.body = result->body;
    reply.headers = result->headers;
  }
  return reply;
}

httplib::Client client_for(const Emulator& emulator, Endpoint endpoint,
                           std::chrono::seconds read_timeout = 10s) {
  httplib::Client client(emulator.base_url(endpoint));
  client.set_read_timeout(read_timeout);
  client.set_connection_timeout(5s);
  return client;
}

Reply get(const Emulator& emulator, Endpoint endpoint, const std::string& target,
          httplib::Headers headers = {}, std::chrono::seconds read_timeout = 10s) {
  auto client = client_for(emulator, endpoint, read_timeout);
  return to_reply(client.Get(target, headers));
}

Reply post(const Emulator& emulator, Endpoint endpoint, const std::string& target,
           const std::string& body, httplib::Headers headers = {},
           const std::string& content_type = "application/x-www-form-urlencoded") {
  auto client = client_for(emulator, endpoint);
  return to_reply(client.Post(target, headers, body, content_type));
}

const std::string kImdsPath = "/metadata/identity/oauth2/token";

Reply imds(const Emulator& emulator, const std::string& extra_query = "",
           httplib::Headers headers = {{"Metadata", "true"}}) {
  return get(emulator, Endpoint::kImds,
             kImdsPath + query({{"api-version", "2018-02-01"}, {"resource", kVault}}) + extra_query,
             std::move(headers));
}

Reply imds_case(const Emulator& emulator, const std::string& fault,
                std::chrono::seconds read_timeout = 10s) {
  return get(emulator, Endpoint::kImds,
             kImdsPath + query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
             {{"Metadata", "true"}, {"X-MongoDB-HTTP-TestParams", "case=" + fault}}, read_timeout);
}

Reply app_service(const Emulator& emulator, const std::string& extra_query = "",
                  const std::string& api_version = "2019-08-01") {
  return get(
      emulator, Endpoint::kAppService,
      "/msi/token" + query({{"api-version", api_version}, {"resource", kVault}}) + extra_query,
      {{"X-IDENTITY-HEADER", emulator.options().identity_header}});
}

Reply msi_2017(const Emulator& emulator, Endpoint endpoint, const std::string& extra_query = "") {
  return get(
      emulator, endpoint,
      "/msi/token" + query({{"api-version", "2017-09-01"}, {"resource", kVault}}) + extra_query,
      {{"secret", emulator.options().msi_secret}});
}

const Identity& system_identity(const Emulator& emulator) {
  for (const auto& identity : emulator.options().identities) {
    if (identity.system_assigned) return identity;
  }
  throw std::logic_error("no system identity");
}

std::vector<Identity> user_identities(const Emulator& emulator) {
  std::vector<Identity> out;
  for (const auto& identity : emulator.options().identities) {
    if (!identity.system_assigned) out.push_back(identity);
  }
  return out;
}

// The identity the ledger recorded for a token the emulator issued.
std::string ledger_client_id(Emulator& emulator, const std::string& token) {
  auto record = emulator.ledger().lookup(token);
  return record ? record->client_id : "<not issued>";
}

void expect_json_error(const Reply& reply, int status) {
  ASSERT_TRUE(reply.ok) << httplib::to_string(reply.error);
  EXPECT_EQ(reply.status, status) << reply.body;
  EXPECT_THAT(reply.header("Content-Type"), StartsWith("application/json"));
  const json body = reply.parsed();
  EXPECT_TRUE(body.contains("error") && body["error"].is_string()) << reply.body;
  EXPECT_TRUE(body.contains("error_description") && body["error_description"].is_string())
      << reply.body;
}

// One emulator shared by the suite (starting one generates an RSA key); every test clears the
// fault queues and compares counters as differences.
class EmulatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    emulator_ = new Emulator();
    emulator_->start();
  }
  static void TearDownTestSuite() {
    delete emulator_;
    emulator_ = nullptr;
  }
  void SetUp() override {
    emulator_->clear_faults();
    emulator_->set_response_delay(0ms);
    emulator_->set_token_lifetime(3600s);
  }
  Emulator& emu() { return *emulator_; }
  static Emulator* emulator_;
};
Emulator* EmulatorTest::emulator_ = nullptr;

// ---- options and identities -------------------------------------------------------------

TEST(EmulatorOptionsTest, RefusesEveryHostButLoopback) {
  for (const char* host : {"0.0.0.0", "localhost", "::", "192.168.1.10", "example.com", ""}) {
    Options options;
    options.host = host;
    EXPECT_THROW(Emulator{options}, std::invalid_argument) << host;
  }
  Options v6;
  v6.host = "::1";
  EXPECT_NO_THROW(Emulator{v6});
}

TEST(EmulatorOptionsTest, RefusesIdentitiesWithoutClientIdOrDuplicated) {
  Options missing;
  missing.identities = {Identity{true, "", "object", ""}};
  EXPECT_THROW(Emulator{missing}, std::invalid_argument);
  Options duplicated;
  duplicated.identities = {Identity{true, "same", "a", ""}, Identity{false, "same", "b", "/x"}};
  EXPECT_THROW(Emulator{duplicated}, std::invalid_argument);
  Options unknown_ml_default;
  unknown_ml_default.azure_ml_default_client_id = "nobody";
  EXPECT_THROW(Emulator{unknown_ml_default}, std::invalid_argument);
}

TEST(EmulatorOptionsTest, DefaultIdentitiesAreOneSystemAndTwoUserAssigned) {
  const auto identities = default_identities();
  ASSERT_EQ(identities.size(), 3u);
  EXPECT_TRUE(identities[0].system_assigned);
  const std::regex guid("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
  const std::regex arm_id(
      "^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/"
      "Microsoft\\.ManagedIdentity/userAssignedIdentities/[^/]+$");
  for (std::size_t i = 0; i < identities.size(); ++i) {
    EXPECT_TRUE(std::regex_match(identities[i].client_id, guid)) << identities[i].client_id;
    EXPECT_TRUE(std::regex_match(identities[i].object_id, guid)) << identities[i].object_id;
    if (i > 0) {
      EXPECT_FALSE(identities[i].system_assigned);
      EXPECT_TRUE(std::regex_match(identities[i].resource_id, arm_id)) << identities[i].resource_id;
    }
  }
  EXPECT_NE(identities[1].client_id, identities[2].client_id);
  EXPECT_NE(identities[1].resource_id, identities[2].resource_id);
}

TEST(EmulatorOptionsTest, SecretsAreRandomWhenUnset) {
  Emulator a;
  Emulator b;
  EXPECT_FALSE(a.options().identity_header.empty());
  EXPECT_FALSE(a.options().msi_secret.empty());
  EXPECT_NE(a.options().identity_header, b.options().identity_header);
  EXPECT_NE(a.options().msi_secret, b.options().msi_secret);
}

TEST(EmulatorOptionsTest, EndpointNamesRoundTrip) {
  for (Endpoint endpoint : kAllEndpoints) {
    EXPECT_EQ(parse_endpoint(to_string(endpoint)), endpoint);
    EXPECT_FALSE(display_name(endpoint).empty());
  }
  EXPECT_FALSE(parse_endpoint("kubernetes").has_value());
}

TEST(EmulatorOptionsTest, TestParamsHeaderParsing) {
  EXPECT_EQ(test_params_case("case=slow"), "slow");
  EXPECT_EQ(test_params_case("x=1&case=404"), "404");
  EXPECT_EQ(test_params_case("case=giant; other=2"), "giant");
  EXPECT_FALSE(test_params_case("cases=slow").has_value());
  EXPECT_FALSE(test_params_case("").has_value());
}

TEST(EmulatorOptionsTest, NotStartedHasNoAddresses) {
  Emulator emulator;
  EXPECT_THROW((void)emulator.base_url(Endpoint::kImds), std::logic_error);
  EXPECT_THROW((void)emulator.port(Endpoint::kImds), std::logic_error);
}

TEST_F(EmulatorTest, EveryEndpointHasItsOwnLoopbackPort) {
  std::set<int> ports;
  for (Endpoint endpoint : kAllEndpoints) {
    const int port = emu().port(endpoint);
    EXPECT_GT(port, 0);
    ports.insert(port);
    const std::string scheme = endpoint == Endpoint::kServiceFabric ? "https" : "http";
    EXPECT_EQ(emu().base_url(endpoint), scheme + "://127.0.0.1:" + std::to_string(port));
  }
  EXPECT_EQ(ports.size(), kAllEndpoints.size());
}

TEST_F(EmulatorTest, ClientEnvironmentPerEndpoint) {
  using Env = std::map<std::string, std::string>;
  const auto& o = emu().options();
  EXPECT_EQ(emu().client_environment(Endpoint::kImds),
            (Env{{"AZURE_POD_IDENTITY_AUTHORITY_HOST", emu().base_url(Endpoint::kImds)}}));
  EXPECT_EQ(emu().client_environment(Endpoint::kAppService),
            (Env{{"IDENTITY_ENDPOINT", emu().base_url(Endpoint::kAppService) + "/msi/token"},
                 {"IDENTITY_HEADER", o.identity_header}}));
  EXPECT_EQ(emu().client_environment(Endpoint::kAppService2017),
            (Env{{"MSI_ENDPOINT", emu().base_url(Endpoint::kAppService2017) + "/msi/token"},
                 {"MSI_SECRET", o.msi_secret}}));
  EXPECT_EQ(emu().client_environment(Endpoint::kAzureMl),
            (Env{{"MSI_ENDPOINT", emu().base_url(Endpoint::kAzureMl) + "/msi/token"},
                 {"MSI_SECRET", o.msi_secret}}));
  EXPECT_EQ(emu().client_environment(Endpoint::kCloudShell),
            (Env{{"MSI_ENDPOINT", emu().base_url(Endpoint::kCloudShell) + "/oauth2/token"}}));
  EXPECT_EQ(emu().client_environment(Endpoint::kAzureArc),
            (Env{{"IDENTITY_ENDPOINT", emu().base_url(Endpoint::kAzureArc) + kImdsPath},
                 {"IMDS_ENDPOINT", emu().base_url(Endpoint::kAzureArc)},
                 {"AZKMS_ARC_TOKEN_DIRECTORY", emu().arc_key_directory()}}));
  EXPECT_EQ(emu().client_environment(Endpoint::kServiceFabric),
            (Env{{"IDENTITY_ENDPOINT", emu().base_url(Endpoint::kServiceFabric) + kImdsPath},
                 {"IDENTITY_HEADER", o.identity_header},
                 {"IDENTITY_SERVER_THUMBPRINT", emu().service_fabric_thumbprint()},
                 {"AZKMS_SERVICE_FABRIC_CERT_FILE", emu().service_fabric_certificate_file()}}));
  const Env workload = emu().client_environment(Endpoint::kWorkloadIdentity);
  EXPECT_EQ(workload.at("AZURE_AUTHORITY_HOST"), emu().base_url(Endpoint::kWorkloadIdentity) + "/");
  EXPECT_EQ(workload.at("AZURE_TENANT_ID"), o.tenant_id);
  EXPECT_EQ(workload.at("AZURE_CLIENT_ID"), user_identities(emu()).at(0).client_id);
  std::ifstream file(workload.at("AZURE_FEDERATED_TOKEN_FILE"));
  std::string contents((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(contents, emu().federated_token());
  EXPECT_EQ(std::count(contents.begin(), contents.end(), '.'), 2) << "a JWT has three parts";
}

// ---- IMDS -----------------------------------------------------------------------------

TEST_F(EmulatorTest, ImdsIssuesTheSystemIdentityTokenInItsOwnShape) {
  const auto before = emu().ledger().issued_count();
  const Reply reply = imds(emu());
  ASSERT_TRUE(reply.ok);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  for (const char* field : {"access_token", "client_id", "expires_in", "expires_on",
                            "ext_expires_in", "not_before", "resource", "token_type"}) {
    ASSERT_TRUE(body.contains(field)) << field;
    EXPECT_TRUE(body[field].is_string()) << field << " must be a string, as IMDS sends it";
  }
  EXPECT_EQ(body["token_type"], "Bearer");
  EXPECT_EQ(body["resource"], kVault);
  EXPECT_EQ(body["expires_in"], "3600");
  EXPECT_EQ(body["client_id"], system_identity(emu()).client_id);
  const long long expires_on = std::stoll(body["expires_on"].get<std::string>());
  const long long not_before = std::stoll(body["not_before"].get<std::string>());
  EXPECT_EQ(expires_on - not_before, 3600);
  EXPECT_EQ(emu().ledger().issued_count(), before + 1);
  auto record = emu().ledger().lookup(body["access_token"]);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->client_id, system_identity(emu()).client_id);
  EXPECT_EQ(record->resource, kVault);
}

TEST_F(EmulatorTest, ImdsDemandsTheMetadataHeader) {
  expect_json_error(imds(emu(), "", {}), 400);
  expect_json_error(imds(emu(), "", {{"Metadata", "True"}}), 400);
  expect_json_error(imds(emu(), "", {{"Metadata", "false"}}), 400);
}

TEST_F(EmulatorTest, ImdsRefusesProxiedRequests) {
  expect_json_error(imds(emu(), "", {{"Metadata", "true"}, {"X-Forwarded-For", "10.0.0.1"}}), 400);
}

TEST_F(EmulatorTest, ImdsChecksApiVersionAndResource) {
  const httplib::Headers metadata = {{"Metadata", "true"}};
  expect_json_error(
      get(emu(), Endpoint::kImds, kImdsPath + query({{"resource", kVault}}), metadata), 400);
  expect_json_error(
      get(emu(), Endpoint::kImds,
          kImdsPath + query({{"api-version", "2019-08-01"}, {"resource", kVault}}), metadata),
      400);
  expect_json_error(
      get(emu(), Endpoint::kImds, kImdsPath + query({{"api-version", "2018-02-01"}}), metadata),
      400);
  expect_json_error(
      get(emu(), Endpoint::kImds,
          kImdsPath + query({{"api-version", "2018-02-01"}, {"resource", ""}}), metadata),
      400);
}

TEST_F(EmulatorTest, ImdsSelectsUserAssignedIdentitiesByEachSelector) {
  for (const Identity& identity : user_identities(emu())) {
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{{"client_id", identity.client_id},
                                                          {"object_id", identity.object_id},
                                                          {"msi_res_id", identity.resource_id}}) {
      const Reply reply = imds(emu(), query({{name, value}}).replace(0, 1, "&"));
      ASSERT_EQ(reply.status, 200) << name << ": " << reply.body;
      const json body = reply.parsed();
      EXPECT_EQ(body["client_id"], identity.client_id) << name;
      EXPECT_EQ(ledger_client_id(emu(), body["access_token"]), identity.client_id) << name;
    }
  }
}

TEST_F(EmulatorTest, ImdsRefusesUnknownAndMultipleSelectors) {
  const Identity user = user_identities(emu()).at(0);
  const Reply unknown = imds(emu(), "&client_id=00000000-0000-0000-0000-000000000000");
  expect_json_error(unknown, 400);
  EXPECT_THAT(unknown.body, HasSubstr("Identity not found"));
  expect_json_error(imds(emu(), "&client_id=" + user.client_id + "&object_id=" + user.object_id),
                    400);
}

TEST_F(EmulatorTest, ImdsIgnoresOtherEndpointsSelectorNames) {
  // mi_res_id and principal_id are App Service names; IMDS does not know them.
  const Identity user = user_identities(emu()).at(0);
  const Reply reply = imds(emu(), "&principal_id=" + user.object_id);
  ASSERT_EQ(reply.status, 200);
  EXPECT_EQ(reply.parsed()["client_id"], system_identity(emu()).client_id);
}

TEST_F(EmulatorTest, ImdsOnlyServesGet) {
  const Reply reply = post(emu(), Endpoint::kImds,
                           kImdsPath + query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
                           "", {{"Metadata", "true"}});
  expect_json_error(reply, 405);
}

// @azure/identity appends "/" to the token path when AZURE_POD_IDENTITY_AUTHORITY_HOST is set.
TEST_F(EmulatorTest, ImdsAcceptsTheTokenPathWithATrailingSlash) {
  const Reply reply =
      get(emu(), Endpoint::kImds,
          kImdsPath + "/" + query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
          {{"Metadata", "true"}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(ledger_client_id(emu(), reply.parsed()["access_token"]),
            system_identity(emu()).client_id);
  // The slash is all: a longer path is still unknown.
  expect_json_error(
      get(emu(), Endpoint::kImds,
          kImdsPath + "/x" + query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
          {{"Metadata", "true"}}),
      404);
}

// Every answer that is not a token is a JSON error, unknown paths and methods included.
TEST_F(EmulatorTest, EveryEndpointAnswersUnknownPathsWithAJsonError) {
  for (Endpoint endpoint : kAllEndpoints) {
    if (endpoint == Endpoint::kServiceFabric) continue;  // HTTPS: covered with curl below
    SCOPED_TRACE(to_string(endpoint));
    expect_json_error(get(emu(), endpoint, "/no/such/path"), 404);
    expect_json_error(post(emu(), endpoint, "/no/such/path", "a=b"), 404);
    auto client = client_for(emu(), endpoint);
    expect_json_error(to_reply(client.Delete("/")), 404);
  }
}

TEST(EmulatorIdentitiesTest, ImdsWithoutSystemIdentityServesTheOnlyUserAssignedOne) {
  Options options;
  options.identities = {Identity{false, "only-client", "only-object", "/subscriptions/x/only"}};
  Emulator emulator(options);
  emulator.start();
  const Reply reply = imds(emulator);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.parsed()["client_id"], "only-client");
}

TEST(EmulatorIdentitiesTest, ImdsWithSeveralUserAssignedAndNoSelectorIsAnError) {
  Options options;
  options.identities = {Identity{false, "a", "oa", "/ra"}, Identity{false, "b", "ob", "/rb"}};
  Emulator emulator(options);
  emulator.start();
  expect_json_error(imds(emulator), 400);
  const Reply chosen = imds(emulator, "&msi_res_id=/rb");
  ASSERT_EQ(chosen.status, 200) << chosen.body;
  EXPECT_EQ(chosen.parsed()["client_id"], "b");
}

// ---- App Service 2019 -------------------------------------------------------------------

TEST_F(EmulatorTest, AppServiceShapeHasEpochStringAndNoExpiresIn) {
  const Reply reply = app_service(emu());
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  EXPECT_FALSE(body.contains("expires_in"));
  ASSERT_TRUE(body["expires_on"].is_string());
  EXPECT_TRUE(std::regex_match(body["expires_on"].get<std::string>(), std::regex("^[0-9]{10}$")));
  const long long now = std::time(nullptr);
  const long long expires_on = std::stoll(body["expires_on"].get<std::string>());
  EXPECT_GT(expires_on, now + 3000);
  EXPECT_LE(expires_on, now + 3700);
  EXPECT_EQ(body["token_type"], "Bearer");
  EXPECT_EQ(body["resource"], kVault);
  EXPECT_EQ(body["client_id"], system_identity(emu()).client_id);
  EXPECT_TRUE(emu().ledger().lookup(body["access_token"]).has_value());
}

TEST_F(EmulatorTest, AppServiceDemandsTheIdentityHeader) {
  const std::string target =
      "/msi/token" + query({{"api-version", "2019-08-01"}, {"resource", kVault}});
  expect_json_error(get(emu(), Endpoint::kAppService, target), 401);
  expect_json_error(get(emu(), Endpoint::kAppService, target, {{"X-IDENTITY-HEADER", "wrong"}}),
                    401);
  // The 2017 header name is not accepted in its place.
  expect_json_error(
      get(emu(), Endpoint::kAppService, target, {{"secret", emu().options().identity_header}}),
      401);
  const Reply refused = get(emu(), Endpoint::kAppService, target, {{"X-IDENTITY-HEADER", "x"}});
  EXPECT_THAT(refused.body, Not(HasSubstr(emu().options().identity_header)));
}

TEST_F(EmulatorTest, AppServiceChecksApiVersionAndResource) {
  expect_json_error(app_service(emu(), "", "2017-09-01"), 400);
  expect_json_error(app_service(emu(), "", "2018-02-01"), 400);
  expect_json_error(
      get(emu(), Endpoint::kAppService, "/msi/token" + query({{"api-version", "2019-08-01"}}),
          {{"X-IDENTITY-HEADER", emu().options().identity_header}}),
      400);
}

TEST_F(EmulatorTest, AppServiceSelectsByItsOwnParameterNames) {
  const Identity user = user_identities(emu()).at(1);
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{{"client_id", user.client_id},
                                                        {"principal_id", user.object_id},
                                                        {"object_id", user.object_id},
                                                        {"mi_res_id", user.resource_id}}) {
    const Reply reply = app_service(emu(), query({{name, value}}).replace(0, 1, "&"));
    ASSERT_EQ(reply.status, 200) << name << ": " << reply.body;
    EXPECT_EQ(reply.parsed()["client_id"], user.client_id) << name;
  }
  // msi_res_id is the IMDS name: App Service ignores it and serves the system identity.
  const Reply imds_name = app_service(emu(), "&msi_res_id=" + user.resource_id);
  ASSERT_EQ(imds_name.status, 200);
  EXPECT_EQ(imds_name.parsed()["client_id"], system_identity(emu()).client_id);
  expect_json_error(app_service(emu(), "&client_id=unknown"), 400);
  expect_json_error(
      app_service(emu(), "&client_id=" + user.client_id + "&mi_res_id=" + user.resource_id), 400);
}

// ---- App Service 2017 and Azure ML ------------------------------------------------------

TEST_F(EmulatorTest, AppService2017UsesTheLinuxDateFormat) {
  const Reply reply = msi_2017(emu(), Endpoint::kAppService2017);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  EXPECT_FALSE(body.contains("expires_in"));
  const std::string expires_on = body["expires_on"];
  ASSERT_TRUE(
      std::regex_match(expires_on, std::regex(R"(^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2} \+00:00$)")))
      << expires_on;
  std::tm parsed{};
  std::istringstream in(expires_on);
  in >> std::get_time(&parsed, "%m/%d/%Y %H:%M:%S");
  ASSERT_FALSE(in.fail());
  const long long when = timegm(&parsed);
  const long long now = std::time(nullptr);
  EXPECT_GT(when, now + 3000);
  EXPECT_LE(when, now + 3700);
}

TEST_F(EmulatorTest, AppService2017DemandsSecretAndApiVersion) {
  const std::string target =
      "/msi/token" + query({{"api-version", "2017-09-01"}, {"resource", kVault}});
  expect_json_error(get(emu(), Endpoint::kAppService2017, target), 401);
  expect_json_error(get(emu(), Endpoint::kAppService2017, target, {{"secret", "wrong"}}), 401);
  expect_json_error(get(emu(), Endpoint::kAppService2017,
                        "/msi/token" + query({{"api-version", "2019-08-01"}, {"resource", kVault}}),
                        {{"secret", emu().options().msi_secret}}),
                    400);
}

TEST_F(EmulatorTest, AppService2017SelectsOnlyByClientidAndIgnoresClientUnderscoreId) {
  const Identity user = user_identities(emu()).at(0);
  const Reply chosen = msi_2017(emu(), Endpoint::kAppService2017, "&clientid=" + user.client_id);
  ASSERT_EQ(chosen.status, 200) << chosen.body;
  EXPECT_EQ(ledger_client_id(emu(), chosen.parsed()["access_token"]), user.client_id);
  // As the real endpoint: client_id is silently ignored and the system identity answers.
  const Reply wrong_name =
      msi_2017(emu(), Endpoint::kAppService2017, "&client_id=" + user.client_id);
  ASSERT_EQ(wrong_name.status, 200) << wrong_name.body;
  EXPECT_EQ(ledger_client_id(emu(), wrong_name.parsed()["access_token"]),
            system_identity(emu()).client_id);
  expect_json_error(msi_2017(emu(), Endpoint::kAppService2017, "&clientid=unknown"), 400);
}

TEST_F(EmulatorTest, AzureMlAnswersWithExpiresInNumberAndEpochString) {
  const Reply reply = msi_2017(emu(), Endpoint::kAzureMl);
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  EXPECT_TRUE(body["expires_in"].is_number_integer());
  EXPECT_EQ(body["expires_in"], 3600);
  EXPECT_TRUE(body["expires_on"].is_string());
  EXPECT_EQ(ledger_client_id(emu(), body["access_token"]), system_identity(emu()).client_id);
  expect_json_error(
      get(emu(), Endpoint::kAzureMl,
          "/msi/token" + query({{"api-version", "2017-09-01"}, {"resource", kVault}})),
      401);
}

TEST(EmulatorIdentitiesTest, AzureMlServesTheConfiguredDefaultIdentity) {
  Options options;
  const Identity user = default_identities().at(2);
  options.azure_ml_default_client_id = user.client_id;
  Emulator emulator(options);
  emulator.start();
  EXPECT_EQ(emulator.client_environment(Endpoint::kAzureMl).at("DEFAULT_IDENTITY_CLIENT_ID"),
            user.client_id);
  const Reply reply = msi_2017(emulator, Endpoint::kAzureMl);
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(ledger_client_id(emulator, reply.parsed()["access_token"]), user.client_id);
  const Identity other = default_identities().at(1);
  const Reply chosen = msi_2017(emulator, Endpoint::kAzureMl, "&clientid=" + other.client_id);
  ASSERT_EQ(chosen.status, 200) << chosen.body;
  EXPECT_EQ(ledger_client_id(emulator, chosen.parsed()["access_token"]), other.client_id);
}

// ---- Cloud Shell ------------------------------------------------------------------------

TEST_F(EmulatorTest, CloudShellTakesAFormPost) {
  const Reply reply = post(emu(), Endpoint::kCloudShell, "/oauth2/token",
                           form({{"resource", kVault}}), {{"Metadata", "true"}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  EXPECT_TRUE(body["expires_in"].is_number_integer());
  EXPECT_EQ(body["resource"], kVault);
  EXPECT_EQ(ledger_client_id(emu(), body["access_token"]), system_identity(emu()).client_id);
}

TEST_F(EmulatorTest, CloudShellChecks) {
  expect_json_error(
      post(emu(), Endpoint::kCloudShell, "/oauth2/token", form({{"resource", kVault}})), 400);
  expect_json_error(get(emu(), Endpoint::kCloudShell,
                        "/oauth2/token" + query({{"resource", kVault}}), {{"Metadata", "true"}}),
                    405);
  // The resource belongs in the body, not the query.
  expect_json_error(
      post(emu(), Endpoint::kCloudShell, "/oauth2/token" + query({{"resource", kVault}}), "",
           {{"Metadata", "true"}}),
      400);
  const Identity user = user_identities(emu()).at(0);
  expect_json_error(
      post(emu(), Endpoint::kCloudShell, "/oauth2/token",
           form({{"resource", kVault}, {"client_id", user.client_id}}), {{"Metadata", "true"}}),
      400);
}

// ---- Azure Arc --------------------------------------------------------------------------

struct ArcChallenge {
  Reply reply;
  std::string path;
};

ArcChallenge arc_challenge(const Emulator& emulator, httplib::Headers headers = {},
                           const std::string& api_version = "2020-06-01") {
  headers.emplace("Metadata", "true");
  ArcChallenge challenge;
  challenge.reply =
      get(emulator, Endpoint::kAzureArc,
          kImdsPath + query({{"api-version", api_version}, {"resource", kVault}}), headers);
  const std::string header = challenge.reply.header("WWW-Authenticate");
  const std::string prefix = "Basic realm=";
  if (header.rfind(prefix, 0) == 0) challenge.path = header.substr(prefix.size());
  return challenge;
}

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

TEST_F(EmulatorTest, ArcChallengeThenToken) {
  for (const std::string version : {"2019-11-01", "2020-06-01"}) {
    const ArcChallenge challenge = arc_challenge(emu(), {}, version);
    expect_json_error(challenge.reply, 401);
    ASSERT_FALSE(challenge.path.empty()) << challenge.reply.header("WWW-Authenticate");
    const fs::path key_file(challenge.path);
    EXPECT_EQ(key_file.parent_path(), fs::path(emu().arc_key_directory()));
    EXPECT_EQ(key_file.extension(), ".key");
    struct stat info {};
    ASSERT_EQ(::stat(challenge.path.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);
    const std::string key = read_file(challenge.path);
    EXPECT_GT(key.size(), 16u);
    EXPECT_LE(key.size(), 4096u);

    const Reply token = get(emu(), Endpoint::kAzureArc,
                            kImdsPath + query({{"api-version", version}, {"resource", kVault}}),
                            {{"Metadata", "true"}, {"Authorization", "Basic " + key}});
    ASSERT_EQ(token.status, 200) << token.body;
    const json body = token.parsed();
    EXPECT_TRUE(body["expires_in"].is_string());
    EXPECT_EQ(body["client_id"], system_identity(emu()).client_id);
    EXPECT_TRUE(emu().ledger().lookup(body["access_token"]).has_value());
  }
}

TEST_F(EmulatorTest, ArcRefusesAWrongKeyWithANewChallenge) {
  const ArcChallenge first = arc_challenge(emu());
  ASSERT_FALSE(first.path.empty());
  const ArcChallenge wrong = arc_challenge(emu(), {{"Authorization", "Basic not-the-key"}});
  expect_json_error(wrong.reply, 401);
  EXPECT_FALSE(wrong.path.empty());
  EXPECT_NE(wrong.path, first.path);
  const ArcChallenge not_basic =
      arc_challenge(emu(), {{"Authorization", "Bearer " + read_file(first.path)}});
  EXPECT_EQ(not_basic.reply.status, 401);
}

TEST_F(EmulatorTest, ArcChecksHeaderAndApiVersion) {
  expect_json_error(get(emu(), Endpoint::kAzureArc,
                        kImdsPath + query({{"api-version", "2020-06-01"}, {"resource", kVault}})),
                    400);
  expect_json_error(arc_challenge(emu(), {}, "2018-02-01").reply, 400);
}

TEST_F(EmulatorTest, ArcSelectorIsHonouredAndEchoed) {
  const Identity user = user_identities(emu()).at(0);
  const std::string target =
      kImdsPath +
      query({{"api-version", "2020-06-01"}, {"resource", kVault}, {"client_id", user.client_id}});
  const Reply challenge = get(emu(), Endpoint::kAzureArc, target, {{"Metadata", "true"}});
  ASSERT_EQ(challenge.status, 401);
  const std::string path = challenge.header("WWW-Authenticate").substr(12);
  const Reply token = get(emu(), Endpoint::kAzureArc, target,
                          {{"Metadata", "true"}, {"Authorization", "Basic " + read_file(path)}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(token.parsed()["client_id"], user.client_id);
}

// Current Arc agents serve user-assigned identities; current clients (MSAL Go, msal-node 5)
// send any of the three selectors and accept only an answer that names the identity asked for.
TEST_F(EmulatorTest, ArcServesUserAssignedIdentitiesByEachSelectorAndEchoesThem) {
  for (const Identity& identity : user_identities(emu())) {
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{{"client_id", identity.client_id},
                                                          {"object_id", identity.object_id},
                                                          {"msi_res_id", identity.resource_id}}) {
      SCOPED_TRACE(name);
      const std::string target =
          kImdsPath + query({{"api-version", "2020-06-01"}, {"resource", kVault}, {name, value}});
      const Reply challenge = get(emu(), Endpoint::kAzureArc, target, {{"Metadata", "true"}});
      ASSERT_EQ(challenge.status, 401);
      const std::string path = challenge.header("WWW-Authenticate").substr(12);
      const Reply token =
          get(emu(), Endpoint::kAzureArc, target,
              {{"Metadata", "true"}, {"Authorization", "Basic " + read_file(path)}});
      ASSERT_EQ(token.status, 200) << token.body;
      EXPECT_EQ(token.parsed()["client_id"], identity.client_id);
      EXPECT_EQ(token.parsed()["object_id"], identity.object_id);
      EXPECT_EQ(token.parsed()["msi_res_id"], identity.resource_id);
      EXPECT_EQ(ledger_client_id(emu(), token.parsed()["access_token"]), identity.client_id);
    }
  }
}

TEST_F(EmulatorTest, ArcRefusesAnUnknownOrAmbiguousIdentityAfterTheChallenge) {
  const Identity user = user_identities(emu()).at(0);
  for (const std::string& extra :
       std::vector<std::string>{"&client_id=00000000-0000-0000-0000-000000000000",
                                "&msi_res_id=/subscriptions/x/no-such-identity",
                                "&client_id=" + user.client_id + "&object_id=" + user.object_id}) {
    SCOPED_TRACE(extra);
    const std::string target =
        kImdsPath + query({{"api-version", "2020-06-01"}, {"resource", kVault}}) + extra;
    const Reply challenge = get(emu(), Endpoint::kAzureArc, target, {{"Metadata", "true"}});
    ASSERT_EQ(challenge.status, 401) << "the challenge comes first";
    const std::string path = challenge.header("WWW-Authenticate").substr(12);
    const Reply refused =
        get(emu(), Endpoint::kAzureArc, target,
            {{"Metadata", "true"}, {"Authorization", "Basic " + read_file(path)}});
    expect_json_error(refused, 400);
  }
}

TEST_F(EmulatorTest, ArcChallengeFaults) {
  const auto with_case = [](const std::string& name) {
    return httplib::Headers{{"X-MongoDB-HTTP-TestParams", "case=" + name}};
  };
  const ArcChallenge no_realm = arc_challenge(emu(), with_case("arc-no-realm"));
  EXPECT_EQ(no_realm.reply.status, 401);
  EXPECT_FALSE(no_realm.reply.headers.count("WWW-Authenticate"));

  const ArcChallenge bad_realm = arc_challenge(emu(), with_case("arc-bad-realm"));
  EXPECT_EQ(bad_realm.reply.status, 401);
  EXPECT_EQ(bad_realm.reply.header("WWW-Authenticate"), "Basic realm");

  const ArcChallenge outside = arc_challenge(emu(), with_case("arc-outside-dir"));
  ASSERT_FALSE(outside.path.empty());
  EXPECT_NE(fs::path(outside.path).parent_path(), fs::path(emu().arc_key_directory()));
  EXPECT_TRUE(fs::exists(outside.path));

  const ArcChallenge not_key = arc_challenge(emu(), with_case("arc-not-key"));
  ASSERT_FALSE(not_key.path.empty());
  EXPECT_EQ(fs::path(not_key.path).parent_path(), fs::path(emu().arc_key_directory()));
  EXPECT_NE(fs::path(not_key.path).extension(), ".key");

  const ArcChallenge big = arc_challenge(emu(), with_case("arc-big-key"));
  ASSERT_FALSE(big.path.empty());
  EXPECT_EQ(fs::path(big.path).extension(), ".key");
  EXPECT_GT(fs::file_size(big.path), 4096u);

  // Injected challenge faults apply to the challenge, not to the token request.
  emu().inject(Endpoint::kAzureArc, "arc-no-realm");
  EXPECT_FALSE(arc_challenge(emu()).reply.headers.count("WWW-Authenticate"));
  EXPECT_FALSE(arc_challenge(emu()).path.empty());
}

TEST_F(EmulatorTest, ArcTokenFaultsApplyAfterTheChallenge) {
  emu().inject(Endpoint::kAzureArc, "500");
  const ArcChallenge challenge = arc_challenge(emu());
  ASSERT_FALSE(challenge.path.empty()) << "the challenge does not consume a token fault";
  const Reply faulted =
      get(emu(), Endpoint::kAzureArc,
          kImdsPath + query({{"api-version", "2020-06-01"}, {"resource", kVault}}),
          {{"Metadata", "true"}, {"Authorization", "Basic " + read_file(challenge.path)}});
  expect_json_error(faulted, 500);
}

// ---- Service Fabric ---------------------------------------------------------------------

struct CurlReply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string peer_certificate_pem;
  curl_off_t content_length = -1;
};

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

CurlReply curl_get(const std::string& url, const std::vector<std::string>& headers, long timeout_ms,
                   const std::string& trusted_pem = "") {
  CurlReply reply;
  CURL* curl = curl_easy_init();
  curl_blob blob{const_cast<char*>(trusted_pem.data()), trusted_pem.size(), CURL_BLOB_COPY};
  curl_slist* list = nullptr;
  for (const auto& header : headers) list = curl_slist_append(list, header.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_CERTINFO, 1L);
  if (!trusted_pem.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  reply.code = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
  curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &reply.content_length);
  curl_certinfo* info = nullptr;
  if (curl_easy_getinfo(curl, CURLINFO_CERTINFO, &info) == CURLE_OK && info != nullptr &&
      info->num_of_certs > 0) {
    for (curl_slist* item = info->certinfo[0]; item != nullptr; item = item->next) {
      const std::string line = item->data;
      if (line.rfind("Cert:", 0) == 0) reply.peer_certificate_pem = line.substr(5);
    }
  }
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return reply;
}

CurlReply curl_service_fabric(const Emulator& emulator, const std::string& target,
                              const std::vector<std::string>& headers, bool trust_certificate) {
  return curl_get(emulator.base_url(Endpoint::kServiceFabric) + target, headers, 10'000,
                  trust_certificate ? emulator.service_fabric_certificate_pem() : "");
}

std::string sha1_thumbprint(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return "<unparseable>";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  X509_digest(cert, EVP_sha1(), digest, &length);
  X509_free(cert);
  std::ostringstream out;
  for (unsigned int i = 0; i < length; ++i) {
    out << std::uppercase << std::hex << std::setw(2) << std::setfill('0') << int{digest[i]};
  }
  return out.str();
}

TEST_F(EmulatorTest, ServiceFabricServesHttpsWithTheAdvertisedThumbprint) {
  const std::string thumbprint = emu().service_fabric_thumbprint();
  EXPECT_TRUE(std::regex_match(thumbprint, std::regex("^[0-9A-F]{40}$"))) << thumbprint;
  EXPECT_EQ(sha1_thumbprint(emu().service_fabric_certificate_pem()), thumbprint);

  const std::string target =
      kImdsPath + query({{"api-version", "2019-07-01-preview"}, {"resource", kVault}});
  const CurlReply reply =
      curl_service_fabric(emu(), target, {"Secret: " + emu().options().identity_header}, true);
  ASSERT_EQ(reply.code, CURLE_OK) << curl_easy_strerror(reply.code);
  ASSERT_EQ(reply.status, 200) << reply.body;
  ASSERT_FALSE(reply.peer_certificate_pem.empty());
  EXPECT_EQ(sha1_thumbprint(reply.peer_certificate_pem), thumbprint);
  const json body = json::parse(reply.body);
  EXPECT_TRUE(body["expires_on"].is_number_integer());
  EXPECT_EQ(body["token_type"], "Bearer");
  EXPECT_EQ(ledger_client_id(emu(), body["access_token"]), system_identity(emu()).client_id);

  // Self-signed: a client with the system trust store refuses it.
  const CurlReply untrusted =
      curl_service_fabric(emu(), target, {"Secret: " + emu().options().identity_header}, false);
  EXPECT_EQ(untrusted.code, CURLE_PEER_FAILED_VERIFICATION);
}

// Clients that do not pin by thumbprint trust the certificate from a file.
TEST_F(EmulatorTest, ServiceFabricCertificateIsWrittenToTheFileItsVariableNames) {
  const auto env = emu().client_environment(Endpoint::kServiceFabric);
  const std::string file = env.at("AZKMS_SERVICE_FABRIC_CERT_FILE");
  EXPECT_EQ(file, emu().service_fabric_certificate_file());
  const std::string pem = read_file(file);
  EXPECT_EQ(pem, emu().service_fabric_certificate_pem());
  EXPECT_EQ(sha1_thumbprint(pem), env.at("IDENTITY_SERVER_THUMBPRINT"));
  const std::string target =
      kImdsPath + query({{"api-version", "2019-07-01-preview"}, {"resource", kVault}});
  const CurlReply reply = curl_get(emu().base_url(Endpoint::kServiceFabric) + target,
                                   {"Secret: " + emu().options().identity_header}, 10'000, pem);
  ASSERT_EQ(reply.code, CURLE_OK) << curl_easy_strerror(reply.code);
  EXPECT_EQ(reply.status, 200) << reply.body;
  // The trust bundle print-env names covers it too, and unknown paths answer JSON errors.
  const CurlReply unknown = curl_get(emu().base_url(Endpoint::kServiceFabric) + "/no/such/path", {},
                                     10'000, read_file(emu().trust_bundle_file()));
  ASSERT_EQ(unknown.code, CURLE_OK) << curl_easy_strerror(unknown.code);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_TRUE(json::parse(unknown.body).contains("error")) << unknown.body;
}

TEST_F(EmulatorTest, ServiceFabricChecks) {
  const std::string secret = "Secret: " + emu().options().identity_header;
  const auto target = [](const std::string& version, const std::string& extra = "") {
    return kImdsPath + query({{"api-version", version}, {"resource", kVault}}) + extra;
  };
  EXPECT_EQ(curl_service_fabric(emu(), target("2019-07-01-preview"), {}, true).status, 401);
  EXPECT_EQ(curl_service_fabric(emu(), target("2019-07-01-preview"), {"Secret: nope"}, true).status,
            401);
  EXPECT_EQ(curl_service_fabric(emu(), target("2019-08-01"), {secret}, true).status, 400);
  const Identity user = user_identities(emu()).at(0);
  EXPECT_EQ(curl_service_fabric(emu(), target("2019-07-01-preview", "&client_id=" + user.client_id),
                                {secret}, true)
                .status,
            400);
}

// ---- Workload identity ------------------------------------------------------------------

std::string workload_path(const Emulator& emulator) {
  return "/" + emulator.options().tenant_id + "/oauth2/v2.0/token";
}

std::string workload_form(const Emulator& emulator, const std::string& client_id,
                          const std::string& assertion, const std::string& scope = "",
                          const std::string& grant_type = "client_credentials") {
  return form({{"client_id", client_id},
               {"grant_type", grant_type},
               {"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
               {"client_assertion", assertion},
               {"scope", scope.empty() ? std::string(kVault) + "/.default" : scope}});
  (void)emulator;
}

TEST_F(EmulatorTest, WorkloadIdentityExchangesTheFederatedToken) {
  const auto env = emu().client_environment(Endpoint::kWorkloadIdentity);
  const std::string assertion = read_file(env.at("AZURE_FEDERATED_TOKEN_FILE"));
  const Reply reply = post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                           workload_form(emu(), env.at("AZURE_CLIENT_ID"), assertion));
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  EXPECT_EQ(body["token_type"], "Bearer");
  EXPECT_TRUE(body["expires_in"].is_number_integer());
  EXPECT_TRUE(body["ext_expires_in"].is_number_integer());
  auto record = emu().ledger().lookup(body["access_token"]);
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->client_id, env.at("AZURE_CLIENT_ID"));
  EXPECT_EQ(record->resource, kVault);
}

TEST_F(EmulatorTest, WorkloadIdentityChecks) {
  const auto env = emu().client_environment(Endpoint::kWorkloadIdentity);
  const std::string client = env.at("AZURE_CLIENT_ID");
  const std::string assertion = emu().federated_token();
  expect_json_error(post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                         workload_form(emu(), client, assertion + "x")),
                    401);
  expect_json_error(post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                         workload_form(emu(), "unknown-client", assertion)),
                    400);
  expect_json_error(post(emu(), Endpoint::kWorkloadIdentity,
                         "/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token",
                         workload_form(emu(), client, assertion)),
                    400);
  expect_json_error(post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                         workload_form(emu(), client, assertion, kVault)),
                    400);
  expect_json_error(post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                         workload_form(emu(), client, assertion, "", "password")),
                    400);
  expect_json_error(post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                         workload_form(emu(), client, assertion), {}, "application/json"),
                    400);
  expect_json_error(get(emu(), Endpoint::kWorkloadIdentity, workload_path(emu())), 405);
}

// What print-env gives an Azure SDK: the HTTPS authority for workload identity, and one trust
// bundle (the emulator's CA and Service Fabric's certificate) for every endpoint.
TEST_F(EmulatorTest, SdkEnvironmentAddsTheTrustBundleAndTheHttpsAuthority) {
  for (Endpoint endpoint : kAllEndpoints) {
    SCOPED_TRACE(to_string(endpoint));
    auto sdk = emu().sdk_environment(endpoint);
    EXPECT_EQ(sdk.at("NODE_EXTRA_CA_CERTS"), emu().trust_bundle_file());
    EXPECT_EQ(sdk.at("SSL_CERT_FILE"), emu().trust_bundle_file());
    sdk.erase("NODE_EXTRA_CA_CERTS");
    sdk.erase("SSL_CERT_FILE");
    auto plain = emu().client_environment(endpoint);
    if (endpoint == Endpoint::kWorkloadIdentity) {
      EXPECT_EQ(sdk.at("AZURE_AUTHORITY_HOST"), emu().workload_identity_authority());
      EXPECT_THAT(sdk.at("AZURE_AUTHORITY_HOST"), StartsWith("https://127.0.0.1:"));
      sdk.erase("AZURE_AUTHORITY_HOST");
      plain.erase("AZURE_AUTHORITY_HOST");
    }
    if (endpoint == Endpoint::kAzureMl) {
      EXPECT_EQ(sdk.at("DEFAULT_IDENTITY_CLIENT_ID"), system_identity(emu()).client_id);
      sdk.erase("DEFAULT_IDENTITY_CLIENT_ID");
    }
    EXPECT_EQ(sdk, plain);
  }
  const std::string bundle = read_file(emu().trust_bundle_file());
  EXPECT_NE(bundle.find(emu().service_fabric_certificate_pem()), std::string::npos);
  EXPECT_NE(bundle.find(read_file(emu().ca_file())), std::string::npos);
}

// MSAL-based clients (@azure/identity) fetch the tenant's OpenID configuration, and unless told
// otherwise the instance discovery, before the token request, all over HTTPS.
TEST_F(EmulatorTest, WorkloadIdentityAuthorityServesDiscoveryAndTokensOverHttps) {
  const auto env = emu().sdk_environment(Endpoint::kWorkloadIdentity);
  const std::string authority = env.at("AZURE_AUTHORITY_HOST");  // ends with '/'
  const std::string tenant = env.at("AZURE_TENANT_ID");
  const std::string trusted = read_file(env.at("SSL_CERT_FILE"));

  const CurlReply config =
      curl_get(authority + tenant + "/v2.0/.well-known/openid-configuration", {}, 10'000, trusted);
  ASSERT_EQ(config.code, CURLE_OK) << curl_easy_strerror(config.code);
  ASSERT_EQ(config.status, 200) << config.body;
  const json document = json::parse(config.body);
  for (const char* field : {"authorization_endpoint", "token_endpoint", "issuer", "jwks_uri"}) {
    ASSERT_TRUE(document.contains(field)) << field;  // what MSAL checks
    EXPECT_THAT(document[field].get<std::string>(), StartsWith(authority + tenant + "/")) << field;
  }
  const std::string token_endpoint = document["token_endpoint"];
  EXPECT_EQ(token_endpoint, authority + tenant + "/oauth2/v2.0/token");

  const CurlReply discovery =
      curl_get(authority + "common/discovery/instance" +
                   query({{"api-version", "1.1"},
                          {"authorization_endpoint", document["authorization_endpoint"]}}),
               {}, 10'000, trusted);
  ASSERT_EQ(discovery.status, 200) << discovery.body;
  const json instance = json::parse(discovery.body);
  EXPECT_EQ(instance["tenant_discovery_endpoint"],
            authority + tenant + "/v2.0/.well-known/openid-configuration");
  const std::string host = authority.substr(8, authority.size() - 9);
  EXPECT_EQ(instance["metadata"][0]["aliases"], json::array({host}));
  EXPECT_EQ(instance["metadata"][0]["preferred_network"], host);

  // The token endpoint the document names, over HTTPS, verified against the bundle.
  httplib::SSLClient client("127.0.0.1", std::stoi(host.substr(host.rfind(':') + 1)));
  client.set_ca_cert_path(env.at("SSL_CERT_FILE").c_str());
  client.enable_server_certificate_verification(true);
  client.set_connection_timeout(5s);
  client.set_read_timeout(10s);
  const Reply token =
      to_reply(client.Post("/" + tenant + "/oauth2/v2.0/token",
                           workload_form(emu(), env.at("AZURE_CLIENT_ID"),
                                         read_file(env.at("AZURE_FEDERATED_TOKEN_FILE"))),
                           "application/x-www-form-urlencoded"));
  ASSERT_TRUE(token.ok) << httplib::to_string(token.error);
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_EQ(ledger_client_id(emu(), token.parsed()["access_token"]), env.at("AZURE_CLIENT_ID"));

  // Only the emulator's CA vouches for the authority.
  const CurlReply untrusted =
      curl_get(authority + tenant + "/v2.0/.well-known/openid-configuration", {}, 10'000);
  EXPECT_EQ(untrusted.code, CURLE_PEER_FAILED_VERIFICATION);
}

TEST_F(EmulatorTest, WorkloadIdentityDiscoveryRefusesOtherTenantsAndInstances) {
  const std::string base = emu().base_url(Endpoint::kWorkloadIdentity);
  const std::string tenant = emu().options().tenant_id;
  // The plain-HTTP endpoint serves the documents too, naming itself.
  const Reply config = get(emu(), Endpoint::kWorkloadIdentity,
                           "/" + tenant + "/v2.0/.well-known/openid-configuration");
  ASSERT_EQ(config.status, 200) << config.body;
  EXPECT_EQ(config.parsed()["token_endpoint"], emu().token_url(Endpoint::kWorkloadIdentity));
  expect_json_error(get(emu(), Endpoint::kWorkloadIdentity,
                        "/00000000-0000-0000-0000-000000000000/v2.0/.well-known/"
                        "openid-configuration"),
                    400);
  const Reply other =
      get(emu(), Endpoint::kWorkloadIdentity,
          "/common/discovery/instance" +
              query({{"api-version", "1.1"},
                     {"authorization_endpoint",
                      "https://login.example.com/" + tenant + "/oauth2/v2.0/authorize"}}));
  expect_json_error(other, 400);
  EXPECT_EQ(other.parsed()["error"], "invalid_instance");
  expect_json_error(
      get(emu(), Endpoint::kWorkloadIdentity,
          "/common/discovery/instance" +
              query({{"authorization_endpoint", base + "/" + tenant + "/oauth2/v2.0/authorize"}})),
      400);
}

// ---- Faults -----------------------------------------------------------------------------

TEST_F(EmulatorTest, DriversCasesByHeader) {
  const Reply empty = imds_case(emu(), "empty-json");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body, "{}");

  const Reply bad = imds_case(emu(), "bad-json");
  EXPECT_EQ(bad.status, 200);
  EXPECT_EQ(bad.body, R"({"key": })");
  EXPECT_FALSE(json::accept(bad.body));

  expect_json_error(imds_case(emu(), "404"), 404);
  expect_json_error(imds_case(emu(), "500"), 500);

  const Reply drivers = imds_case(emu(), "drivers-default");
  ASSERT_EQ(drivers.status, 200);
  const json body = drivers.parsed();
  EXPECT_EQ(body["expires_in"], "70");
  EXPECT_EQ(body["token_type"], "Bearer");
  EXPECT_EQ(body["resource"], kVault);
  auto record = emu().ledger().lookup(body["access_token"]);
  ASSERT_TRUE(record.has_value());
  EXPECT_LE(record->expires_on, std::chrono::system_clock::now() + 71s);
}

TEST_F(EmulatorTest, GiantBodyHasItsContentLength) {
  const CurlReply giant =
      curl_get(emu().token_url(Endpoint::kImds) +
                   query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
               {"Metadata: true", "X-MongoDB-HTTP-TestParams: case=giant"}, 60'000);
  ASSERT_EQ(giant.code, CURLE_OK) << curl_easy_strerror(giant.code);
  EXPECT_EQ(giant.status, 200);
  EXPECT_EQ(giant.content_length, curl_off_t{24} << 20);
  EXPECT_EQ(giant.body.size(), std::size_t{24} << 20);
  EXPECT_TRUE(json::accept(giant.body)) << "large, but well-formed";
}

TEST_F(EmulatorTest, SlowStreamsANeverEndingArray) {
  // A client with a 2 s deadline gives up with part of an array in hand.
  const CurlReply slow = curl_get(emu().token_url(Endpoint::kImds) +
                                      query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
                                  {"Metadata: true", "X-MongoDB-HTTP-TestParams: case=slow"}, 2000);
  EXPECT_EQ(slow.code, CURLE_OPERATION_TIMEDOUT) << curl_easy_strerror(slow.code);
  EXPECT_EQ(slow.status, 200);
  EXPECT_THAT(slow.body, StartsWith(R"(["slow")"));
  EXPECT_FALSE(json::accept(slow.body));
}

TEST_F(EmulatorTest, StatusFaults) {
  for (int status : {400, 404, 408, 410, 500, 502, 503, 504}) {
    expect_json_error(imds_case(emu(), std::to_string(status)), status);
  }
  const Reply throttled = imds_case(emu(), "429");
  expect_json_error(throttled, 429);
  EXPECT_EQ(throttled.header("Retry-After"), "1");
}

TEST_F(EmulatorTest, BodyShapeFaults) {
  const Reply html = imds_case(emu(), "html");
  EXPECT_EQ(html.status, 200);
  EXPECT_THAT(html.header("Content-Type"), StartsWith("text/html"));
  EXPECT_THAT(html.body, HasSubstr("<html>"));

  const Reply xml = imds_case(emu(), "xml");
  EXPECT_EQ(xml.status, 200);
  EXPECT_THAT(xml.body, StartsWith("<?xml"));

  EXPECT_EQ(imds_case(emu(), "missing-token").parsed(), json::parse(R"({"expires_in":"3599"})"));
  EXPECT_TRUE(imds_case(emu(), "non-string-token").parsed()["access_token"].is_number());
  EXPECT_EQ(imds_case(emu(), "bad-expiry").parsed()["expires_on"], "tomorrow");
  const Reply truncated = imds_case(emu(), "truncated");
  EXPECT_EQ(truncated.body, R"({"access_token":"abc)");
  EXPECT_FALSE(json::accept(truncated.body));
}

TEST_F(EmulatorTest, WrongIdentityNamesAndHoldsAnotherIdentity) {
  const Identity user = user_identities(emu()).at(0);
  const Reply reply = get(emu(), Endpoint::kAppService,
                          "/msi/token" + query({{"api-version", "2019-08-01"},
                                                {"resource", kVault},
                                                {"client_id", user.client_id}}),
                          {{"X-IDENTITY-HEADER", emu().options().identity_header},
                           {"X-MongoDB-HTTP-TestParams", "case=wrong-identity"}});
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json body = reply.parsed();
  EXPECT_NE(body["client_id"], user.client_id);
  EXPECT_EQ(ledger_client_id(emu(), body["access_token"]), body["client_id"].get<std::string>());

  // Shapes without client_id gain one for this case, so a client can notice.
  emu().inject(Endpoint::kAppService2017, "wrong-identity");
  const Reply legacy = msi_2017(emu(), Endpoint::kAppService2017);
  ASSERT_EQ(legacy.status, 200);
  EXPECT_NE(legacy.parsed()["client_id"], system_identity(emu()).client_id);
}

TEST_F(EmulatorTest, RedirectPointsToLoopbackAndIsNotFollowedByDefault) {
  const Reply redirect = imds_case(emu(), "redirect");
  ASSERT_TRUE(redirect.ok);
  EXPECT_EQ(redirect.status, 302);
  const std::string location = redirect.header("Location");
  EXPECT_THAT(location, StartsWith("http://127.0.0.1:"));
  // Whoever follows it gets a token: the sign of a client that follows redirects.
  httplib::Client client(emu().base_url(Endpoint::kImds));
  client.set_follow_location(true);
  auto followed =
      client.Get(kImdsPath + query({{"api-version", "2018-02-01"}, {"resource", kVault}}),
                 {{"Metadata", "true"}, {"X-MongoDB-HTTP-TestParams", "case=redirect"}});
  ASSERT_TRUE(followed);
  EXPECT_EQ(followed->status, 200);
  EXPECT_TRUE(json::parse(followed->body).contains("access_token"));
}

TEST_F(EmulatorTest, ResetAndCloseBreakTheConnection) {
  const Reply reset = imds_case(emu(), "reset");
  EXPECT_FALSE(reset.ok);
  const Reply closed = imds_case(emu(), "close");
  EXPECT_FALSE(closed.ok);
  // The server is unharmed.
  EXPECT_EQ(imds(emu()).status, 200);
}

TEST_F(EmulatorTest, UnknownCaseIsRefused) {
  expect_json_error(imds_case(emu(), "teapot"), 400);
  expect_json_error(imds_case(emu(), "arc-no-realm"), 400);
}

TEST_F(EmulatorTest, FaultCasesWorkOnEveryEndpoint) {
  // Through inject(), a 503 then a normal answer, on every endpoint with a valid request.
  for (Endpoint endpoint : {Endpoint::kImds, Endpoint::kAppService, Endpoint::kAppService2017,
                            Endpoint::kAzureMl, Endpoint::kCloudShell}) {
    emu().inject(endpoint, "503");
    const auto request = [&]() -> Reply {
      switch (endpoint) {
        case Endpoint::kImds:
          return imds(emu());
        case Endpoint::kAppService:
          return app_service(emu());
        case Endpoint::kCloudShell:
          return post(emu(), endpoint, "/oauth2/token", form({{"resource", kVault}}),
                      {{"Metadata", "true"}});
        default:
          return msi_2017(emu(), endpoint);
      }
    };
    EXPECT_EQ(request().status, 503) << to_string(endpoint);
    EXPECT_EQ(request().status, 200) << to_string(endpoint);
  }
  const auto env = emu().client_environment(Endpoint::kWorkloadIdentity);
  emu().inject(Endpoint::kWorkloadIdentity, "bad-json");
  const Reply workload =
      post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
           workload_form(emu(), env.at("AZURE_CLIENT_ID"), emu().federated_token()));
  EXPECT_EQ(workload.body, R"({"key": })");
  emu().inject(Endpoint::kServiceFabric, "429");
  const CurlReply fabric = curl_service_fabric(
      emu(), kImdsPath + query({{"api-version", "2019-07-01-preview"}, {"resource", kVault}}),
      {"Secret: " + emu().options().identity_header}, true);
  EXPECT_EQ(fabric.status, 429);
}

// ---- inject() and counters --------------------------------------------------------------

TEST_F(EmulatorTest, InjectAppliesExactlyTimesThenRecovers) {
  emu().inject(Endpoint::kAppService, "500", 2);
  EXPECT_EQ(app_service(emu()).status, 500);
  EXPECT_EQ(app_service(emu()).status, 500);
  EXPECT_EQ(app_service(emu()).status, 200);
}

TEST_F(EmulatorTest, InjectedFaultsQueueInOrderPerEndpoint) {
  emu().inject(Endpoint::kImds, "410");
  emu().inject(Endpoint::kImds, "429");
  EXPECT_EQ(app_service(emu()).status, 200) << "another endpoint is unaffected";
  EXPECT_EQ(imds(emu()).status, 410);
  EXPECT_EQ(imds(emu()).status, 429);
  EXPECT_EQ(imds(emu()).status, 200);
}

TEST_F(EmulatorTest, RejectedRequestsDoNotConsumeInjectedFaults) {
  emu().inject(Endpoint::kImds, "500");
  EXPECT_EQ(imds(emu(), "", {}).status, 400);
  EXPECT_EQ(imds(emu()).status, 500);
}

TEST_F(EmulatorTest, HeaderCaseWinsAndLeavesTheQueue) {
  emu().inject(Endpoint::kImds, "404");
  EXPECT_EQ(imds_case(emu(), "empty-json").body, "{}");
  EXPECT_EQ(imds(emu()).status, 404);
}

TEST_F(EmulatorTest, ClearFaultsEmptiesEveryQueue) {
  emu().inject(Endpoint::kImds, "500", 5);
  emu().inject(Endpoint::kAppService, "500", 5);
  emu().clear_faults();
  EXPECT_EQ(imds(emu()).status, 200);
  EXPECT_EQ(app_service(emu()).status, 200);
}

TEST_F(EmulatorTest, InjectRefusesUnknownCases) {
  EXPECT_THROW(emu().inject(Endpoint::kImds, "teapot"), std::invalid_argument);
  EXPECT_THROW(emu().inject(Endpoint::kImds, "arc-no-realm"), std::invalid_argument);
  EXPECT_THROW(emu().inject(Endpoint::kImds, "500", 0), std::invalid_argument);
}

TEST_F(EmulatorTest, CountersCountEveryRequestAndEveryToken) {
  const auto served = emu().requests_served(Endpoint::kAppService2017);
  const auto issued = emu().tokens_issued(Endpoint::kAppService2017);
  const auto other = emu().requests_served(Endpoint::kImds);
  EXPECT_EQ(msi_2017(emu(), Endpoint::kAppService2017).status, 200);
  EXPECT_EQ(get(emu(), Endpoint::kAppService2017, "/msi/token").status, 401);
  emu().inject(Endpoint::kAppService2017, "500");
  EXPECT_EQ(msi_2017(emu(), Endpoint::kAppService2017).status, 500);
  EXPECT_EQ(emu().requests_served(Endpoint::kAppService2017), served + 3);
  EXPECT_EQ(emu().tokens_issued(Endpoint::kAppService2017), issued + 1);
  EXPECT_EQ(emu().requests_served(Endpoint::kImds), other);
}

TEST_F(EmulatorTest, TokenLifetimeIsConfigurable) {
  emu().set_token_lifetime(120s);
  const json body = imds(emu()).parsed();
  EXPECT_EQ(body["expires_in"], "120");
  auto record = emu().ledger().lookup(body["access_token"]);
  ASSERT_TRUE(record.has_value());
  EXPECT_LE(record->expires_on, std::chrono::system_clock::now() + 121s);
  EXPECT_THROW(emu().set_token_lifetime(0s), std::invalid_argument);
}

TEST_F(EmulatorTest, ResponseDelayStillAnswers) {
  emu().set_response_delay(50ms);
  EXPECT_EQ(imds(emu()).status, 200);
}

TEST(EmulatorLifecycleTest, StopReturnsWithASlowResponseInFlight) {
  Emulator emulator;
  emulator.start();
  std::atomic<bool> finished{false};
  Reply slow;
  std::thread client([&] {
    slow = imds_case(emulator, "slow", 60s);
    finished = true;
  });
  // Wait until the request is in the server, then stop while it streams.
  while (emulator.requests_served(Endpoint::kImds) == 0) std::this_thread::sleep_for(5ms);
  emulator.stop();
  client.join();
  EXPECT_TRUE(finished);
  EXPECT_FALSE(slow.ok) << "the never-ending body was cut by stop()";
}

TEST(EmulatorLifecycleTest, StopReturnsWithADelayedResponseInFlight) {
  Options options;
  options.response_delay = 600s;
  Emulator emulator(options);
  emulator.start();
  Reply delayed;
  std::thread client([&] { delayed = imds(emulator); });
  while (emulator.requests_served(Endpoint::kImds) == 0) std::this_thread::sleep_for(5ms);
  emulator.stop();
  client.join();
  EXPECT_NE(delayed.status, 200);
}

TEST(EmulatorLifecycleTest, FixedPortsAreHonoured) {
  int port = 0;
  {
    Emulator probe;
    probe.start();
    port = probe.port(Endpoint::kAppService);  // free a moment ago, and free again after stop
  }
  Options options;
  options.ports[Endpoint::kAppService] = port;
  Emulator emulator(options);
  emulator.start();
  EXPECT_EQ(emulator.port(Endpoint::kAppService), port);
  EXPECT_NE(emulator.port(Endpoint::kImds), port);
  EXPECT_EQ(app_service(emulator).status, 200);

  Options invalid;
  invalid.ports[Endpoint::kImds] = 70000;
  EXPECT_THROW(Emulator{invalid}, std::invalid_argument);
}

TEST(EmulatorLifecycleTest, LogLinesNeverCarrySecrets) {
  std::mutex mutex;
  std::vector<std::string> lines;
  Options options;
  options.log = [&](std::string_view line) {
    std::lock_guard lock(mutex);
    lines.emplace_back(line);
  };
  Emulator emulator(options);
  emulator.start();
  std::vector<std::string> tokens;
  tokens.push_back(app_service(emulator).parsed()["access_token"]);
  tokens.push_back(msi_2017(emulator, Endpoint::kAppService2017).parsed()["access_token"]);
  EXPECT_EQ(
      get(emulator, Endpoint::kAppService, "/msi/token", {{"X-IDENTITY-HEADER", "guess"}}).status,
      401);
  const ArcChallenge challenge = arc_challenge(emulator);
  ASSERT_FALSE(challenge.path.empty());
  const std::string arc_key = read_file(challenge.path);
  const auto env = emulator.client_environment(Endpoint::kWorkloadIdentity);
  EXPECT_EQ(post(emulator, Endpoint::kWorkloadIdentity, workload_path(emulator),
                 workload_form(emulator, env.at("AZURE_CLIENT_ID"), emulator.federated_token()))
                .status,
            200);
  emulator.stop();

  std::lock_guard lock(mutex);
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [](const std::string& line) {
    return line.find("token issued to client id") != std::string::npos;
  }));
  for (const auto& line : lines) {
    EXPECT_THAT(line, Not(HasSubstr(emulator.options().identity_header)));
    EXPECT_THAT(line, Not(HasSubstr(emulator.options().msi_secret)));
    EXPECT_THAT(line, Not(HasSubstr(arc_key)));
    EXPECT_THAT(line, Not(HasSubstr(emulator.federated_token())));
    for (const auto& token : tokens) EXPECT_THAT(line, Not(HasSubstr(token)));
  }
}

// ---- Hostile clients --------------------------------------------------------------------
// People run the emulator on their machines: no local client may crash it, fill its
// directories or keep it from serving everyone else.

// The path each plain-HTTP endpoint serves (Service Fabric speaks TLS and is left out).
std::vector<std::pair<Endpoint, std::string>> http_endpoint_paths(const Emulator& emulator) {
  return {{Endpoint::kImds, kImdsPath},
          {Endpoint::kAppService, "/msi/token"},
          {Endpoint::kAppService2017, "/msi/token"},
          {Endpoint::kAzureMl, "/msi/token"},
          {Endpoint::kCloudShell, "/oauth2/token"},
          {Endpoint::kAzureArc, kImdsPath},
          {Endpoint::kWorkloadIdentity, workload_path(emulator)}};
}

TEST_F(EmulatorTest, ALargeBodyIsRefusedWith413AndServingGoesOn) {
  const std::string large(8u << 20, 'a');
  for (const auto& [endpoint, path] : http_endpoint_paths(emu())) {
    SCOPED_TRACE(to_string(endpoint));
    const Reply reply = post(emu(), endpoint, path, large);
    expect_json_error(reply, 413);
    EXPECT_EQ(reply.parsed().value("error", ""), "request_too_large");
  }
  // 64 KiB is over the cap too: no identity request comes near it.
  expect_json_error(
      post(emu(), Endpoint::kCloudShell, "/oauth2/token", std::string(64 * 1024 + 1, 'a')), 413);
  EXPECT_EQ(imds(emu()).status, 200);
  const auto env = emu().client_environment(Endpoint::kWorkloadIdentity);
  EXPECT_EQ(post(emu(), Endpoint::kWorkloadIdentity, workload_path(emu()),
                 workload_form(emu(), env.at("AZURE_CLIENT_ID"), emu().federated_token()))
                .status,
            200);
}

TEST(EmulatorArcKeyFiles, UnansweredChallengesLeaveABoundedNumberOfFiles) {
  Emulator emulator;
  emulator.start();
  std::string last_path;
  for (int i = 0; i < 2000; ++i) {
    const ArcChallenge challenge = arc_challenge(emulator);
    ASSERT_EQ(challenge.reply.status, 401) << "request " << i;
    last_path = challenge.path;
  }
  const auto files =
      std::distance(fs::directory_iterator(emulator.arc_key_directory()), fs::directory_iterator());
  EXPECT_LE(files, 64) << "key files of unanswered challenges pile up";
  EXPECT_GE(files, 1);
  // The latest challenge can still be answered.
  const Reply token =
      get(emulator, Endpoint::kAzureArc,
          kImdsPath + query({{"api-version", "2020-06-01"}, {"resource", kVault}}),
          {{"Metadata", "true"}, {"Authorization", "Basic " + read_file(last_path)}});
  EXPECT_EQ(token.status, 200) << token.body;
}

TEST_F(EmulatorTest, AnArcKeyFileIsRemovedOnceItsKeyIsUsed) {
  const ArcChallenge challenge = arc_challenge(emu());
  ASSERT_FALSE(challenge.path.empty());
  const std::string key = read_file(challenge.path);
  const std::string target =
      kImdsPath + query({{"api-version", "2020-06-01"}, {"resource", kVault}});
  const Reply token = get(emu(), Endpoint::kAzureArc, target,
                          {{"Metadata", "true"}, {"Authorization", "Basic " + key}});
  ASSERT_EQ(token.status, 200) << token.body;
  EXPECT_FALSE(fs::exists(challenge.path)) << "the used key file stayed behind";
  // The key itself stays good for a while: a client may resend its answer (libcurl does when a
  // reused connection drops).
  const Reply resent = get(emu(), Endpoint::kAzureArc, target,
                           {{"Metadata", "true"}, {"Authorization", "Basic " + key}});
  EXPECT_EQ(resent.status, 200) << resent.body;
  EXPECT_THAT(emu().arc_keys_handed_out(), ::testing::Contains(key));
}

// The first line of a token request, then a header sent a byte at a time, forever.
std::string slow_request_opening() {
  return "GET " + kImdsPath + "?api-version=2018-02-01&resource=x HTTP/1.1\r\n" +
         "Host: 127.0.0.1\r\nMetadata: true\r\nX-Slow: ";
}

TEST(EmulatorSlowClients, SixteenSlowClientsStarveNobody) {
  Emulator emulator;
  emulator.start();
  testing::SlowClients slow(emulator.port(Endpoint::kImds), 16, slow_request_opening());
  slow.wait_rounds(3);  // every slow connection is in, holding a worker
  const Reply reply = imds(emulator);
  EXPECT_TRUE(reply.ok) << "a request waited behind slow clients: "
                        << httplib::to_string(reply.error);
  EXPECT_EQ(reply.status, 200) << reply.body;
  // They do not keep their connections either: the request deadline (10 s) ends them.
  EXPECT_TRUE(slow.wait_all_closed(60s)) << slow.still_open() << " slow connections still open";
}

TEST(EmulatorSlowClients, StopDoesNotWaitForSlowClients) {
  Emulator emulator;
  emulator.start();
  testing::SlowClients slow(emulator.port(Endpoint::kImds), 4, slow_request_opening());
  slow.wait_rounds(3);
  auto stopped = std::async(std::launch::async, [&] { emulator.stop(); });
  const bool in_time = stopped.wait_for(30s) == std::future_status::ready;
  EXPECT_TRUE(in_time) << "stop() waited for clients that never finish their request";
  if (!in_time) slow.close();  // lets stop() finish after a failure
  stopped.wait();
}

// A second emulator told to use a port the first one serves fails to start, rather than
// binding it too and answering part of the first one's clients with its own secrets.
TEST(EmulatorLifecycleTest, APortInUseIsRefusedNotShared) {
  Emulator first;
  first.start();
  Options options;
  options.ports[Endpoint::kAppService] = first.port(Endpoint::kAppService);
  Emulator second(options);
  try {
    second.start();
    ADD_FAILURE() << "a second emulator started on port " << first.port(Endpoint::kAppService);
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("cannot listen on"), std::string::npos)
        << error.what();
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(app_service(first).status, 200);
}

TEST(EmulatorLifecycleTest, RestartsOnNewPortsAndCleansUp) {
  std::string temp_file;
  {
    Emulator emulator;
    emulator.start();
    temp_file =
        emulator.client_environment(Endpoint::kWorkloadIdentity).at("AZURE_FEDERATED_TOKEN_FILE");
    EXPECT_TRUE(fs::exists(temp_file));
    emulator.stop();
    emulator.stop();  // idempotent
    emulator.start();
    EXPECT_EQ(imds(emulator).status, 200);
  }
  EXPECT_FALSE(fs::exists(temp_file)) << "the destructor removes its temporary files";
}

}  // namespace
}  // namespace azkms::emulator
