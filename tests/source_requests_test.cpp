// The exact request of every source and selector, checked as plain values without a socket,
// and what HttpTokenSource::fetch makes of each kind of answer (through a scripted client that
// records what it was asked to send).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>

#include "auto_advance_clock.hpp"
#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "http/connection_failure.hpp"
#include "http_token_source.hpp"
#include "sources/azure_arc.hpp"

namespace azkms {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Vars = std::map<std::string, std::string>;

constexpr const char* kHeaderSecret = "hdr-SECRET-5d4c3b2a";
constexpr const char* kMsiSecretValue = "msi-SECRET-1a2b3c4d";
constexpr const char* kVault = "https%3A%2F%2Fvault.azure.net";
constexpr const char* kResourceId =
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/id-one";
constexpr const char* kResourceIdEncoded =
    "%2Fsubscriptions%2F0000%2FresourceGroups%2Frg%2Fproviders%2FMicrosoft.ManagedIdentity%"
    "2FuserAssignedIdentities%2Fid-one";

// Answers from a script (or a handler) and records every request and its options.
class ScriptedHttpClient final : public HttpClient {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&, const HttpOptions&)>;

  void respond(HttpResponse response) {
    std::lock_guard lock(mutex_);
    script_.push_back(std::move(response));
  }
  void respond(int status, std::string body, std::vector<HttpHeader> headers = {}) {
    respond(HttpResponse{status, std::move(headers), std::move(body)});
  }
  void set_handler(Handler handler) { handler_ = std::move(handler); }

  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(request);
      options_.push_back(options);
    }
    if (handler_) return handler_(request, options);
    std::lock_guard lock(mutex_);
    if (script_.empty()) {
      ADD_FAILURE() << "unexpected request " << request.describe();
      throw Error(ErrorCode::kConnection, "no scripted answer");
    }
    HttpResponse next = std::move(script_.front());
    script_.pop_front();
    return next;
  }

  [[nodiscard]] std::vector<HttpRequest> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  [[nodiscard]] std::vector<HttpOptions> options() const {
    std::lock_guard lock(mutex_);
    return options_;
  }

 private:
  mutable std::mutex mutex_;
  std::deque<HttpResponse> script_;
  std::vector<HttpRequest> requests_;
  std::vector<HttpOptions> options_;
  Handler handler_;
};

std::string ok_body(const std::string& extra = "") {
  return R"({"access_token":"tok-SECRET-value","expires_in":"3600","token_type":"Bearer")" + extra +
         "}";
}

class SourceTest : public ::testing::Test {
 protected:
  std::shared_ptr<HttpTokenSource> source(const Vars& vars, std::optional<SourceKind> force = {},
                                          std::optional<RetryPolicy> policy = {}) {
    SourceContext context;
    context.http = http_;
    context.clock = clock_;
    context.retry_policy = std::move(policy);
    return as_http_source(make_source(MapEnvironment(vars), force, context));
  }
  [[nodiscard]] Deadline deadline(milliseconds from_now = seconds{60}) const {
    return clock_->steady_now() + from_now;
  }
  Error fetch_error(TokenSource& src, const TokenRequest& request = {}) {
    try {
      src.fetch(request, deadline());
    } catch (const Error& error) {
      return error;
    }
    ADD_FAILURE() << "fetch succeeded";
    return Error(ErrorCode::kNoSource, "no error");
  }

  // The scripted client with a clock that jumps ahead whenever something waits: a retry
  // policy's backoffs pass at once.
  SourceContext instant_context(std::shared_ptr<testing::AutoAdvanceClock> clock) const {
    SourceContext context;
    context.http = http_;
    context.clock = std::move(clock);
    return context;
  }

  std::shared_ptr<ScriptedHttpClient> http_ = std::make_shared<ScriptedHttpClient>();
  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>();
};

TokenRequest for_identity(IdentitySelector identity) {
  TokenRequest request;
  request.identity = std::move(identity);
  return request;
}

const Vars kImdsVars{};
const Vars kAppServiceVars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:8081/msi/token"},
                           {"IDENTITY_HEADER", kHeaderSecret}};
const Vars kMsiVars{{"MSI_ENDPOINT", "http://127.0.0.1:8082/MSI/token/"},
                    {"MSI_SECRET", kMsiSecretValue}};
const Vars kMlVars{{"MSI_ENDPOINT", "http://127.0.0.1:8083/msi/token"},
                   {"MSI_SECRET", kMsiSecretValue},
                   {"DEFAULT_IDENTITY_CLIENT_ID", "ml-default-client"}};
const Vars kCloudShellVars{{"MSI_ENDPOINT", "http://127.0.0.1:8084/oauth2/token"}};
const Vars kServiceFabricVars{
    {"IDENTITY_ENDPOINT", "https://127.0.0.1:2377/metadata/identity/oauth2/token"},
    {"IDENTITY_HEADER", kHeaderSecret},
    {"IDENTITY_SERVER_THUMBPRINT", "0123456789abcdef0123456789abcdef01234567"}};

// An Entra ID error body: the description first, the identifiers after it.
std::string entra_error_body(const std::string& description) {
  return R"({"error":"invalid_client","error_description":")" + description +
         R"(","error_codes":[700016],"timestamp":"2026-11-27 10:00:00Z",)"
         R"("trace_id":"0f0e0d0c-0b0a-4909-8807-060504030201",)"
         R"("correlation_id":"1a2b3c4d-0000-4000-8000-00000000c0de"})";
}

// ---------------------------------------------------------------------------------------------
// Exact requests

struct SelectorCase {
  IdentitySelector identity;
  std::string query;  // appended after resource=...
};

TEST_F(SourceTest, ImdsRequestForEverySelector) {
  auto imds = source(kImdsVars);
  const std::string base =
      std::string(
          "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&"
          "resource=") +
      kVault;
  const std::vector<SelectorCase> cases{
      {IdentitySelector::system_assigned(), ""},
      {IdentitySelector::client_id("11111111-2222-3333-4444-555555555555"),
       "&client_id=11111111-2222-3333-4444-555555555555"},
      {IdentitySelector::object_id("obj-1"), "&object_id=obj-1"},
      {IdentitySelector::resource_id(kResourceId),
       std::string("&msi_res_id=") + kResourceIdEncoded},
  };
  for (const auto& test : cases) {
    const HttpRequest request = imds->build_request(for_identity(test.identity));
    EXPECT_EQ(request.method, "GET");
    EXPECT_EQ(request.url, base + test.query);
    EXPECT_THAT(request.headers, ElementsAre(HttpHeader{"Metadata", "true", false},
                                             HttpHeader{"Accept", "application/json", false}));
    EXPECT_TRUE(request.body.empty());
  }
}

