// Detection: every combination of the reference table's variables, forced sources, and
// missing or invalid variables. Environments are MapEnvironments: nothing is sent anywhere.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bitset>
#include <map>
#include <string>

#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "http_token_source.hpp"

namespace azkms {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Vars = std::map<std::string, std::string>;

constexpr const char* kHeaderSecret = "header-secret-6f1d2c";
constexpr const char* kMsiSecretValue = "msi-secret-93ab77";
constexpr const char* kThumbprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";

// A context that can never reach the network: detection builds sources but sends nothing.
class RefusingHttpClient final : public HttpClient {
 public:
  HttpResponse send(const HttpRequest&, const HttpOptions&) override {
    ADD_FAILURE() << "detection must not send requests";
    throw Error(ErrorCode::kConnection, "refused by the test");
  }
};

SourceContext offline() {
  SourceContext context;
  context.http = std::make_shared<RefusingHttpClient>();
  context.clock = std::make_shared<ManualClock>();
  return context;
}

Detection detect_in(const MapEnvironment& env, std::optional<SourceKind> force = std::nullopt) {
  return detect(env, force, offline());
}

Error detect_error(const MapEnvironment& env, std::optional<SourceKind> force = std::nullopt) {
  try {
    detect_in(env, force);
  } catch (const Error& error) {
    return error;
  }
  ADD_FAILURE() << "detection succeeded";
  return Error(ErrorCode::kNoSource, "no error");
}

// The variables of the reference table, one bit each, and the agent binary.
enum Bit {
  kIdentityEndpoint,
  kIdentityHeader,
  kThumbprintBit,
  kImdsEndpoint,
  kMsiEndpoint,
  kMsiSecret,
  kDefaultClientId,
  kTokenFile,
  kClientId,
  kTenantId,
  kHimds,
  kBits
};

MapEnvironment environment_for(std::bitset<kBits> bits) {
  MapEnvironment env;
  if (bits[kIdentityEndpoint]) env.set("IDENTITY_ENDPOINT", "https://127.0.0.1:2377/msi/token");
  if (bits[kIdentityHeader]) env.set("IDENTITY_HEADER", kHeaderSecret);
  if (bits[kThumbprintBit]) env.set("IDENTITY_SERVER_THUMBPRINT", kThumbprint);
  if (bits[kImdsEndpoint]) env.set("IMDS_ENDPOINT", "http://localhost:40342");
  if (bits[kMsiEndpoint]) env.set("MSI_ENDPOINT", "http://127.0.0.1:8081/msi/token");
  if (bits[kMsiSecret]) env.set("MSI_SECRET", kMsiSecretValue);
  if (bits[kDefaultClientId]) env.set("DEFAULT_IDENTITY_CLIENT_ID", "aaaa-ml-default");
  if (bits[kTokenFile]) env.set("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token");
  if (bits[kClientId]) env.set("AZURE_CLIENT_ID", "bbbb-client");
  if (bits[kTenantId]) env.set("AZURE_TENANT_ID", "contoso.onmicrosoft.com");
  if (bits[kHimds]) env.add_file("/opt/azcmagent/bin/himds");
  return env;
}

// The reference table, read top to bottom: the first row whose variables are all set wins.
SourceKind expected_kind(std::bitset<kBits> b) {
  if (b[kIdentityEndpoint] && b[kIdentityHeader] && b[kThumbprintBit]) {
    return SourceKind::kServiceFabric;
  }
  if (b[kIdentityEndpoint] && b[kIdentityHeader]) return SourceKind::kAppService;
  if (b[kMsiEndpoint] && b[kMsiSecret] && b[kDefaultClientId]) return SourceKind::kAzureMl;
  if (b[kMsiEndpoint] && b[kMsiSecret]) return SourceKind::kAppService2017;
  if (b[kMsiEndpoint]) return SourceKind::kCloudShell;
  if ((b[kIdentityEndpoint] && b[kImdsEndpoint] && !b[kIdentityHeader]) || b[kHimds]) {
    return SourceKind::kAzureArc;
  }
  if (b[kTokenFile] && b[kClientId] && b[kTenantId]) return SourceKind::kWorkloadIdentity;
  return SourceKind::kImds;
}

TEST(Detect, EveryCombinationOfTheReferenceTableVariables) {
  std::map<SourceKind, int> seen;
  for (unsigned mask = 0; mask < (1u << kBits); ++mask) {
    const std::bitset<kBits> bits(mask);
    const MapEnvironment env = environment_for(bits);
    const Detection detection = detect_in(env);
    const SourceKind expected = expected_kind(bits);
    ASSERT_EQ(detection.kind, expected) << "variables " << bits.to_string();
    ASSERT_TRUE(detection.source);
    EXPECT_EQ(detection.source->kind(), expected);
    EXPECT_FALSE(detection.forced);
    EXPECT_FALSE(detection.reason.empty());
    const auto source = as_http_source(detection.source);
    EXPECT_EQ(detection.endpoint, source->endpoint());
    EXPECT_EQ(detection.supported_selectors, source->supported_selectors());
    // Everything set is reported, secrets redacted, and no secret appears anywhere.
    std::size_t expected_count = bits.count();
    EXPECT_EQ(detection.variables.size(), expected_count) << bits.to_string();
    for (const auto& variable : detection.variables) {
      EXPECT_THAT(variable.value, Not(HasSubstr("secret-"))) << variable.name;
      if (variable.name == "IDENTITY_HEADER" || variable.name == "MSI_SECRET") {
        EXPECT_EQ(variable.value, "[redacted]");
      }
    }
    EXPECT_THAT(detection.reason, Not(HasSubstr("secret-")));
    EXPECT_THAT(detection.endpoint, Not(HasSubstr("secret-")));
    ++seen[expected];
  }
  EXPECT_EQ(seen.size(), 8u) << "every source is reached by some combination";
}

TEST(Detect, NothingSetFallsBackToImds) {
  const Detection detection = detect_in(MapEnvironment{});
  EXPECT_EQ(detection.kind, SourceKind::kImds);
  EXPECT_EQ(detection.endpoint, "http://169.254.169.254/metadata/identity/oauth2/token");
  EXPECT_THAT(detection.reason, HasSubstr("fallback"));
  EXPECT_TRUE(detection.variables.empty());
  EXPECT_EQ(detection.supported_selectors,
            kSupportsSystemAssigned | kSupportsClientId | kSupportsObjectId | kSupportsResourceId);
}

// A half-configured environment is not an empty one: the fallback's reason names what is set.
TEST(Detect, VariablesSetWithoutTheRestOfTheirSetAreNamedInTheFallbacksReason) {
  const std::map<std::string, std::string> vars{
      {"IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"}, {"MSI_SECRET", "secret-value"}};
  const Detection detection = detect_in(MapEnvironment(vars));
  EXPECT_EQ(detection.kind, SourceKind::kImds);
  EXPECT_THAT(detection.reason,
              HasSubstr("IDENTITY_ENDPOINT and MSI_SECRET are set, but not with"));
  EXPECT_THAT(detection.reason, HasSubstr("IMDS is the fallback"));
  EXPECT_THAT(detection.reason, Not(HasSubstr("no other hosting environment")));
  EXPECT_THAT(detection.reason, Not(HasSubstr("secret-value")));
}

TEST(Detect, PodIdentityAuthorityIsJoinedWithoutADoubleSlash) {
  for (const char* authority : {"http://127.0.0.1:2579", "http://127.0.0.1:2579/"}) {
    MapEnvironment env(Vars{{"AZURE_POD_IDENTITY_AUTHORITY_HOST", authority}});
    const Detection detection = detect_in(env);
    EXPECT_EQ(detection.kind, SourceKind::kImds);
    EXPECT_EQ(detection.endpoint, "http://127.0.0.1:2579/metadata/identity/oauth2/token")
        << authority;
  }
}

TEST(Detect, EmptyVariablesCountAsUnset) {
  MapEnvironment env(Vars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:1/token"},
                          {"IDENTITY_HEADER", ""},
                          {"IMDS_ENDPOINT", "http://127.0.0.1:2"}});
  EXPECT_EQ(detect_in(env).kind, SourceKind::kAzureArc);
  env.set("MSI_ENDPOINT", "");
  EXPECT_EQ(detect_in(env).kind, SourceKind::kAzureArc);
}

