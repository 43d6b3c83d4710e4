// Redaction (src/redaction.hpp): the one mechanism every message leaving azkms goes through,
// and the defects it closes. The property over every source, fault and echo position is in
// tests/secrets_test.cpp; here are the mechanism's own rules and one regression test per
// defect found, each of which failed before the fix:
//  - the Azure Arc key quoted by errors about a 200 answer (not JSON, HTML, the key in a field);
//  - IDENTITY_HEADER / MSI_SECRET echoed as client_id (identity_mismatch) or as the host of a
//    redirect's Location, in errors rethrown after fetch();
//  - part of a secret left when an excerpt (body, field names, shape of an expiry) was cut
//    before it was redacted;
//  - the federated token redacted only URL-encoded, not as the endpoint echoes it decoded;
//  - the password of a refused IDENTITY_ENDPOINT printed by the refusal;
//  - the Arc challenge's realm reaching a message unbounded and with terminal escapes;
//  - the command line printing an endpoint's control characters (a forged `source:` line).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "azkms/crypt_session.hpp"
#include "azkms/detect.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"
#include "cli_runner.hpp"
#include "fault_matrix.hpp"
#include "log.hpp"
#include "redaction.hpp"
#include "sources/azure_arc.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using emulator::Endpoint;
using fault_matrix::Harness;
using ::testing::HasSubstr;
using ::testing::Not;

// True when `text` holds 8 consecutive characters of `secret` (the property's definition of a
// leak: a secret cut short still leaks).
bool holds_piece_of(const std::string& text, const std::string& secret) {
  for (std::size_t i = 0; i + 8 <= secret.size(); ++i) {
    if (text.find(secret.substr(i, 8)) != std::string::npos) return true;
  }
  return false;
}

// Answers every request with what `answer` says (and records nothing): an endpoint scripted
// by the test, for what the emulator does not serve.
class AnsweringClient final : public HttpClient {
 public:
  using Answer = std::function<HttpResponse(const HttpRequest&)>;
  explicit AnsweringClient(Answer answer) : answer_(std::move(answer)) {}
  HttpResponse send(const HttpRequest& request, const HttpOptions&) override {
    return answer_(request);
  }

 private:
  Answer answer_;
};