TEST_F(SourceTest, ImdsAuthorityOverride) {
  auto imds = source({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:2579/"}});
  EXPECT_EQ(imds->build_request({}).url,
            std::string("http://127.0.0.1:2579/metadata/identity/oauth2/token?api-version=2018-02-"
                        "01&resource=") +
                kVault);
}

TEST_F(SourceTest, AppService2019RequestForEverySelector) {
  auto app = source(kAppServiceVars);
  ASSERT_EQ(app->kind(), SourceKind::kAppService);
  const std::string base =
      std::string("http://127.0.0.1:8081/msi/token?api-version=2019-08-01&resource=") + kVault;
  const std::vector<SelectorCase> cases{
      {IdentitySelector::system_assigned(), ""},
      {IdentitySelector::client_id("cid-1"), "&client_id=cid-1"},
      {IdentitySelector::object_id("oid-1"), "&principal_id=oid-1"},
      {IdentitySelector::resource_id(kResourceId), std::string("&mi_res_id=") + kResourceIdEncoded},
  };
  for (const auto& test : cases) {
    const HttpRequest request = app->build_request(for_identity(test.identity));
    EXPECT_EQ(request.method, "GET");
    EXPECT_EQ(request.url, base + test.query);
    EXPECT_THAT(request.headers, ElementsAre(HttpHeader{"X-IDENTITY-HEADER", kHeaderSecret, true},
                                             HttpHeader{"Metadata", "true", false}));
    EXPECT_TRUE(request.body.empty());
    EXPECT_THAT(request.describe(), Not(HasSubstr(kHeaderSecret)));
  }
}

// MSI v1 token revocation: after a refused token, App Service and Service Fabric are told which
// token to replace; the other sources have no platform cache to bypass.
TEST_F(SourceTest, ARefusedTokenIsNamedToAppServiceAndServiceFabricOnly) {
  TokenRequest request;
  request.token_sha256_to_refresh = std::string(64, 'a');
  const std::string named = "&xms_cc=cp1&token_sha256_to_refresh=" + std::string(64, 'a');
  EXPECT_THAT(source(kAppServiceVars)->build_request(request).url, ::testing::EndsWith(named));
  EXPECT_THAT(source(kServiceFabricVars)->build_request(request).url, ::testing::EndsWith(named));
  EXPECT_THAT(source(kAppServiceVars)->build_request({}).url, Not(HasSubstr("xms_cc")));
  for (const Vars* vars : {&kImdsVars, &kMsiVars, &kMlVars, &kCloudShellVars}) {
    const HttpRequest other = source(*vars)->build_request(request);
    EXPECT_THAT(other.url + other.body, Not(HasSubstr("token_sha256_to_refresh")));
  }
}

TEST_F(SourceTest, AppService2017SendsClientidOnly) {
  auto legacy = source(kMsiVars);
  ASSERT_EQ(legacy->kind(), SourceKind::kAppService2017);
  const std::string base =
      std::string("http://127.0.0.1:8082/MSI/token/?api-version=2017-09-01&resource=") + kVault;
  HttpRequest request = legacy->build_request({});
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.url, base);
  EXPECT_THAT(request.headers, ElementsAre(HttpHeader{"secret", kMsiSecretValue, true}));
  request = legacy->build_request(for_identity(IdentitySelector::client_id("cid-2")));
  EXPECT_EQ(request.url, base + "&clientid=cid-2");
  EXPECT_THAT(request.url, Not(HasSubstr("client_id")));
}

TEST_F(SourceTest, AzureMlDefaultsToItsClientIdAndAcceptsAnother) {
  auto ml = source(kMlVars);
  ASSERT_EQ(ml->kind(), SourceKind::kAzureMl);
  const std::string base =
      std::string("http://127.0.0.1:8083/msi/token?api-version=2017-09-01&resource=") + kVault;
  EXPECT_EQ(ml->build_request({}).url, base + "&clientid=ml-default-client");
  EXPECT_EQ(ml->build_request(for_identity(IdentitySelector::client_id("other"))).url,
            base + "&clientid=other");
  EXPECT_THAT(ml->build_request({}).headers,
              ElementsAre(HttpHeader{"secret", kMsiSecretValue, true}));
  // Named without DEFAULT_IDENTITY_CLIENT_ID: no clientid at all.
  Vars without = kMlVars;
  without.erase("DEFAULT_IDENTITY_CLIENT_ID");
  EXPECT_EQ(source(without, SourceKind::kAzureMl)->build_request({}).url, base);
}

TEST_F(SourceTest, CloudShellPostsAForm) {
  auto shell = source(kCloudShellVars);
  ASSERT_EQ(shell->kind(), SourceKind::kCloudShell);
  const HttpRequest request = shell->build_request({});
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, "http://127.0.0.1:8084/oauth2/token");
  EXPECT_THAT(request.headers,
              ElementsAre(HttpHeader{"Metadata", "true", false},
                          HttpHeader{"Content-Type", "application/x-www-form-urlencoded", false}));
  EXPECT_EQ(request.body, std::string("resource=") + kVault);
}

TEST_F(SourceTest, AzureArcFirstRequest) {
  auto arc = source({{"IDENTITY_ENDPOINT", "http://127.0.0.1:40342/metadata/identity/oauth2/token"},
                     {"IMDS_ENDPOINT", "http://127.0.0.1:40342"}});
  ASSERT_EQ(arc->kind(), SourceKind::kAzureArc);
  const HttpRequest request = arc->build_request({});
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.url,
            std::string("http://127.0.0.1:40342/metadata/identity/oauth2/token?api-version=2020-06-"
                        "01&resource=") +
                kVault);
  EXPECT_THAT(request.headers, ElementsAre(HttpHeader{"Metadata", "true", false}));
}

TEST_F(SourceTest, ServiceFabricRequestAndPin) {
  auto fabric = source(kServiceFabricVars);
  ASSERT_EQ(fabric->kind(), SourceKind::kServiceFabric);
  const HttpRequest request = fabric->build_request({});
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.url,
            std::string("https://127.0.0.1:2377/metadata/identity/oauth2/token?api-version=2019-07-"
                        "01-preview&resource=") +
                kVault);
  EXPECT_THAT(request.headers, ElementsAre(HttpHeader{"Secret", kHeaderSecret, true}));

  http_->respond(200, ok_body());
  fabric->fetch({}, deadline());
  ASSERT_EQ(http_->options().size(), 1u);
  EXPECT_EQ(http_->options()[0].pinned_sha1_thumbprint, "0123456789ABCDEF0123456789ABCDEF01234567");
}