TEST(Detect, ReasonsNameTheVariables) {
  MapEnvironment app(
      Vars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:1/token"}, {"IDENTITY_HEADER", kHeaderSecret}});
  EXPECT_EQ(detect_in(app).reason, "IDENTITY_ENDPOINT and IDENTITY_HEADER are set");
  MapEnvironment shell(Vars{{"MSI_ENDPOINT", "http://127.0.0.1:1/token"}});
  EXPECT_EQ(detect_in(shell).reason, "MSI_ENDPOINT is set alone");
  MapEnvironment arc(Vars{}, {"/opt/azcmagent/bin/himds"});
  EXPECT_THAT(detect_in(arc).reason, HasSubstr("/opt/azcmagent/bin/himds"));
}

TEST(Detect, EndpointsPerSource) {
  MapEnvironment app(Vars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:41234/msi/token"},
                          {"IDENTITY_HEADER", kHeaderSecret}});
  EXPECT_EQ(detect_in(app).endpoint, "http://127.0.0.1:41234/msi/token");

  MapEnvironment arc_agent(Vars{}, {"/opt/azcmagent/bin/himds"});
  EXPECT_EQ(detect_in(arc_agent).endpoint, "http://localhost:40342/metadata/identity/oauth2/token");

  MapEnvironment arc_vars(Vars{{"IDENTITY_ENDPOINT",
                                "http://127.0.0.1:40342/metadata/identity/"
                                "oauth2/token"},
                               {"IMDS_ENDPOINT", "http://127.0.0.1:40342"}});
  EXPECT_EQ(detect_in(arc_vars).endpoint, "http://127.0.0.1:40342/metadata/identity/oauth2/token");

  MapEnvironment workload(Vars{{"AZURE_FEDERATED_TOKEN_FILE", "/tmp/t"},
                               {"AZURE_CLIENT_ID", "c"},
                               {"AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"}});
  EXPECT_EQ(detect_in(workload).endpoint,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/"
            "token");
  workload.set("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us");
  EXPECT_EQ(detect_in(workload).endpoint,
            "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/"
            "token");
  workload.set("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9999/");
  EXPECT_EQ(detect_in(workload).endpoint,
            "http://127.0.0.1:9999/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token");
}