SourceContext context_with(std::shared_ptr<HttpClient> client) {
  SourceContext context;
  context.http = std::move(client);
  context.retry_policy = RetryPolicy::no_retries();
  return context;
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

Deadline in_seconds(int seconds) {
  return std::chrono::steady_clock::now() + std::chrono::seconds{seconds};
}

// ---------------------------------------------------------------------------------------------
// The mechanism

constexpr const char* kSecret = "Zq7+Kd2/Wx9=Lm4\"Tr8\\Vb5%Np3";

TEST(Redaction, EveryFormOfASecretInScopeIsRedacted) {
  const std::string secret = kSecret;
  const std::string url_upper = "Zq7%2BKd2%2FWx9%3DLm4%22Tr8%5CVb5%25Np3";
  std::string url_lower = url_upper;
  for (std::size_t i = 0; i + 2 < url_lower.size(); ++i) {
    if (url_lower[i] == '%') url_lower[i + 2] = static_cast<char>(std::tolower(url_lower[i + 2]));
  }
  const std::string json = "Zq7+Kd2/Wx9=Lm4\\\"Tr8\\\\Vb5%Np3";
  RedactionScope scope;
  scope.add(secret);
  for (const auto& form : {secret, url_upper, url_lower, json}) {
    const std::string text = redacted("echo: " + form + " (end)");
    EXPECT_FALSE(holds_piece_of(text, form)) << text;
    EXPECT_THAT(text, HasSubstr("echo: [redacted]"));
    EXPECT_THAT(text, HasSubstr("(end)"));
  }
}

TEST(Redaction, AnEncodedSecretIsRedactedDecodedToo) {
  RedactionScope scope;
  scope.add("Fq7%2BXw9%2FZk4%3D0123456789");  // as it sits in a form body
  const std::string text = redacted("assertion Fq7+Xw9/Zk4=0123456789 rejected");
  EXPECT_EQ(text, "assertion [redacted] rejected");
}

TEST(Redaction, AnyEightCharactersOfASecretAreRedacted) {
  RedactionScope scope;
  scope.add("0123456789abcdefghij");
  EXPECT_EQ(redacted("cut: 89abcdef..."), "cut: [redacted]...");
  EXPECT_EQ(redacted("short: 89abcde"), "short: 89abcde") << "7 characters are not a piece";
}

TEST(Redaction, ScopesNestAndEnd) {
  {
    RedactionScope outer;
    outer.add("outerQ7x2Kd9w");
    {
      RedactionScope inner;
      inner.add("innerZ4w8Lm3v");
      EXPECT_EQ(redacted("outerQ7x2Kd9w innerZ4w8Lm3v"), "[redacted] [redacted]");
      redact_from_now_on("late-secret-7a3b");
      EXPECT_EQ(redacted("late-secret-7a3b"), "[redacted]");
    }
    EXPECT_EQ(redacted("outerQ7x2Kd9w innerZ4w8Lm3v"), "[redacted] innerZ4w8Lm3v");
  }
  EXPECT_EQ(redacted("outerQ7x2Kd9w"), "outerQ7x2Kd9w");
  redact_from_now_on("nowhere-to-go-1234");  // no scope: nothing happens
}

TEST(Redaction, ScopesBelongToTheirThread) {
  RedactionScope scope;
  scope.add("this-thread-only-5e6f");
  std::string elsewhere;
  std::thread([&] { elsewhere = redacted("this-thread-only-5e6f"); }).join();
  EXPECT_EQ(elsewhere, "this-thread-only-5e6f");
  EXPECT_EQ(redacted("this-thread-only-5e6f"), "[redacted]");
}

TEST(Redaction, CredentialsAreRecognisedByTheirShapeAndEverywhereElseInTheText) {
  EXPECT_EQ(redacted(R"({"access_token":"tok-0123456789","note":"tok-0123456789"})"),
            R"({"access_token":"[redacted]","note":"[redacted]"})");
  EXPECT_EQ(redacted("client_assertion=abc&client_assertion_type=jwt"),
            "client_assertion=[redacted]&client_assertion_type=jwt");
  EXPECT_EQ(redacted("GET http://user:pa55w0rd@127.0.0.1:80/token failed"),
            "GET http://[redacted]@127.0.0.1:80/token failed");
  EXPECT_EQ(redacted("assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln rejected"),
            "assertion [redacted] rejected");
}

TEST(Redaction, RedactsThenEscapesThenCuts) {
  RedactionScope scope;
  scope.add("SECRETabcdefghijklmnop");
  // The secret straddles the cut: redacted whole first, then cut before the marker.
  const std::string text = std::string(30, 'x') + "SECRETabcdefghijklmnop tail";
  EXPECT_EQ(safe_excerpt(text, 35), std::string(30, 'x') + "...");
  // A control character inside a secret: the raw secret is redacted, and escaping it first
  // would not have helped either (the escaped form is a form of the secret too).
  scope.add("ctl\x1b[31mSECRET-0987654321");
  EXPECT_EQ(safe_excerpt("a ctl\x1b[31mSECRET-0987654321 b", 200), "a [redacted] b");
  EXPECT_EQ(safe_excerpt("a ctl?[31mSECRET-0987654321 b", 200), "a [redacted] b");
  // Control characters and non-ASCII bytes never reach a message.
  EXPECT_EQ(safe_excerpt("line\r\nsource: forged\x1b[31m\x9b", 200), "line  source: forged?[31m?");
}

TEST(Redaction, EveryErrorAndLogLineGoesThroughIt) {
  RedactionScope scope;
  scope.add("in-scope-secret-3d4c5b6a");
  const Error error(ErrorCode::kConnection, "echoed in-scope-secret-3d4c5b6a\x1b[2J");
  EXPECT_STREQ(error.what(), "echoed [redacted]?[2J");
  std::vector<std::string> lines;
  set_log_hook([&](LogLevel, std::string_view line) { lines.emplace_back(line); });
  log(LogLevel::kInfo, "logged in-scope-secret-3d4c5b6a");
  set_log_hook(nullptr);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "logged [redacted]");
  const Error huge(ErrorCode::kConnection, std::string(100'000, 'h'));
  EXPECT_LE(std::string(huge.what()).size(), kMaxMessageBytes + 3);
}

// ---------------------------------------------------------------------------------------------
// Defect: the Azure Arc key in errors about a 200 answer.

TEST(ArcKeyRedaction, NoErrorAboutA200AnswerQuotesTheKey) {
  Harness harness;
  auto source = harness.source(Endpoint::kAzureArc);
  for (const char* fault : {"echo-body-value", "echo-html", "echo-field-name", "echo-expiry"}) {
    SCOPED_TRACE(fault);
    harness.emu().clear_faults();
    harness.emu().inject(Endpoint::kAzureArc, fault, 1);
    const std::string message = error_of([&] { source->fetch({}, in_seconds(10)); });
    const auto echoed = harness.emu().echoed_secrets();
    ASSERT_FALSE(echoed.empty());
    EXPECT_EQ(echoed.back().size(), 64u) << "the echo is the key";
    EXPECT_FALSE(holds_piece_of(message, echoed.back())) << redact(message, {echoed.back()});
    EXPECT_NE(message.find("[redacted]"), std::string::npos) << redact(message, {echoed.back()});
  }
}

// ---------------------------------------------------------------------------------------------
// Defect: header secrets in errors rethrown after fetch() (identity mismatch, redirect).

TEST(HeaderSecretRedaction, EchoedAsClientIdOrAsTheRedirectHost) {
  Harness harness;
  for (auto [endpoint, secret] : std::vector<std::pair<Endpoint, std::string>>{
           {Endpoint::kAppService, Harness::kIdentityHeader},
           {Endpoint::kAppService2017, Harness::kMsiSecret}}) {
    SCOPED_TRACE(std::string(emulator::display_name(endpoint)));
    auto source = harness.source(endpoint);
    TokenRequest request;
    request.identity = IdentitySelector::client_id(harness.identity(1).client_id);
    harness.emu().clear_faults();
    harness.emu().inject(endpoint, "echo-client-id", 1);
    std::string message = error_of([&] { source->fetch(request, in_seconds(10)); });
    EXPECT_FALSE(holds_piece_of(message, secret)) << redact(message, {secret});
    EXPECT_NE(message.find("but the token is for client id [redacted]"), std::string::npos)
        << redact(message, {secret});
  }
  // As the host of a redirect's Location: the HTTP layer's own error.
  auto source = harness.source(Endpoint::kAppService);
  harness.emu().clear_faults();
  harness.emu().inject(Endpoint::kAppService, "echo-location", 1);
  std::string message = error_of([&] { source->fetch({}, in_seconds(10)); });
  EXPECT_FALSE(holds_piece_of(message, Harness::kIdentityHeader))
      << redact(message, {Harness::kIdentityHeader});
  EXPECT_NE(message.find("a redirect to [redacted]"), std::string::npos)
      << redact(message, {Harness::kIdentityHeader});
}

// ---------------------------------------------------------------------------------------------
// Defect: an excerpt cut before it was redacted keeps part of the secret.

TEST(CutSecretRedaction, ExcerptsFieldNamesAndExpiryShapesKeepNoPiece) {
  // Longer than every cut: 32 (a field name), 48 (an expiry's shape), 120 and 200 (excerpts).
  const std::string secret = "hdr-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
  struct Case {
    const char* what;
    int status;
    std::string body;
  };
  const std::vector<Case> cases{
      {"body excerpt", 200, "{\"padding\":\"" + std::string(80, 'p') + "\",\"e\":\"" + secret},
      {"error excerpt", 500, std::string(170, 'p') + secret},
      {"field names", 200, R"({"access_token":"tok-12345678",")" + secret + "\":1}"},
      {"expiry shape", 200, R"({"access_token":"tok-12345678","expires_on":")" + secret + "\"}"},
  };
  for (const auto& test : cases) {
    SCOPED_TRACE(test.what);
    auto client = std::make_shared<AnsweringClient>([&](const HttpRequest&) {
      return HttpResponse{test.status, {}, test.body};
    });
    const MapEnvironment env(fault_matrix::Vars{
        {"IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"}, {"IDENTITY_HEADER", secret}});
    auto source = make_source(env, SourceKind::kAppService, context_with(client));
    const std::string message = error_of([&] { source->fetch({}, in_seconds(10)); });
    EXPECT_FALSE(holds_piece_of(message, secret)) << redact(message, {secret});
  }
}