class WorkloadTest : public SourceTest {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("azkms-workload-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    token_file_ = (dir_ / "token").string();
    write_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln-first\n");
    vars_ = {{"AZURE_FEDERATED_TOKEN_FILE", token_file_},
             {"AZURE_CLIENT_ID", "app-client-id"},
             {"AZURE_TENANT_ID", "tenant-1"},
             {"AZURE_AUTHORITY_HOST", "http://127.0.0.1:9443/"}};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_token(const std::string& contents) { std::ofstream(token_file_) << contents; }

  std::filesystem::path dir_;
  std::string token_file_;
  Vars vars_;
};

TEST_F(WorkloadTest, PostsTheClientCredentialsForm) {
  auto workload = source(vars_);
  ASSERT_EQ(workload->kind(), SourceKind::kWorkloadIdentity);
  const HttpRequest request = workload->build_request({});
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, "http://127.0.0.1:9443/tenant-1/oauth2/v2.0/token");
  EXPECT_THAT(request.headers,
              ElementsAre(HttpHeader{"Content-Type", "application/x-www-form-urlencoded", false}));
  EXPECT_EQ(request.body,
            "client_id=app-client-id&grant_type=client_credentials&client_assertion_type=urn%"
            "3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion="
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln-first&scope=https%3A%2F%"
            "2Fvault.azure.net%2F.default");
  EXPECT_THAT(request.describe(), Not(HasSubstr("c2ln-first")));

  // A client id selector names another app registration.
  const HttpRequest other =
      workload->build_request(for_identity(IdentitySelector::client_id("other-app")));
  EXPECT_THAT(other.body, HasSubstr("client_id=other-app&"));
  EXPECT_THAT(other.body, Not(HasSubstr("app-client-id")));

  // A scope is not turned into ".default/.default".
  TokenRequest scoped;
  scoped.resource = "https://vault.azure.net/.default";
  EXPECT_THAT(workload->build_request(scoped).body,
              HasSubstr("scope=https%3A%2F%2Fvault.azure.net%2F.default"));
  EXPECT_THAT(workload->build_request(scoped).body, Not(HasSubstr(".default%2F.default")));
}

TEST_F(WorkloadTest, ReadsTheRotatingFileForEveryFetch) {
  auto workload = source(vars_);
  http_->respond(200, ok_body());
  http_->respond(200, ok_body());
  workload->fetch({}, deadline());
  write_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln-second");
  workload->fetch({}, deadline());
  const auto requests = http_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_THAT(requests[0].body, HasSubstr("c2ln-first"));
  EXPECT_THAT(requests[1].body, HasSubstr("c2ln-second"));
}

TEST_F(WorkloadTest, MissingOrEmptyTokenFileIsAConfigurationError) {
  auto workload = source(vars_);
  std::filesystem::remove(token_file_);
  Error error = fetch_error(*workload);
  EXPECT_EQ(error.code(), ErrorCode::kConfiguration);
  EXPECT_THAT(error.what(), HasSubstr("AZURE_FEDERATED_TOKEN_FILE"));
  write_token("\n");
  error = fetch_error(*workload);
  EXPECT_EQ(error.code(), ErrorCode::kConfiguration);
  EXPECT_THAT(error.what(), HasSubstr("empty"));
  EXPECT_TRUE(http_->requests().empty());
}

TEST_F(WorkloadTest, AnEchoedAssertionIsRedactedFromErrors) {
  auto workload = source(vars_);
  // Not a JWT-looking echo: only the source's knowledge of its own assertion can catch it.
  write_token("opaque-assertion-SECRET-42");
  http_->respond(400, R"({"error":"invalid_client","error_description":"bad assertion )"
                      R"(opaque-assertion-SECRET-42"})");
  const Error error = fetch_error(*workload);
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_EQ(error.http_status(), 400);
  EXPECT_THAT(error.what(), HasSubstr("invalid_client"));
  EXPECT_THAT(error.what(), HasSubstr("federated credential"));
  EXPECT_THAT(error.what(), Not(HasSubstr("opaque-assertion-SECRET")));
}

TEST_F(SourceTest, QueryValuesArePercentEncodedAndExistingQueriesKept) {
  auto app = source({{"IDENTITY_ENDPOINT", "http://127.0.0.1:8081/token?tenant=x"},
                     {"IDENTITY_HEADER", kHeaderSecret}});
  TokenRequest request = for_identity(IdentitySelector::client_id("a b&c=d/é"));
  request.resource = "api://my app/?x=1";
  EXPECT_EQ(app->build_request(request).url,
            "http://127.0.0.1:8081/token?tenant=x&api-version=2019-08-01&resource=api%3A%2F%2Fmy%"
            "20app%2F%3Fx%3D1&client_id=a%20b%26c%3Dd%2F%C3%A9");
}

TEST_F(SourceTest, AScopeBecomesItsResource) {
  TokenRequest request;
  request.resource = "https://vault.azure.net/.default";
  EXPECT_THAT(source(kImdsVars)->build_request(request).url,
              HasSubstr(std::string("&resource=") + kVault));
  EXPECT_THAT(source(kImdsVars)->build_request(request).url, Not(HasSubstr("default")));
  // And the token reports the resource that was sent, not the scope.
  http_->respond(200, ok_body(""));
  EXPECT_EQ(source(kAppServiceVars)->fetch(request, deadline()).resource,
            "https://vault.azure.net");
}

TEST_F(SourceTest, AnEmptyResourceIsAConfigurationError) {
  TokenRequest request;
  request.resource = "";
  auto imds = source(kImdsVars);
  try {
    (void)imds->build_request(request);
    FAIL() << "built a request without a resource";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kConfiguration);
  }
}

// ---------------------------------------------------------------------------------------------
// Selectors a source cannot honour: refused before any request

struct UnsupportedCase {
  const char* name;
  Vars vars;
  std::optional<SourceKind> force;
  IdentitySelector identity;
};