TEST(Detect, SupportedSelectorsPerSource) {
  const std::uint8_t all =
      kSupportsSystemAssigned | kSupportsClientId | kSupportsObjectId | kSupportsResourceId;
  const std::uint8_t client = kSupportsSystemAssigned | kSupportsClientId;
  const std::map<SourceKind, std::uint8_t> expected{
      {SourceKind::kImds, all},
      {SourceKind::kAppService, all},
      {SourceKind::kAppService2017, client},
      {SourceKind::kAzureMl, client},
      {SourceKind::kCloudShell, kSupportsSystemAssigned},
      {SourceKind::kAzureArc, all},
      {SourceKind::kServiceFabric, kSupportsSystemAssigned},
      {SourceKind::kWorkloadIdentity, client},
  };
  const std::bitset<kBits> everything((1u << kBits) - 1);
  const MapEnvironment env = environment_for(everything);
  for (const auto& [kind, selectors] : expected) {
    const Detection detection = detect_in(env, kind);
    EXPECT_EQ(detection.kind, kind);
    EXPECT_TRUE(detection.forced);
    EXPECT_EQ(detection.supported_selectors, selectors) << to_string(kind);
  }
}

TEST(Detect, ForcedSourceWinsOverDetection) {
  MapEnvironment env(Vars{{"IDENTITY_ENDPOINT", "https://127.0.0.1:2377/token"},
                          {"IDENTITY_HEADER", kHeaderSecret},
                          {"IDENTITY_SERVER_THUMBPRINT", kThumbprint}});
  EXPECT_EQ(detect_in(env).kind, SourceKind::kServiceFabric);
  const Detection forced = detect_in(env, SourceKind::kAppService);
  EXPECT_EQ(forced.kind, SourceKind::kAppService);
  EXPECT_TRUE(forced.forced);
  EXPECT_THAT(forced.reason, HasSubstr("named explicitly"));
  const Detection imds = detect_in(env, SourceKind::kImds);
  EXPECT_EQ(imds.kind, SourceKind::kImds);
  EXPECT_EQ(imds.endpoint, "http://169.254.169.254/metadata/identity/oauth2/token");
}

