// Every source end to end: detected from the emulator's client environment, sending through
// the real libcurl client to the emulator on loopback, and the token checked against the
// emulator's ledger. Then the MongoDB drivers' IMDS cases, each with its own typed error, and
// the deadline honoured by the slow case. Nothing here reaches beyond loopback: sources are
// refused unless their endpoint is loopback, and the HTTP client refuses any other address.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "loopback_only.hpp"

namespace azkms {
namespace {

using emulator::Endpoint;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;
using Vars = std::map<std::string, std::string>;

constexpr const char* kIdentityHeader = "e2e-IDENTITY-HEADER-7f3a52";
constexpr const char* kMsiSecret = "e2e-MSI-SECRET-9c1d08";

class SourcesEndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    emulator::Options options;
    options.identity_header = kIdentityHeader;
    options.msi_secret = kMsiSecret;
    options.identities = emulator::default_identities();
    // Azure ML's default identity: the second user-assigned one, so that it differs from both
    // the system-assigned identity and the one workload identity uses.
    options.azure_ml_default_client_id = options.identities.at(2).client_id;
    emulator_ = new emulator::Emulator(options);
    emulator_->start();
  }
  static void TearDownTestSuite() {
    delete emulator_;
    emulator_ = nullptr;
  }
  void SetUp() override { emulator_->clear_faults(); }
  void TearDown() override {
    // Whatever a test did, no message it saw may carry a secret the emulator demands.
    for (const auto& message : messages_) {
      EXPECT_THAT(message, Not(HasSubstr(kIdentityHeader)));
      EXPECT_THAT(message, Not(HasSubstr(kMsiSecret)));
      EXPECT_THAT(message, Not(HasSubstr(emulator_->federated_token())));
    }
  }

  static emulator::Emulator& emu() { return *emulator_; }
  static const emulator::Identity& identity(std::size_t index) {
    return emu().options().identities.at(index);
  }

  // The environment a process hosted by `endpoint` would see.
  static Vars environment_of(Endpoint endpoint) {
    Vars vars = emu().client_environment(endpoint);
    // The emulator writes Arc key files to its own directory: trusted test configuration.
    if (endpoint == Endpoint::kAzureArc)
      vars["AZKMS_ARC_TOKEN_DIRECTORY"] = emu().arc_key_directory();
    return vars;
  }

  static SourceContext loopback_context(std::optional<RetryPolicy> policy = std::nullopt) {
    SourceContext context;
    context.http = std::make_shared<testing::LoopbackOnlyHttpClient>(make_curl_http_client());
    context.clock = Clock::system();
    context.retry_policy = std::move(policy);
    return context;
  }

  static std::shared_ptr<HttpTokenSource> source_for(Endpoint endpoint,
                                                     std::optional<RetryPolicy> policy = {},
                                                     std::optional<SourceKind> force = {}) {
    const Detection detection =
        detect(MapEnvironment(environment_of(endpoint)), force, loopback_context(policy));
    return testing::require_loopback(detection.source);
  }

  static Deadline deadline_in(milliseconds budget = seconds{20}) {
    return Clock::system()->steady_now() + budget;
  }

  Error fetch_error(HttpTokenSource& source, const TokenRequest& request = {},
                    Deadline deadline = deadline_in()) {
    try {
      source.fetch(request, deadline);
    } catch (const Error& error) {
      messages_.emplace_back(error.what());
      return error;
    }
    ADD_FAILURE() << source.name() << ": fetch succeeded";
    return Error(ErrorCode::kNoSource, "no error");
  }

  // The client id the emulator issued `token` to (fails the test when it did not issue it).
  static std::string issued_to(const AccessToken& token) {
    const auto record = emu().ledger().lookup(token.token.reveal());
    if (!record) {
      ADD_FAILURE() << "the emulator did not issue this token";
      return {};
    }
    EXPECT_EQ(record->resource, "https://vault.azure.net");
    return record->client_id;
  }

  std::vector<std::string> messages_;
  static emulator::Emulator* emulator_;
};

emulator::Emulator* SourcesEndToEnd::emulator_ = nullptr;

TokenRequest for_identity(IdentitySelector identity) {
  TokenRequest request;
  request.identity = std::move(identity);
  return request;
}

struct EndpointCase {
  Endpoint endpoint;
  SourceKind kind;
  std::size_t default_identity;  // index in default_identities()
};

const std::vector<EndpointCase> kEndpoints{
    {Endpoint::kImds, SourceKind::kImds, 0},
    {Endpoint::kAppService, SourceKind::kAppService, 0},
    {Endpoint::kAppService2017, SourceKind::kAppService2017, 0},
    {Endpoint::kAzureMl, SourceKind::kAzureMl, 2},
    {Endpoint::kCloudShell, SourceKind::kCloudShell, 0},
    {Endpoint::kAzureArc, SourceKind::kAzureArc, 0},
    {Endpoint::kServiceFabric, SourceKind::kServiceFabric, 0},
    {Endpoint::kWorkloadIdentity, SourceKind::kWorkloadIdentity, 1},
};