TEST_F(SourceTest, UnsupportedSelectorsAreRefusedBeforeAnyRequest) {
  const Vars arc_vars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:40342/t"},
                      {"IMDS_ENDPOINT", "http://127.0.0.1:40342"}};
  const std::vector<UnsupportedCase> cases{
      {"2017ObjectId", kMsiVars, {}, IdentitySelector::object_id("o")},
      {"2017ResourceId", kMsiVars, {}, IdentitySelector::resource_id(kResourceId)},
      {"MlObjectId", kMlVars, {}, IdentitySelector::object_id("o")},
      {"MlResourceId", kMlVars, {}, IdentitySelector::resource_id(kResourceId)},
      {"CloudShellClientId", kCloudShellVars, {}, IdentitySelector::client_id("c")},
      {"CloudShellObjectId", kCloudShellVars, {}, IdentitySelector::object_id("o")},
      {"FabricClientId", kServiceFabricVars, {}, IdentitySelector::client_id("c")},
      {"FabricObjectId", kServiceFabricVars, {}, IdentitySelector::object_id("o")},
  };
  for (const auto& test : cases) {
    auto src = source(test.vars, test.force);
    const TokenRequest request = for_identity(test.identity);
    try {
      (void)src->build_request(request);
      ADD_FAILURE() << test.name << ": built a request";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kUnsupportedSelector) << test.name;
    }
    const Error error = fetch_error(*src, request);
    EXPECT_EQ(error.code(), ErrorCode::kUnsupportedSelector) << test.name;
    EXPECT_THAT(error.what(), HasSubstr(src->name())) << test.name;
    EXPECT_THAT(error.what(), HasSubstr(std::string(to_string(test.identity.kind())))) << test.name;
    EXPECT_THAT(error.what(), HasSubstr("supports: system-assigned")) << test.name;
  }
  EXPECT_TRUE(http_->requests().empty());
}

TEST_F(SourceTest, WorkloadIdentityRefusesObjectAndResourceIds) {
  const Vars vars{{"AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token"},
                  {"AZURE_CLIENT_ID", "c"},
                  {"AZURE_TENANT_ID", "t"}};
  auto workload = source(vars);
  for (const auto& identity :
       {IdentitySelector::object_id("o"), IdentitySelector::resource_id(kResourceId)}) {
    const Error error = fetch_error(*workload, for_identity(identity));
    EXPECT_EQ(error.code(), ErrorCode::kUnsupportedSelector) << error.what();
    // It has no system-assigned identity: without a selector it signs in as AZURE_CLIENT_ID.
    EXPECT_THAT(error.what(), HasSubstr("supports: default (AZURE_CLIENT_ID), client id"));
    EXPECT_THAT(error.what(), Not(HasSubstr("system-assigned")));
  }
  EXPECT_TRUE(http_->requests().empty());
}

TEST_F(SourceTest, AnEmptySelectorValueIsAConfigurationError) {
  auto imds = source(kImdsVars);
  const Error error = fetch_error(*imds, for_identity(IdentitySelector::client_id("")));
  EXPECT_EQ(error.code(), ErrorCode::kConfiguration);
  EXPECT_TRUE(http_->requests().empty());
}

// ---------------------------------------------------------------------------------------------
// fetch(): answers, statuses, identity checks