// ---------------------------------------------------------------------------------------------
// Defect: the federated token echoed decoded.

TEST(FederatedTokenRedaction, EchoedAsTheEndpointReadIt) {
  const fs::path dir = testing::make_temp_dir("azkms-federated");
  // Not shaped like a JSON Web Token, and changed by URL-encoding.
  const std::string assertion = "Fq7+Xw9/Zk4=0123456789abcdef+ghijklmnop/qrstuv==";
  std::ofstream(dir / "token") << assertion;
  auto client = std::make_shared<AnsweringClient>([&](const HttpRequest&) {
    return HttpResponse{
        401,
        {},
        R"({"error":"invalid_client","error_description":"AADSTS700213: the assertion )" +
            assertion + R"( matches no federated identity record"})"};
  });
  const MapEnvironment env(
      fault_matrix::Vars{{"AZURE_FEDERATED_TOKEN_FILE", (dir / "token").string()},
                         {"AZURE_CLIENT_ID", "5a1c0f8e-2b3d-4c6e-8f70-0000000000a1"},
                         {"AZURE_TENANT_ID", "7f3c6b1e-4a2d-4e8f-9b0c-5d1a2e3f4a5b"},
                         {"AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/"}});
  auto source = make_source(env, SourceKind::kWorkloadIdentity, context_with(client));
  const std::string message = error_of([&] { source->fetch({}, in_seconds(10)); });
  fs::remove_all(dir);
  EXPECT_THAT(message, HasSubstr("AADSTS700213"));
  EXPECT_FALSE(holds_piece_of(message, assertion)) << redact(message, {assertion});
}