TEST_F(SourcesEndToEnd, EverySourceIsDetectedAndFetchesItsDefaultIdentity) {
  for (const auto& test : kEndpoints) {
    SCOPED_TRACE(std::string(emulator::to_string(test.endpoint)));
    const Detection detection =
        detect(MapEnvironment(environment_of(test.endpoint)), std::nullopt, loopback_context());
    ASSERT_EQ(detection.kind, test.kind);
    auto source = testing::require_loopback(detection.source);
    EXPECT_EQ(detection.endpoint, emu().token_url(test.endpoint));

    const auto served_before = emu().requests_served(test.endpoint);
    const SystemTime before = std::chrono::system_clock::now();
    const AccessToken token = source->fetch({}, deadline_in());
    EXPECT_FALSE(token.token.empty());
    EXPECT_EQ(token.source, display_name(test.kind));
    EXPECT_EQ(issued_to(token), identity(test.default_identity).client_id);
    // The emulator issues hour-long tokens; every response shape must land near that.
    EXPECT_GT(token.expires_on, before + seconds{3600 - 120});
    EXPECT_LT(token.expires_on, before + seconds{3600 + 120});
    EXPECT_GE(emu().requests_served(test.endpoint), served_before + 1);
  }
}

TEST_F(SourcesEndToEnd, UserAssignedIdentitiesThroughEachSourcesParameters) {
  const auto& user = identity(1);
  struct SelectorCase {
    Endpoint endpoint;
    IdentitySelector identity;
  };
  const std::vector<SelectorCase> cases{
      {Endpoint::kImds, IdentitySelector::client_id(user.client_id)},
      {Endpoint::kImds, IdentitySelector::object_id(user.object_id)},
      {Endpoint::kImds, IdentitySelector::resource_id(user.resource_id)},
      {Endpoint::kAppService, IdentitySelector::client_id(user.client_id)},
      {Endpoint::kAppService, IdentitySelector::object_id(user.object_id)},
      {Endpoint::kAppService, IdentitySelector::resource_id(user.resource_id)},
      {Endpoint::kAppService2017, IdentitySelector::client_id(user.client_id)},
      {Endpoint::kAzureMl, IdentitySelector::client_id(user.client_id)},
  };
  for (const auto& test : cases) {
    SCOPED_TRACE(std::string(emulator::to_string(test.endpoint)) + " " + test.identity.describe());
    auto source = source_for(test.endpoint);
    const AccessToken token = source->fetch(for_identity(test.identity), deadline_in());
    EXPECT_EQ(issued_to(token), user.client_id);
  }
  // Workload identity: a client id names another app registration.
  auto workload = source_for(Endpoint::kWorkloadIdentity);
  const AccessToken token = workload->fetch(
      for_identity(IdentitySelector::client_id(identity(2).client_id)), deadline_in());
  EXPECT_EQ(issued_to(token), identity(2).client_id);
}

TEST_F(SourcesEndToEnd, AResponseForAnotherIdentityIsRefused) {
  for (auto endpoint : {Endpoint::kImds, Endpoint::kAppService, Endpoint::kAppService2017}) {
    SCOPED_TRACE(std::string(emulator::to_string(endpoint)));
    auto source = source_for(endpoint, RetryPolicy::no_retries());
    emu().inject(endpoint, "wrong-identity");
    const Error error =
        fetch_error(*source, for_identity(IdentitySelector::client_id(identity(1).client_id)));
    EXPECT_EQ(error.code(), ErrorCode::kIdentityMismatch) << error.what();
    EXPECT_THAT(error.what(), HasSubstr(identity(1).client_id));
  }
}