TEST_F(SourceTest, FetchReturnsTheTokenWithExpiryFromTheSendTime) {
  auto app = source(kAppServiceVars);
  const SystemTime sent = clock_->now();
  // The endpoint takes 5 s to answer: the expiry still counts from the send.
  http_->set_handler([this](const HttpRequest&, const HttpOptions&) {
    clock_->advance(seconds{5});
    return HttpResponse{200, {}, ok_body(R"(,"resource":"https://vault.azure.net")")};
  });
  const AccessToken token = app->fetch({}, deadline());
  EXPECT_EQ(token.token.reveal(), "tok-SECRET-value");
  EXPECT_EQ(token.expires_on, sent + seconds{3600});
  EXPECT_EQ(token.source, "App Service");
  EXPECT_EQ(token.resource, "https://vault.azure.net");
  EXPECT_EQ(http_->requests().size(), 1u);
}

TEST_F(SourceTest, AttemptBudgetIsTheSmallerOfAttemptTimeoutAndDeadline) {
  SourceContext context;
  context.http = http_;
  context.clock = clock_;
  context.attempt_timeout = milliseconds{10'000};
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  http_->respond(200, ok_body());
  http_->respond(200, ok_body());
  imds->fetch({}, deadline(seconds{60}));
  imds->fetch({}, deadline(milliseconds{2'500}));
  const auto options = http_->options();
  ASSERT_EQ(options.size(), 2u);
  EXPECT_EQ(options[0].timeout, milliseconds{10'000});
  EXPECT_EQ(options[1].timeout, milliseconds{2'500});
  EXPECT_EQ(options[0].max_response_bytes, 1u << 20);
}

// An Entra ID error body with a long description, as workload identity's token endpoint gives:
// the fields a support case needs come out by name, however long the description is.
TEST_F(SourceTest, OAuthErrorFieldsAreKeptByNameAfterALongDescription) {
  auto app = source(kAppServiceVars);
  const std::string description =
      "AADSTS700016: Application with identifier 'x' was not found in the directory. " +
      std::string(400, '.') + " header " + kHeaderSecret;
  http_->respond(400, entra_error_body(description));
  const std::string message = fetch_error(*app).what();
  EXPECT_THAT(message, HasSubstr("error invalid_client"));
  EXPECT_THAT(message, HasSubstr("AADSTS700016"));
  EXPECT_THAT(message, HasSubstr("error_codes [700016]"));
  EXPECT_THAT(message, HasSubstr("timestamp 2026-11-27 10:00:00Z"));
  EXPECT_THAT(message, HasSubstr("trace_id 0f0e0d0c-0b0a-4909-8807-060504030201"));
  EXPECT_THAT(message, HasSubstr("correlation_id 1a2b3c4d-0000-4000-8000-00000000c0de"));
  EXPECT_THAT(message, Not(HasSubstr(kHeaderSecret)));
}

TEST_F(SourceTest, NonSuccessStatusNamesSourceEndpointStatusAndWhatToDo) {
  auto app = source(kAppServiceVars);
  // The endpoint echoes the secret header back: the excerpt must not.
  http_->respond(401, std::string(R"({"error":"unauthorized","error_description":"header )") +
                          kHeaderSecret + R"( is stale"})");
  const Error error = fetch_error(*app);
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_EQ(error.http_status(), 401);
  EXPECT_EQ(error.attempts(), 1);
  EXPECT_EQ(error.source(), "App Service");
  EXPECT_EQ(error.endpoint(), "http://127.0.0.1:8081/msi/token");
  const std::string message = error.what();
  EXPECT_THAT(message, HasSubstr("App Service (http://127.0.0.1:8081/msi/token)"));
  EXPECT_THAT(message, HasSubstr("HTTP 401"));
  EXPECT_THAT(message, HasSubstr("unauthorized"));
  EXPECT_THAT(message, HasSubstr("is stale"));
  EXPECT_THAT(message, HasSubstr("check that IDENTITY_HEADER is current"));
  EXPECT_THAT(message, Not(HasSubstr(kHeaderSecret)));
}

TEST_F(SourceTest, HintsPerSourceAndStatus) {
  struct HintCase {
    Vars vars;
    int status;
    const char* hint;
  };
  const std::vector<HintCase> cases{
      {kImdsVars, 400, "is the identity assigned"},
      {kMsiVars, 401, "check that MSI_SECRET is current"},
      {kMlVars, 403, "check that MSI_SECRET is current"},
      {kServiceFabricVars, 401, "check that IDENTITY_HEADER is current"},
      {kCloudShellVars, 429, "throttling"},
  };
  for (const auto& test : cases) {
    auto src = source(test.vars, std::nullopt, RetryPolicy::no_retries());
    http_->respond(test.status, "");
    const Error error = fetch_error(*src);
    EXPECT_EQ(error.http_status(), test.status);
    EXPECT_THAT(error.what(), HasSubstr(test.hint)) << src->name();
    EXPECT_THAT(error.what(), HasSubstr("empty body"));
    EXPECT_THAT(error.what(), Not(HasSubstr(kHeaderSecret)));
    EXPECT_THAT(error.what(), Not(HasSubstr(kMsiSecretValue)));
  }
}

TEST_F(SourceTest, RetriesFollowTheSourcePolicy) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  SourceContext context;
  context.http = http_;
  context.clock = clock;
  std::vector<AttemptReport> reports;
  context.on_attempt = [&reports](const AttemptReport& report) { reports.push_back(report); };
  auto app = make_source(MapEnvironment(kAppServiceVars), std::nullopt, context);
  http_->respond(503, "busy");
  http_->respond(200, ok_body());
  const AccessToken token = app->fetch({}, clock->steady_now() + seconds{60});
  EXPECT_EQ(token.token.reveal(), "tok-SECRET-value");
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].status, 503);
  EXPECT_EQ(reports[1].status, 200);

  // App Service does not retry 404; IMDS does (it answers 404 while updating).
  http_->respond(404, "");
  EXPECT_EQ(fetch_error(*app).attempts(), 1);
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  http_->respond(404, "");
  http_->respond(404, "");
  http_->respond(200, ok_body());
  EXPECT_EQ(imds->fetch({}, clock->steady_now() + seconds{120}).token.reveal(), "tok-SECRET-value");
}

// Off Azure: IMDS reached by fallback, and nothing accepts the connection. One attempt, with a
// one-second connection budget, and a typed error saying what was looked for; not the IMDS
// policy's half minute of retries.
TEST_F(SourceTest, ImdsByFallbackEndsAtOnceWhenNothingIsThere) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  const SourceContext context = instant_context(clock);
  http_->set_handler([](const HttpRequest&, const HttpOptions&) -> HttpResponse {
    throw Error(ErrorCode::kConnection, "GET http://169.254.169.254/... failed: " +
                                            std::string(kNoConnectionMarker) + "No route to host");
  });
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  try {
    imds->fetch({}, clock->steady_now() + seconds{120});
    FAIL() << "fetched a token with nothing there";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kNoSource) << error.what();
    EXPECT_EQ(error.attempts(), 1);
    EXPECT_THAT(error.what(), HasSubstr("no managed identity endpoint was found"));
    EXPECT_THAT(error.what(), HasSubstr("IDENTITY_ENDPOINT"));
    EXPECT_THAT(error.what(), HasSubstr("AZURE_FEDERATED_TOKEN_FILE"));
    EXPECT_THAT(error.what(), HasSubstr("http://169.254.169.254"));
  }
  ASSERT_EQ(http_->options().size(), 1u);
  EXPECT_EQ(http_->options()[0].connect_timeout, milliseconds{1'000});
}

// The probe's error tells what happened (refused, or no connection within the second), names
// identity variables that were set without the rest of their set, and when the authority is
// AZURE_POD_IDENTITY_AUTHORITY_HOST's, asks whether that endpoint is running.
TEST_F(SourceTest, ImdsProbeErrorSaysWhatHappenedAndWhatWasSet) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  const SourceContext context = instant_context(clock);
  const auto fail_with = [this](ErrorCode code, const std::string& detail) {
    http_->set_handler([code, detail](const HttpRequest&, const HttpOptions&) -> HttpResponse {
      throw Error(code, "GET failed: " + std::string(kNoConnectionMarker) + detail);
    });
  };
  const auto message_of = [&](const MapEnvironment& env) {
    auto imds = make_source(env, std::nullopt, context);
    try {
      imds->fetch({}, clock->steady_now() + seconds{120});
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kNoSource) << error.what();
      return std::string(error.what());
    }
    ADD_FAILURE() << "fetched a token with nothing there";
    return std::string();
  };

  fail_with(ErrorCode::kConnection, "Failed to connect after 0 ms: Couldn't connect to server");
  std::string refused = message_of(MapEnvironment{});
  EXPECT_THAT(refused, HasSubstr("could not be connected to"));
  EXPECT_THAT(refused, Not(HasSubstr("within 1000 ms")));
  EXPECT_THAT(refused, HasSubstr("no other hosting environment's variables are set"));
  EXPECT_THAT(refused, HasSubstr("azkms-emulator --print-env"));

  fail_with(ErrorCode::kTimeout, "Connection timed out after 1000 milliseconds");
  EXPECT_THAT(message_of(MapEnvironment{}), HasSubstr("accepted no connection within 1000 ms"));

  // A deadline shorter than the probe's second: its timeout is the caller's, not a verdict on
  // IMDS, and is not turned into "no managed identity endpoint was found".
  fail_with(ErrorCode::kTimeout, "Connection timed out after 300 milliseconds");
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  try {
    imds->fetch({}, clock->steady_now() + milliseconds{300});
    ADD_FAILURE() << "fetched a token with nothing there";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTimeout) << error.what();
    EXPECT_THAT(error.what(), Not(HasSubstr("no managed identity endpoint")));
  }

  const std::string half_set = message_of(MapEnvironment(std::map<std::string, std::string>{
      {"IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"},
      {"AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9"}}));
  EXPECT_THAT(half_set, HasSubstr("IDENTITY_ENDPOINT is set, but not with the variables"));
  EXPECT_THAT(half_set, Not(HasSubstr("no other hosting environment's variables are set")));
  EXPECT_THAT(half_set,
              HasSubstr("AZURE_POD_IDENTITY_AUTHORITY_HOST names this endpoint: is it running"));
}

// Named explicitly, IMDS is assumed to be there: transport failures are retried as before.
TEST_F(SourceTest, ImdsNamedExplicitlyRetriesTransportFailures) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  const SourceContext context = instant_context(clock);
  int calls = 0;
  http_->set_handler([&calls](const HttpRequest&, const HttpOptions&) -> HttpResponse {
    if (++calls < 3) throw Error(ErrorCode::kConnection, "connection refused");
    return HttpResponse{200, {}, ok_body()};
  });
  auto imds = make_source(MapEnvironment{}, SourceKind::kImds, context);
  EXPECT_EQ(imds->fetch({}, clock->steady_now() + seconds{120}).token.reveal(), "tok-SECRET-value");
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(http_->options()[0].connect_timeout, milliseconds{0});
}

// A connection made and then dropped means IMDS is there: retried as usual.
TEST_F(SourceTest, ImdsByFallbackRetriesAConnectionDroppedAfterItWasMade) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  const SourceContext context = instant_context(clock);
  int calls = 0;
  http_->set_handler([&calls](const HttpRequest&, const HttpOptions&) -> HttpResponse {
    if (++calls == 1) throw Error(ErrorCode::kConnection, "Connection reset by peer");
    return HttpResponse{200, {}, ok_body()};
  });
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  EXPECT_EQ(imds->fetch({}, clock->steady_now() + seconds{120}).token.reveal(), "tok-SECRET-value");
  EXPECT_EQ(calls, 2);
}

// Once IMDS has answered anything, it is there: later transport failures get the full policy.
TEST_F(SourceTest, ImdsByFallbackRetriesOnceItHasAnswered) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  const SourceContext context = instant_context(clock);
  int calls = 0;
  http_->set_handler([&calls](const HttpRequest&, const HttpOptions&) -> HttpResponse {
    ++calls;
    if (calls == 1) return HttpResponse{500, {}, "warming up"};
    if (calls == 2) throw Error(ErrorCode::kConnection, "connection reset");
    return HttpResponse{200, {}, ok_body()};
  });
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  EXPECT_EQ(imds->fetch({}, clock->steady_now() + seconds{120}).token.reveal(), "tok-SECRET-value");
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(http_->options()[2].connect_timeout, milliseconds{0});
}