// ---------------------------------------------------------------------------------------------
// Defect: the password of a refused IDENTITY_ENDPOINT.

TEST(EndpointPasswordRedaction, TheRefusalDoesNotPrintIt) {
  for (const std::string endpoint : {"http://azkms:Pa55w0rd-7d1e9c@127.0.0.1:8081/msi/token",
                                     "http://azkms:Pa55w0rd-7d1e9c@evil@127.0.0.1:8081/msi/token",
                                     "azkms:Pa55w0rd-7d1e9c@127.0.0.1:8081/msi/token"}) {
    SCOPED_TRACE(endpoint);
    const MapEnvironment env(
        fault_matrix::Vars{{"IDENTITY_ENDPOINT", endpoint}, {"IDENTITY_HEADER", "h-1234567"}});
    const std::string message = error_of([&] { make_source(env, SourceKind::kAppService); });
    EXPECT_THAT(message, HasSubstr("IDENTITY_ENDPOINT"));
    EXPECT_THAT(message, HasSubstr("127.0.0.1:8081"));
    EXPECT_THAT(message, Not(HasSubstr("Pa55w0rd")));
  }
}

// ---------------------------------------------------------------------------------------------
// Defect: the Arc challenge's realm reaching a message unbounded and with terminal escapes.

class ArcRealm : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::make_temp_dir("azkms-arc-realm"); }
  void TearDown() override { fs::remove_all(dir_); }

  std::string message_for(const std::string& realm) {
    auto agent = std::make_shared<AnsweringClient>([realm](const HttpRequest&) {
      return HttpResponse{401, {{"WWW-Authenticate", "Basic realm=" + realm}}, ""};
    });
    ArcOptions options;
    options.endpoint = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
    options.key_directory = dir_.string();
    return error_of(
        [&] { make_azure_arc_source(options, context_with(agent))->fetch({}, in_seconds(10)); });
  }

  fs::path dir_;
};