TEST(Detect, ForcedSourcesWithRelaxedRequirements) {
  // Azure ML without DEFAULT_IDENTITY_CLIENT_ID is detected as App Service 2017, but can be
  // named.
  MapEnvironment msi(Vars{{"MSI_ENDPOINT", "http://127.0.0.1:1/token"}, {"MSI_SECRET", "s3cr3t"}});
  EXPECT_EQ(detect_in(msi).kind, SourceKind::kAppService2017);
  EXPECT_EQ(detect_in(msi, SourceKind::kAzureMl).kind, SourceKind::kAzureMl);
  EXPECT_EQ(detect_in(msi, SourceKind::kCloudShell).kind, SourceKind::kCloudShell);
  // Azure Arc named with IDENTITY_ENDPOINT alone.
  MapEnvironment arc(Vars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:40342/token"}});
  EXPECT_EQ(detect_in(arc).kind, SourceKind::kImds);
  EXPECT_EQ(detect_in(arc, SourceKind::kAzureArc).endpoint, "http://127.0.0.1:40342/token");
}

struct MissingCase {
  SourceKind kind;
  std::map<std::string, std::string> vars;
  std::vector<std::string> must_name;
};

TEST(Detect, ForcedSourceWithoutItsVariablesNamesThem) {
  const std::vector<MissingCase> cases{
      {SourceKind::kServiceFabric,
       {{"IDENTITY_ENDPOINT", "https://127.0.0.1:1/t"}, {"IDENTITY_HEADER", kHeaderSecret}},
       {"IDENTITY_SERVER_THUMBPRINT"}},
      {SourceKind::kAppService,
       {{"IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"}},
       {"IDENTITY_HEADER"}},
      {SourceKind::kAppService, {}, {"IDENTITY_ENDPOINT", "IDENTITY_HEADER"}},
      {SourceKind::kAppService2017, {{"MSI_ENDPOINT", "http://127.0.0.1:1/t"}}, {"MSI_SECRET"}},
      {SourceKind::kAzureMl, {{"MSI_SECRET", kMsiSecretValue}}, {"MSI_ENDPOINT"}},
      {SourceKind::kCloudShell, {}, {"MSI_ENDPOINT"}},
      {SourceKind::kAzureArc,
       {{"IMDS_ENDPOINT", "http://127.0.0.1:1"}},
       {"IDENTITY_ENDPOINT", "/opt/azcmagent/bin/himds"}},
      {SourceKind::kWorkloadIdentity,
       {{"AZURE_CLIENT_ID", "c"}},
       {"AZURE_FEDERATED_TOKEN_FILE", "AZURE_TENANT_ID"}},
  };
  for (const auto& test : cases) {
    const Error error = detect_error(MapEnvironment(test.vars), test.kind);
    EXPECT_EQ(error.code(), ErrorCode::kConfiguration) << error.what();
    EXPECT_THAT(error.what(), HasSubstr(std::string(display_name(test.kind))));
    for (const auto& name : test.must_name) {
      EXPECT_THAT(error.what(), HasSubstr(name)) << to_string(test.kind);
    }
    EXPECT_THAT(error.what(), Not(HasSubstr(kHeaderSecret)));
    EXPECT_THAT(error.what(), Not(HasSubstr(kMsiSecretValue)));
  }
}

TEST(Detect, CustomCannotBeDetectedOrNamed) {
  const Error error = detect_error(MapEnvironment{}, SourceKind::kCustom);
  EXPECT_EQ(error.code(), ErrorCode::kConfiguration);
  EXPECT_THAT(error.what(), HasSubstr("make_callback_source"));
}

struct InvalidCase {
  const char* name;
  std::map<std::string, std::string> vars;
  const char* must_name;
};

TEST(Detect, InvalidVariablesAreConfigurationErrors) {
  const std::vector<InvalidCase> cases{
      {"AppServiceEndpointNotAUrl",
       {{"IDENTITY_ENDPOINT", "not a url"}, {"IDENTITY_HEADER", kHeaderSecret}},
       "IDENTITY_ENDPOINT"},
      {"AppServiceEndpointFtp",
       {{"IDENTITY_ENDPOINT", "ftp://127.0.0.1/x"}, {"IDENTITY_HEADER", kHeaderSecret}},
       "IDENTITY_ENDPOINT"},
      {"AppServiceEndpointWithCredentials",
       {{"IDENTITY_ENDPOINT", "http://user:pw@127.0.0.1/x"}, {"IDENTITY_HEADER", kHeaderSecret}},
       "IDENTITY_ENDPOINT"},
      {"ThumbprintTooShort",
       {{"IDENTITY_ENDPOINT", "https://127.0.0.1:1/t"},
        {"IDENTITY_HEADER", kHeaderSecret},
        {"IDENTITY_SERVER_THUMBPRINT", "ABCDEF"}},
       "IDENTITY_SERVER_THUMBPRINT"},
      {"ThumbprintNotHex",
       {{"IDENTITY_ENDPOINT", "https://127.0.0.1:1/t"},
        {"IDENTITY_HEADER", kHeaderSecret},
        {"IDENTITY_SERVER_THUMBPRINT", "ZZCDEF0123456789ABCDEF0123456789ABCDEF01"}},
       "IDENTITY_SERVER_THUMBPRINT"},
      {"ServiceFabricOverHttp",
       {{"IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"},
        {"IDENTITY_HEADER", kHeaderSecret},
        {"IDENTITY_SERVER_THUMBPRINT", kThumbprint}},
       "https"},
      {"MsiEndpointNotAUrl", {{"MSI_ENDPOINT", "127.0.0.1:8081"}}, "MSI_ENDPOINT"},
      {"PodIdentityAuthorityWithPath",
       {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1/metadata"}},
       "AZURE_POD_IDENTITY_AUTHORITY_HOST"},
      {"PodIdentityAuthorityNoScheme",
       {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", "127.0.0.1:2579"}},
       "AZURE_POD_IDENTITY_AUTHORITY_HOST"},
      {"TenantWithPath",
       {{"AZURE_FEDERATED_TOKEN_FILE", "/t"},
        {"AZURE_CLIENT_ID", "c"},
        {"AZURE_TENANT_ID", "../common"}},
       "AZURE_TENANT_ID"},
      {"AuthorityHostPlainHttp",
       {{"AZURE_FEDERATED_TOKEN_FILE", "/t"},
        {"AZURE_CLIENT_ID", "c"},
        {"AZURE_TENANT_ID", "t"},
        {"AZURE_AUTHORITY_HOST", "http://login.example.com/"}},
       "AZURE_AUTHORITY_HOST"},
      {"ArcDirectoryRelative",
       {{"IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"},
        {"IMDS_ENDPOINT", "http://127.0.0.1:1"},
        {"AZKMS_ARC_TOKEN_DIRECTORY", "tokens"}},
       "absolute"},
  };
  for (const auto& test : cases) {
    const Error error = detect_error(MapEnvironment(test.vars));
    EXPECT_EQ(error.code(), ErrorCode::kConfiguration) << test.name << ": " << error.what();
    EXPECT_THAT(error.what(), HasSubstr(test.must_name)) << test.name;
    EXPECT_THAT(error.what(), Not(HasSubstr(kHeaderSecret))) << test.name;
  }
}

TEST(Detect, ThumbprintIsNormalisedForPinning) {
  MapEnvironment env(Vars{{"IDENTITY_ENDPOINT", "https://127.0.0.1:2377/token"},
                          {"IDENTITY_HEADER", kHeaderSecret},
                          {"IDENTITY_SERVER_THUMBPRINT",
                           "ab:cd:ef:01:23:45:67:89:ab:cd ef 01 23 45 "
                           "67 89 ab cd ef 01"}});
  const Detection detection = detect_in(env);
  ASSERT_EQ(detection.kind, SourceKind::kServiceFabric);
  EXPECT_EQ(as_http_source(detection.source)->http_options().pinned_sha1_thumbprint,
            "ABCDEF0123456789ABCDEF0123456789ABCDEF01");
  // No other source pins anything.
  EXPECT_FALSE(
      as_http_source(detect_in(MapEnvironment{}).source)->http_options().pinned_sha1_thumbprint);
}

TEST(Detect, ArcKeyDirectoryOverrideIsReported) {
  MapEnvironment env(Vars{{"IDENTITY_ENDPOINT", "http://127.0.0.1:40342/t"},
                          {"IMDS_ENDPOINT", "http://127.0.0.1:40342"},
                          {"AZKMS_ARC_TOKEN_DIRECTORY", "/tmp/arc-tokens"}});
  const Detection detection = detect_in(env);
  EXPECT_EQ(detection.kind, SourceKind::kAzureArc);
  EXPECT_THAT(detection.reason, HasSubstr("/tmp/arc-tokens"));
  bool listed = false;
  for (const auto& variable : detection.variables) {
    listed |= variable.name == "AZKMS_ARC_TOKEN_DIRECTORY" && variable.value == "/tmp/arc-tokens";
  }
  EXPECT_TRUE(listed);
}

// Keeps the options of every exchange and answers none.
class OptionsRecordingClient final : public HttpClient {
 public:
  HttpResponse send(const HttpRequest&, const HttpOptions& options) override {
    ca_files.push_back(options.ca_file);
    pins.push_back(options.pinned_sha1_thumbprint.value_or(""));
    throw Error(ErrorCode::kConfiguration, "not sent");
  }
  std::vector<std::string> ca_files;
  std::vector<std::string> pins;
};

// The CA file each exchange of the detected source is given.
std::string ca_file_used(const MapEnvironment& env, std::string explicit_ca_file = "") {
  auto recording = std::make_shared<OptionsRecordingClient>();
  SourceContext context = offline();
  context.http = recording;
  context.ca_file = std::move(explicit_ca_file);
  auto source = make_source(env, std::nullopt, context);
  EXPECT_THROW(source->fetch(TokenRequest{}, Deadline::max()), Error);
  EXPECT_EQ(recording->ca_files.size(), 1u);
  return recording->ca_files.empty() ? "(none sent)" : recording->ca_files.front();
}

TEST(Detect, SslCertFileBecomesTheTrustAnchorsOfHttpsEndpoints) {
  const Vars app_service{{"IDENTITY_ENDPOINT", "https://127.0.0.1:2377/msi/token"},
                         {"IDENTITY_HEADER", kHeaderSecret}};
  EXPECT_EQ(ca_file_used(MapEnvironment(app_service)), "");

  Vars with_ca = app_service;
  with_ca["SSL_CERT_FILE"] = "/etc/azkms-test/ca.pem";
  const MapEnvironment env(with_ca);
  EXPECT_EQ(ca_file_used(env), "/etc/azkms-test/ca.pem");
  // An explicit SourceContext::ca_file wins.
  EXPECT_EQ(ca_file_used(env, "/etc/azkms-test/other.pem"), "/etc/azkms-test/other.pem");
  // Empty counts as unset.
  with_ca["SSL_CERT_FILE"] = "";
  EXPECT_EQ(ca_file_used(MapEnvironment(with_ca)), "");

  const Detection detection = detect_in(env);
  bool listed = false;
  for (const auto& variable : detection.variables) {
    listed |= variable.name == "SSL_CERT_FILE" && variable.value == "/etc/azkms-test/ca.pem";
  }
  EXPECT_TRUE(listed);
}

TEST(Detect, ServiceFabricStaysPinnedWhateverSslCertFileSays) {
  auto recording = std::make_shared<OptionsRecordingClient>();
  SourceContext context = offline();
  context.http = recording;
  MapEnvironment env(Vars{{"IDENTITY_ENDPOINT", "https://127.0.0.1:2377/metadata/identity"},
                          {"IDENTITY_HEADER", kHeaderSecret},
                          {"IDENTITY_SERVER_THUMBPRINT", kThumbprint},
                          {"SSL_CERT_FILE", "/etc/azkms-test/ca.pem"}});
  auto source = make_source(env, std::nullopt, context);
  ASSERT_EQ(source->kind(), SourceKind::kServiceFabric);
  EXPECT_THROW(source->fetch(TokenRequest{}, Deadline::max()), Error);
  ASSERT_EQ(recording->pins.size(), 1u);
  EXPECT_EQ(recording->pins.front().size(), 40u);
  EXPECT_EQ(recording->ca_files.front(), "");
}

TEST(Detect, MakeSourceReturnsTheDetectedSource) {
  MapEnvironment env(Vars{{"MSI_ENDPOINT", "http://127.0.0.1:1/t"}});
  const auto source = make_source(env, std::nullopt, offline());
  ASSERT_TRUE(source);
  EXPECT_EQ(source->kind(), SourceKind::kCloudShell);
  EXPECT_EQ(source->name(), "Cloud Shell");
}

}  // namespace
}  // namespace azkms