TEST_F(SourceTest, RetryPolicyOverrideInTheContext) {
  auto imds = source(kImdsVars, std::nullopt, RetryPolicy::no_retries());
  http_->respond(500, "internal");
  const Error error = fetch_error(*imds);
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_EQ(error.http_status(), 500);
  EXPECT_EQ(http_->requests().size(), 1u);
}

TEST_F(SourceTest, ImdsGivesUpWithTheLastStatusAndAttemptCount) {
  auto clock = std::make_shared<testing::AutoAdvanceClock>();
  SourceContext context;
  context.http = http_;
  context.clock = clock;
  auto imds = make_source(MapEnvironment{}, std::nullopt, context);
  http_->set_handler([](const HttpRequest&, const HttpOptions&) {
    return HttpResponse{500, {}, "still failing"};
  });
  try {
    imds->fetch({}, clock->steady_now() + seconds{120});
    FAIL() << "fetched a token from an endpoint that only fails";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
    EXPECT_EQ(error.http_status(), 500);
    EXPECT_EQ(error.attempts(), RetryPolicy::imds().max_attempts);
    EXPECT_EQ(http_->requests().size(), static_cast<std::size_t>(error.attempts()));
    EXPECT_THAT(error.what(), HasSubstr("after 5 attempts"));
    EXPECT_THAT(error.what(), HasSubstr("still failing"));
  }
}

TEST_F(SourceTest, TransportErrorsCarryTheSourceAndEndpoint) {
  auto app = source(kAppServiceVars, std::nullopt, RetryPolicy::no_retries());
  http_->set_handler([](const HttpRequest&, const HttpOptions&) -> HttpResponse {
    throw Error(ErrorCode::kConnection, "connection refused");
  });
  const Error error = fetch_error(*app);
  EXPECT_EQ(error.code(), ErrorCode::kConnection);
  EXPECT_EQ(error.source(), "App Service");
  EXPECT_EQ(error.endpoint(), "http://127.0.0.1:8081/msi/token");
  EXPECT_EQ(error.attempts(), 1);
}

TEST_F(SourceTest, APassedDeadlineSendsNothing) {
  auto app = source(kAppServiceVars);
  try {
    app->fetch({}, clock_->steady_now() - seconds{1});
    FAIL() << "fetched after the deadline";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTimeout);
  }
  EXPECT_TRUE(http_->requests().empty());
}

TEST_F(SourceTest, MalformedBodiesAreTypedAndRedacted) {
  auto app = source(kAppServiceVars);
  http_->respond(200, "<html>login page</html>");
  Error error = fetch_error(*app);
  EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse);
  EXPECT_EQ(error.source(), "App Service");
  EXPECT_THAT(error.what(), HasSubstr("HTML"));

  http_->respond(200, std::string(R"({"access_token": 5, "note": ")") + kHeaderSecret + "\"");
  error = fetch_error(*app);
  EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse);
  EXPECT_THAT(error.what(), Not(HasSubstr(kHeaderSecret)));
}

TEST_F(SourceTest, IdentityMismatchIsAnError) {
  auto imds = source(kImdsVars);
  const TokenRequest asked = for_identity(IdentitySelector::client_id("AAAA-1111"));
  http_->respond(200, ok_body(R"(,"client_id":"bbbb-2222")"));
  const Error error = fetch_error(*imds, asked);
  EXPECT_EQ(error.code(), ErrorCode::kIdentityMismatch);
  EXPECT_THAT(error.what(), HasSubstr("AAAA-1111"));
  EXPECT_THAT(error.what(), HasSubstr("bbbb-2222"));
  EXPECT_THAT(error.what(), Not(HasSubstr("tok-SECRET")));

  // Client ids are GUIDs: case does not matter. No client_id in the answer: nothing to check.
  http_->respond(200, ok_body(R"(,"client_id":"aaaa-1111")"));
  EXPECT_EQ(imds->fetch(asked, deadline()).client_id, "aaaa-1111");
  http_->respond(200, ok_body());
  EXPECT_NO_THROW(imds->fetch(asked, deadline()));
  // System-assigned: any client id is fine.
  http_->respond(200, ok_body(R"(,"client_id":"bbbb-2222")"));
  EXPECT_EQ(imds->fetch({}, deadline()).client_id, "bbbb-2222");
}