TEST_F(ArcRealm, AMessageNamingItIsBoundedAndPrintable) {
  const std::string escapes = "\x1b]0;owned\x07\x1b[2J\x1b[31m";
  for (const std::string& name :
       {std::string(60'000, 'r') + escapes + ".key", escapes + "short.key",
        std::string(200, 'r') + escapes + ".key"}) {
    const std::string message = message_for((dir_ / name).string());
    EXPECT_LT(message.size(), 1000u);
    for (char c : message) {
      ASSERT_FALSE(static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
          << "a control character or non-ASCII byte in: " << safe_excerpt(message, 300);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The Key Vault exchange: the token it carries, echoed back by Key Vault.

TEST(KeyVaultTokenRedaction, AnErrorAboutKeyVaultsAnswerDoesNotQuoteTheToken) {
  // Opaque, so that only knowing it (not its shape) can redact it.
  const std::string token = "kvQ7x2Kd9Wm4Lp8Zr3Tn6Vb1Yc5";
  auto providers = std::make_shared<KmsProviders>();
  providers->add_callback(
      "azure",
      [&](const TokenRequest& request, Deadline) {
        AccessToken issued;
        issued.token = Secret(token);
        issued.resource = request.resource;
        issued.expires_on = std::chrono::system_clock::now() + std::chrono::hours{1};
        return issued;
      },
      TokenRequest{}, "test issuer");
  auto key_vault_http = std::make_shared<AnsweringClient>([](const HttpRequest& request) {
    const std::string bearer = request.header("Authorization").value_or("");
    return HttpResponse{403,
                        {},
                        R"({"error":{"code":"Forbidden","message":"the caller presented )" +
                            bearer + R"(, which has no wrapKey permission"}})"};
  });
  const fs::path dir = testing::make_temp_dir("azkms-kv-echo");
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = std::make_shared<FileKeyVault>(dir / "keys.json");
  options.http = key_vault_http;
  options.kms_retry = RetryPolicy::no_retries();
  const std::string message = error_of([&] {
    CryptSession session(options);
    (void)session.create_data_key({"azure", "127.0.0.1:8443", "mongo-key", ""});
  });
  fs::remove_all(dir);
  EXPECT_FALSE(holds_piece_of(message, token)) << redact(message, {token});
  EXPECT_NE(message.find("Forbidden"), std::string::npos) << redact(message, {token});
}

// ---------------------------------------------------------------------------------------------
// The command line: untrusted text from an endpoint, on the terminal.

// A loopback HTTP server answering every GET with `handler`, for the command line to talk to.
class LoopbackServer {
 public:
  explicit LoopbackServer(httplib::Server::Handler handler) {
    server_.Get(".*", std::move(handler));
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  ~LoopbackServer() {
    server_.stop();
    thread_.join();
  }
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

class CliText : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(testing::cli_path())) GTEST_FAIL() << "build the azkms_cli target";
    scratch_ = testing::make_temp_dir("azkms-cli-text");
  }
  void TearDown() override { fs::remove_all(scratch_); }
  fs::path scratch_;
};

TEST_F(CliText, AnEndpointsControlCharactersCannotForgeALine) {
  const std::string forged = "Bearer\r\nsource:     forged\x1b[31m\x1b]0;owned\x07";
  LoopbackServer imds([&](const httplib::Request&, httplib::Response& res) {
    nlohmann::json body = {{"access_token", "abcDEF0123456789"},
                           {"expires_in", "3600"},
                           {"token_type", forged},
                           {"resource", "https://vault.azure.net"}};
    res.set_content(body.dump(), "application/json");
  });
  const std::map<std::string, std::string> vars{{"AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url()}};
  const auto text = testing::run_cli(vars, "token --source imds --timeout-ms 10000", scratch_);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(std::count(text.out.begin(), text.out.end(), '\n'), 5) << text.out;
  std::size_t source_lines = 0;
  std::istringstream lines(text.out);
  for (std::string line; std::getline(lines, line);) source_lines += line.rfind("source:", 0) == 0;
  EXPECT_EQ(source_lines, 1u) << "a forged source: line";
  EXPECT_THAT(text.out, HasSubstr("type:       Bearer  source:     forged?[31m?]0;owned?\n"));
  for (char c : text.out) {
    EXPECT_FALSE(c == '\r' || c == '\x1b' || c == '\x07') << "a raw control character";
  }
  const auto json =
      testing::run_cli(vars, "token --source imds --json --timeout-ms 10000", scratch_);
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(json.out).at("tokenType"),
            "Bearer  source:     forged?[31m?]0;owned?");
}

TEST_F(CliText, TheArcRealmReachesStderrBoundedAndPrintable) {
  const fs::path keys = scratch_ / "keys";
  fs::create_directories(keys);
  const std::string realm = (keys / (std::string(60'000, 'r') + "\x1b[2J\x1b[31m.key")).string();
  LoopbackServer agent([&](const httplib::Request&, httplib::Response& res) {
    res.status = 401;
    res.set_header("WWW-Authenticate", "Basic realm=" + realm);
  });
  const std::map<std::string, std::string> vars{
      {"IDENTITY_ENDPOINT", agent.url() + "/metadata/identity/oauth2/token"},
      {"IMDS_ENDPOINT", agent.url()},
      {"AZKMS_ARC_TOKEN_DIRECTORY", keys.string()}};
  const auto run = testing::run_cli(vars, "token --source azure-arc --timeout-ms 10000", scratch_);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1);
  EXPECT_LT(run.err.size(), 1000u);
  EXPECT_EQ(run.err.find('\x1b'), std::string::npos);
  EXPECT_THAT(run.err, HasSubstr("azkms: error [arc_challenge]"));
}

}  // namespace
}  // namespace azkms