// The MongoDB drivers' shared IMDS cases, each with its own typed error. The drivers' tests do
// not retry, so neither does the source here.
TEST_F(SourcesEndToEnd, DriversImdsCases) {
  struct DriverCase {
    const char* name;
    ErrorCode code;
    int status;
  };
  const std::vector<DriverCase> cases{
      {"empty-json", ErrorCode::kMalformedResponse, 200},
      {"bad-json", ErrorCode::kMalformedResponse, 200},
      {"404", ErrorCode::kHttpStatus, 404},
      {"500", ErrorCode::kHttpStatus, 500},
      {"giant", ErrorCode::kResponseTooLarge, 0},
  };
  auto imds = source_for(Endpoint::kImds, RetryPolicy::no_retries());
  for (const auto& test : cases) {
    SCOPED_TRACE(test.name);
    emu().inject(Endpoint::kImds, test.name);
    const Error error = fetch_error(*imds);
    EXPECT_EQ(error.code(), test.code) << error.what();
    EXPECT_EQ(error.source(), "IMDS");
    EXPECT_EQ(error.endpoint(), emu().token_url(Endpoint::kImds));
    if (test.status != 0 && test.code == ErrorCode::kHttpStatus) {
      EXPECT_EQ(error.http_status(), test.status);
      // The error carries the body (the emulator answers with a JSON error document).
      EXPECT_THAT(error.what(), HasSubstr("error"));
      EXPECT_THAT(error.what(), HasSubstr("HTTP " + std::to_string(test.status)));
    }
  }

  // The default answer of the drivers' server: a token living 70 s.
  emu().inject(Endpoint::kImds, "drivers-default");
  const SystemTime before = std::chrono::system_clock::now();
  const AccessToken token = imds->fetch({}, deadline_in());
  EXPECT_GE(token.expires_on, before + seconds{70});
  EXPECT_LT(token.expires_on, before + seconds{70 + 30});
}