TEST_F(SourceTest, AzureMlChecksItsDefaultIdentity) {
  auto ml = source(kMlVars);
  http_->respond(200, ok_body(R"(,"client_id":"someone-else")"));
  EXPECT_EQ(fetch_error(*ml).code(), ErrorCode::kIdentityMismatch);
  http_->respond(200, ok_body(R"(,"client_id":"ml-default-client")"));
  EXPECT_EQ(ml->fetch({}, deadline()).source, "Azure ML");
}

// ---------------------------------------------------------------------------------------------
// Azure Arc challenge

class ArcTest : public SourceTest {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("azkms-arc-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_ / "tokens");
    tokens_ = (dir_ / "tokens").string();
    vars_ = {{"IDENTITY_ENDPOINT", "http://127.0.0.1:40342/metadata/identity/oauth2/token"},
             {"IMDS_ENDPOINT", "http://127.0.0.1:40342"},
             {"AZKMS_ARC_TOKEN_DIRECTORY", tokens_}};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::filesystem::path& path, const std::string& contents) {
    std::ofstream(path, std::ios::binary) << contents;
    return path.string();
  }
  static HttpResponse challenge(const std::string& realm) {
    return HttpResponse{401, {{"WWW-Authenticate", "Basic realm=" + realm}}, ""};
  }

  std::filesystem::path dir_;
  std::string tokens_;
  Vars vars_;
};

TEST_F(ArcTest, AnswersTheChallengeWithTheKeyFile) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "ARC-KEY-SECRET-0042");
  auto arc = source(vars_);
  http_->respond(challenge(key));
  http_->respond(200, ok_body());
  const AccessToken token = arc->fetch({}, deadline());
  EXPECT_EQ(token.source, "Azure Arc");
  const auto requests = http_->requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_FALSE(requests[0].header("Authorization").has_value());
  EXPECT_THAT(requests[1].headers,
              ElementsAre(HttpHeader{"Metadata", "true", false},
                          HttpHeader{"Authorization", "Basic ARC-KEY-SECRET-0042", true}));
  EXPECT_EQ(requests[1].url, requests[0].url);
  EXPECT_THAT(requests[1].describe(), Not(HasSubstr("ARC-KEY-SECRET")));
}

// Current agents serve user-assigned identities; a token is taken only when the response names
// the identity asked for, because an older agent answers with the system-assigned one.
TEST_F(ArcTest, UserAssignedIdentitiesAreSentAndMustBeEchoed) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "ARC-KEY-SECRET-0042");
  struct Case {
    IdentitySelector identity;
    std::string query;
    std::string echo;  // the field naming it in the response
  };
  const std::vector<Case> cases{
      {IdentitySelector::client_id("cid-7"), "&client_id=cid-7", R"("client_id":"CID-7")"},
      {IdentitySelector::object_id("oid-7"), "&object_id=oid-7", R"("object_id":"oid-7")"},
      {IdentitySelector::resource_id(kResourceId), std::string("&msi_res_id=") + kResourceIdEncoded,
       std::string(R"("msi_res_id":")") + kResourceId + "\""},
  };
  for (const auto& test : cases) {
    auto arc = source(vars_);
    const TokenRequest request = for_identity(test.identity);
    EXPECT_THAT(arc->build_request(request).url, ::testing::EndsWith(test.query));

    http_->respond(challenge(key));
    http_->respond(200, ok_body("," + test.echo));
    EXPECT_EQ(arc->fetch(request, deadline()).source, "Azure Arc");

    // No identity named: the system-assigned identity's token from an older agent. Refused.
    http_->respond(challenge(key));
    http_->respond(200, ok_body());
    Error error = fetch_error(*arc, request);
    EXPECT_EQ(error.code(), ErrorCode::kIdentityMismatch) << error.what();
    EXPECT_THAT(error.what(), HasSubstr("does not name the identity"));
    EXPECT_THAT(error.what(), Not(HasSubstr("ARC-KEY-SECRET")));

    // Another identity named: refused too.
    http_->respond(challenge(key));
    http_->respond(200, ok_body(R"(,"client_id":"x","object_id":"y","msi_res_id":"z")"));
    error = fetch_error(*arc, request);
    EXPECT_EQ(error.code(), ErrorCode::kIdentityMismatch) << error.what();
  }
}

// Arc answers 400 "Identity not found" for a user-assigned identity the server does not have:
// the hint names the selector, as App Service's and IMDS's do.
TEST_F(ArcTest, A400HintNamesTheIdentitySelector) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "ARC-KEY-SECRET-0042");
  auto arc = source(vars_, std::nullopt, RetryPolicy::no_retries());
  http_->respond(challenge(key));
  http_->respond(400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  const Error error = fetch_error(*arc, for_identity(IdentitySelector::client_id("cid-7")));
  EXPECT_EQ(error.http_status(), 400) << error.what();
  EXPECT_THAT(error.what(), HasSubstr("check the resource and the identity selector"));
  EXPECT_THAT(error.what(), HasSubstr("assigned to this server"));
  EXPECT_THAT(error.what(), Not(HasSubstr("ARC-KEY-SECRET")));
}

TEST_F(ArcTest, AcceptsAQuotedRealm) {
  const std::string key = write(dir_ / "tokens" / "q.key", "k");
  auto arc = source(vars_);
  http_->respond(HttpResponse{401, {{"www-authenticate", "Basic realm=\"" + key + "\""}}, ""});
  http_->respond(200, ok_body());
  EXPECT_NO_THROW(arc->fetch({}, deadline()));
}

TEST_F(ArcTest, RefusesKeyFilesOutsideTheRulesWithoutReadingThem) {
  write(dir_ / "outside.key", "OUTSIDE-SECRET");
  write(dir_ / "tokens" / "abc.txt", "TXT-SECRET");
  write(dir_ / "tokens" / "big.key", std::string(4097, 'B'));
  std::filesystem::create_symlink(dir_ / "outside.key", dir_ / "tokens" / "link.key");
  std::filesystem::create_directories(dir_ / "tokens" / "dir.key");
  const std::vector<std::pair<std::string, const char*>> realms{
      {(dir_ / "outside.key").string(), "must be a *.key file directly in"},
      {tokens_ + "/../outside.key", "must be a *.key file directly in"},
      {tokens_ + "/sub/x.key", "must be a *.key file directly in"},
      {"tokens/abc.key", "must be a *.key file directly in"},
      {tokens_ + "/abc.txt", "must be a *.key file directly in"},
      {tokens_ + "/.key", "must be a *.key file directly in"},
      {"/etc/passwd", "must be a *.key file directly in"},
      {tokens_ + "/big.key", "4097 bytes"},
      {tokens_ + "/link.key", "not a regular file"},
      {tokens_ + "/dir.key", "not a regular file"},
      {tokens_ + "/missing.key", "cannot find"},
  };
  auto arc = source(vars_);
  for (const auto& [realm, says] : realms) {
    http_->respond(challenge(realm));
    const Error error = fetch_error(*arc);
    EXPECT_EQ(error.code(), ErrorCode::kArcChallenge) << realm << ": " << error.what();
    EXPECT_THAT(error.what(), HasSubstr(says)) << realm;
    EXPECT_THAT(error.what(), Not(HasSubstr("SECRET")));
    EXPECT_THAT(error.what(), Not(HasSubstr("BBBB")));
  }
  // Only first requests went out: no refused file was sent anywhere.
  for (const auto& request : http_->requests()) {
    EXPECT_FALSE(request.header("Authorization").has_value());
  }
  EXPECT_EQ(http_->requests().size(), realms.size());
}

TEST_F(ArcTest, MalformedChallengesAreRefused) {
  auto arc = source(vars_);
  const std::vector<HttpResponse> answers{
      HttpResponse{401, {}, ""},
      HttpResponse{401, {{"WWW-Authenticate", "Basic realm"}}, ""},
      HttpResponse{401, {{"WWW-Authenticate", "Basic realm=" + tokens_ + "/a=b.key"}}, ""},
      HttpResponse{401, {{"WWW-Authenticate", "Bearer realm=" + tokens_ + "/a.key"}}, ""},
      HttpResponse{401, {{"WWW-Authenticate", "Basic realm="}}, ""},
  };
  for (const auto& answer : answers) {
    http_->respond(answer);
    const Error error = fetch_error(*arc);
    EXPECT_EQ(error.code(), ErrorCode::kArcChallenge) << error.what();
  }
}

TEST_F(ArcTest, ASecond401IsAnErrorNotALoop) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "ARC-KEY-SECRET-0042");
  auto arc = source(vars_);  // default retry policy: the challenge failure is not retried
  http_->set_handler([&key](const HttpRequest&, const HttpOptions&) { return challenge(key); });
  const Error error = fetch_error(*arc);
  EXPECT_EQ(error.code(), ErrorCode::kArcChallenge);
  EXPECT_THAT(error.what(), HasSubstr("401 again"));
  EXPECT_THAT(error.what(), Not(HasSubstr("ARC-KEY-SECRET")));
  EXPECT_EQ(http_->requests().size(), 2u);
}

TEST_F(ArcTest, AnEchoedKeyIsRedacted) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "ARC-KEY-SECRET-0042");
  auto arc = source(vars_, std::nullopt, RetryPolicy::no_retries());
  http_->respond(challenge(key));
  http_->respond(500, "bad key ARC-KEY-SECRET-0042 given");
  const Error error = fetch_error(*arc);
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_EQ(error.http_status(), 500);
  EXPECT_THAT(error.what(), HasSubstr("bad key"));
  EXPECT_THAT(error.what(), Not(HasSubstr("ARC-KEY-SECRET")));
}

TEST_F(ArcTest, OtherFirstAnswersAreNotChallenges) {
  auto arc = source(vars_, std::nullopt, RetryPolicy::no_retries());
  http_->respond(403, "forbidden");
  const Error error = fetch_error(*arc);
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_EQ(http_->requests().size(), 1u);
}

TEST_F(ArcTest, DefaultDirectoryIsTheAgents) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "k");
  Vars vars = vars_;
  vars.erase("AZKMS_ARC_TOKEN_DIRECTORY");
  auto arc = source(vars);
  http_->respond(challenge(key));
  const Error error = fetch_error(*arc);
  EXPECT_EQ(error.code(), ErrorCode::kArcChallenge);
  EXPECT_THAT(error.what(), HasSubstr("/var/opt/azcmagent/tokens"));
}

TEST_F(ArcTest, OptionsFromCode) {
  const std::string key = write(dir_ / "tokens" / "abc.key", "k");
  SourceContext context;
  context.http = http_;
  context.clock = clock_;
  ArcOptions options;
  options.endpoint = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
  options.key_directory = tokens_ + "/";
  auto arc = make_azure_arc_source(options, context);
  http_->respond(challenge(key));
  http_->respond(200, ok_body());
  EXPECT_NO_THROW(arc->fetch({}, deadline()));
  options.key_directory = "relative/dir";
  EXPECT_THROW(make_azure_arc_source(options, context), Error);
}

// ---------------------------------------------------------------------------------------------
// Callback source

TEST(CallbackSource, PassesTokensAndWrapsFailures) {
  const SystemTime expiry{seconds{2'000'000'000}};
  auto ok = make_callback_source(
      [&](const TokenRequest& request, Deadline) {
        AccessToken token;
        token.token = Secret("from-callback");
        token.expires_on = expiry;
        EXPECT_EQ(request.resource, "https://vault.azure.net");
        return token;
      },
      "my sdk");
  const AccessToken token = ok->fetch({}, Deadline::max());
  EXPECT_EQ(token.token.reveal(), "from-callback");
  EXPECT_EQ(token.source, "my sdk");
  EXPECT_EQ(token.resource, "https://vault.azure.net");
  EXPECT_EQ(ok->kind(), SourceKind::kCustom);

  auto throws = make_callback_source(
      [](const TokenRequest&, Deadline) -> AccessToken { throw std::runtime_error("sdk down"); });
  try {
    throws->fetch({}, Deadline::max());
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kCallback);
    EXPECT_THAT(error.what(), HasSubstr("sdk down"));
  }

  auto typed = make_callback_source([](const TokenRequest&, Deadline) -> AccessToken {
    throw Error(ErrorCode::kTimeout, "too slow");
  });
  try {
    typed->fetch({}, Deadline::max());
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTimeout);
  }

  auto empty = make_callback_source([](const TokenRequest&, Deadline) { return AccessToken{}; });
  try {
    empty->fetch({}, Deadline::max());
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kCallback);
  }
  EXPECT_THROW(make_callback_source(nullptr), Error);
}

}  // namespace
}  // namespace azkms