TEST_F(SourcesEndToEnd, SlowCaseHonoursTheDeadline) {
  for (const auto& policy : {RetryPolicy::no_retries(), RetryPolicy::imds()}) {
    auto imds = source_for(Endpoint::kImds, policy);
    emu().inject(Endpoint::kImds, "slow", 100);
    const milliseconds budget{1'500};
    const auto started = std::chrono::steady_clock::now();
    const Error error = fetch_error(*imds, {}, Clock::system()->steady_now() + budget);
    const auto elapsed = std::chrono::steady_clock::now() - started;
    emu().clear_faults();
    EXPECT_EQ(error.code(), ErrorCode::kTimeout) << error.what();
    // Finished at the deadline, give or take generous slack for a loaded machine.
    EXPECT_LT(elapsed, budget + seconds{5});
  }
}

TEST_F(SourcesEndToEnd, MalformedAnswersFromEverySource) {
  for (const auto& test : kEndpoints) {
    auto source = source_for(test.endpoint, RetryPolicy::no_retries());
    for (const char* fault : {"empty-json", "bad-json", "html", "non-string-token"}) {
      SCOPED_TRACE(std::string(emulator::to_string(test.endpoint)) + " " + fault);
      emu().inject(test.endpoint, fault);
      const Error error = fetch_error(*source);
      EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << error.what();
      EXPECT_EQ(error.source(), display_name(test.kind));
    }
  }
}

TEST_F(SourcesEndToEnd, RetryableAnswersAreRetriedWithinTheDeadline) {
  // 429 with Retry-After: 1, then the normal answer.
  auto app = source_for(Endpoint::kAppService);
  emu().inject(Endpoint::kAppService, "429");
  const auto served = emu().requests_served(Endpoint::kAppService);
  const AccessToken token = app->fetch({}, deadline_in());
  EXPECT_EQ(issued_to(token), identity(0).client_id);
  EXPECT_EQ(emu().requests_served(Endpoint::kAppService), served + 2);

  // A reset connection is a transport error, retried under the endpoint's policy.
  emu().inject(Endpoint::kAppService, "reset");
  EXPECT_FALSE(app->fetch({}, deadline_in()).token.empty());
  auto once = source_for(Endpoint::kAppService, RetryPolicy::no_retries());
  emu().inject(Endpoint::kAppService, "reset");
  EXPECT_EQ(fetch_error(*once).code(), ErrorCode::kConnection);
}

TEST_F(SourcesEndToEnd, RedirectsAreNeverFollowed) {
  auto app = source_for(Endpoint::kAppService, RetryPolicy::no_retries());
  emu().inject(Endpoint::kAppService, "redirect");
  const auto issued = emu().tokens_issued(Endpoint::kAppService);
  const Error error = fetch_error(*app);
  EXPECT_EQ(error.code(), ErrorCode::kRedirect) << error.what();
  EXPECT_EQ(emu().tokens_issued(Endpoint::kAppService), issued);
}

TEST_F(SourcesEndToEnd, AStaleIdentityHeaderSaysWhatToDo) {
  Vars vars = environment_of(Endpoint::kAppService);
  vars["IDENTITY_HEADER"] = "stale-HEADER-value-00";
  auto app = testing::require_loopback(
      detect(MapEnvironment(vars), std::nullopt, loopback_context()).source);
  const Error error = fetch_error(*app);
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_THAT(error.http_status(), ::testing::AnyOf(401, 403));
  EXPECT_THAT(error.what(), HasSubstr("check that IDENTITY_HEADER is current"));
  EXPECT_THAT(error.what(), Not(HasSubstr("stale-HEADER-value-00")));
}

TEST_F(SourcesEndToEnd, ServiceFabricRefusesAnotherCertificate) {
  Vars vars = environment_of(Endpoint::kServiceFabric);
  vars["IDENTITY_SERVER_THUMBPRINT"] =
      "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33";
  auto fabric = testing::require_loopback(
      detect(MapEnvironment(vars), std::nullopt, loopback_context()).source);
  const auto issued = emu().tokens_issued(Endpoint::kServiceFabric);
  const Error error = fetch_error(*fabric);
  EXPECT_EQ(error.code(), ErrorCode::kTls) << error.what();
  EXPECT_EQ(emu().tokens_issued(Endpoint::kServiceFabric), issued);
}

// The azkms client asks Arc for each user-assigned identity by each selector, and the
// emulator's answer names it, so the token is accepted; the ledger says whose it is.
TEST_F(SourcesEndToEnd, ArcUserAssignedIdentitiesByEverySelector) {
  auto arc = source_for(Endpoint::kAzureArc);
  for (const auto& identity : emulator::default_identities()) {
    if (identity.system_assigned) continue;
    for (const IdentitySelector& selector : {IdentitySelector::client_id(identity.client_id),
                                             IdentitySelector::object_id(identity.object_id),
                                             IdentitySelector::resource_id(identity.resource_id)}) {
      SCOPED_TRACE(selector.describe());
      TokenRequest request;
      request.identity = selector;
      const AccessToken token = arc->fetch(request, deadline_in());
      const auto issued = emu().ledger().lookup(token.token.reveal());
      ASSERT_TRUE(issued.has_value());
      EXPECT_EQ(issued->client_id, identity.client_id);
    }
  }
}

TEST_F(SourcesEndToEnd, ArcChallengeFaultsAreRefused) {
  auto arc = source_for(Endpoint::kAzureArc);
  for (const char* fault :
       {"arc-no-realm", "arc-bad-realm", "arc-outside-dir", "arc-not-key", "arc-big-key"}) {
    SCOPED_TRACE(fault);
    emu().inject(Endpoint::kAzureArc, fault);
    const Error error = fetch_error(*arc);
    EXPECT_EQ(error.code(), ErrorCode::kArcChallenge) << error.what();
  }
  // Without the development override the emulator's key directory is not trusted.
  Vars vars = environment_of(Endpoint::kAzureArc);
  vars.erase("AZKMS_ARC_TOKEN_DIRECTORY");
  auto strict = testing::require_loopback(
      detect(MapEnvironment(vars), std::nullopt, loopback_context()).source);
  const Error error = fetch_error(*strict);
  EXPECT_EQ(error.code(), ErrorCode::kArcChallenge);
  EXPECT_THAT(error.what(), HasSubstr("/var/opt/azcmagent/tokens"));
}

TEST(LoopbackGuard, RefusesNonLoopbackTargets) {
  EXPECT_TRUE(testing::is_loopback_url("http://127.0.0.1:8080/x"));
  EXPECT_TRUE(testing::is_loopback_url("http://localhost:40342/metadata"));
  EXPECT_TRUE(testing::is_loopback_url("http://[::1]:1/x"));
  EXPECT_FALSE(testing::is_loopback_url("http://169.254.169.254/metadata/identity/oauth2/token"));
  EXPECT_FALSE(testing::is_loopback_url("https://login.microsoftonline.com/t/oauth2/v2.0/token"));
  EXPECT_FALSE(testing::is_loopback_url("http://127.0.0.1.example.com/x"));
  EXPECT_FALSE(testing::is_loopback_url("not a url"));

  // The default IMDS source targets the link-local address: refused before it can send.
  SourceContext context;
  context.http = std::make_shared<testing::LoopbackOnlyHttpClient>(make_curl_http_client());
  context.retry_policy = RetryPolicy::no_retries();
  auto imds = make_source(MapEnvironment{}, SourceKind::kImds, context);
  {
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      EXPECT_THROW(testing::require_loopback(imds), std::runtime_error);
    }
    ASSERT_EQ(failures.size(), 1);
    EXPECT_THAT(failures.GetTestPartResult(0).message(),
                HasSubstr("tests may only reach loopback addresses"));
  }
  // And the client wrapper refuses such a request even when a test forgets the check.
  {
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      try {
        imds->fetch({}, Clock::system()->steady_now() + seconds{5});
      } catch (const Error& error) {
        EXPECT_EQ(error.code(), ErrorCode::kConnection);
      }
    }
    ASSERT_EQ(failures.size(), 1);
    EXPECT_THAT(failures.GetTestPartResult(0).message(), HasSubstr("non-loopback address"));
  }
}

}  // namespace
}  // namespace azkms
