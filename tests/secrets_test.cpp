// Secrets never leak, tested as a property: no error message, log line (azkms::set_log_hook),
// cache event, field of a returned token or CLI output holds 8 or more consecutive characters
// of any secret, in any of the forms an endpoint may echo it in (as it is, URL-encoded,
// JSON-escaped). The secrets:
//  - tokens: each token the emulator issued that a client saw, any emulator token at all (they
//    share a recognisable prefix, and any run of token characters the ledger knows), and the
//    token of the bodies the matrix substitutes;
//  - IDENTITY_HEADER and MSI_SECRET (and a stale IDENTITY_HEADER sent to App Service);
//  - the workload identity's federated token (a client assertion);
//  - the contents of every Azure Arc key file the emulator wrote;
//  - every secret the emulator's echo-* cases sent back.
// The inputs: the whole fault matrix, and every echo case (each position an endpoint may echo
// a secret in, for the request's own secret and for the token, in each form), for every
// source, through the library and through the command line.
// `azkms token` on success prints the token by design, on its own line: that line is the only
// one not checked for it.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "azkms/log.hpp"
#include "cli_runner.hpp"
#include "fault_matrix.hpp"
#include "http_faults.hpp"
#include "loopback_only.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using emulator::Endpoint;
using fault_matrix::Harness;
using testing::cli_path;
using testing::CliRun;
using testing::run_cli;

constexpr std::string_view kEmulatorTokenPrefix = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.emulator.";
constexpr const char* kStaleIdentityHeader = "stale7Rk2Wq9Xz4Lp8Vd3Hn5";
// A run this long of a secret's characters is a leak, wherever it starts.
constexpr std::size_t kPiece = 8;

bool token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

// A secret as an endpoint may echo it: as it is, URL-encoded, JSON-escaped.
std::vector<std::string> forms_of(const std::string& secret) {
  using Form = emulator::EchoFault::Form;
  return {secret, emulator::echo_form(secret, Form::kUrl),
          emulator::echo_form(secret, Form::kJson)};
}

class SecretChecker {
 public:
  explicit SecretChecker(Harness& harness) : harness_(harness) {}

  // `public_prefix`: how many leading bytes are no secret (fixtures with words in them);
  // a piece must hold at least one byte after them.
  void add(const std::string& secret, std::size_t public_prefix = 0) {
    if (secret.size() < kPiece) return;
    secrets_.push_back(secret);
    // The prefix every emulator token shares is no secret either (it holds the word
    // "emulator"); what follows it is. Leaks of the prefix itself are caught below.
    if (secret.rfind(kEmulatorTokenPrefix, 0) == 0) public_prefix = kEmulatorTokenPrefix.size();
    const std::size_t from = public_prefix >= kPiece ? public_prefix - kPiece + 1 : 0;
    for (const auto& form : forms_of(secret)) {
      for (std::size_t i = from; i + kPiece <= form.size(); ++i) {
        pieces_.emplace(form.substr(i, kPiece), secrets_.size() - 1);
      }
    }
  }

  // Fails the test, without printing the secret, when `text` holds 8 characters of one.
  void check(const std::string& text, const std::string& where) {
    ++checked_;
    for (const auto& finding : findings(text)) ADD_FAILURE() << where << finding;
  }

  // What `check` would report about `text`, without failing: empty when no secret is in it,
  // so that the text may be shown whole.
  [[nodiscard]] std::vector<std::string> findings(const std::string& text) const {
    std::vector<std::string> found;
    for (std::size_t i = 0; i + kPiece <= text.size(); ++i) {
      auto it = pieces_.find(text.substr(i, kPiece));
      if (it == pieces_.end()) continue;
      const std::string& secret = secrets_[it->second];
      found.push_back(" holds 8 or more characters of a secret of " +
                      std::to_string(secret.size()) + " bytes, at byte " + std::to_string(i) +
                      ": " + redact(text, {secret}));
      break;
    }
    // Any emulator token, even one the test never saw, and even cut short.
    if (auto pos = text.find(".emulator."); pos != std::string::npos) {
      std::size_t end = pos + 10;
      while (end < text.size() && token_char(text[end])) ++end;
      if (end - pos - 10 >= 6) found.emplace_back(" contains an emulator token");
    }
    // Any run of token characters the emulator's ledger knows.
    for (std::size_t i = 0; i < text.size();) {
      if (!token_char(text[i])) {
        ++i;
        continue;
      }
      std::size_t end = i;
      while (end < text.size() && token_char(text[end])) ++end;
      if (end - i >= 40 && harness_.emu().ledger().lookup(text.substr(i, end - i))) {
        found.emplace_back(" contains a token the emulator issued");
      }
      i = end;
    }
    return found;
  }
  [[nodiscard]] int checked() const { return checked_; }

 private:
  Harness& harness_;
  std::vector<std::string> secrets_;
  std::unordered_map<std::string, std::size_t> pieces_;  // 8-byte piece -> its secret
  int checked_ = 0;
};

std::ptrdiff_t line_count(const std::string& text) {
  return std::count(text.begin(), text.end(), '\n');
}

// A failing `azkms token` writes one line on stderr. A run that wrote another number is
// reported once the checker can tell whether the text holds a secret: whole when it does not,
// so that the failure says what the other lines were.
struct UnexpectedLines {
  std::string what;
  std::string err;
};

void report(const SecretChecker& checker, const std::vector<UnexpectedLines>& found) {
  for (const auto& [what, err] : found) {
    const bool shown = checker.findings(err).empty();
    ADD_FAILURE() << "`azkms " << what << "` wrote " << line_count(err)
                  << " lines on stderr where the error takes one"
                  << (shown ? ":\n" + err : " (not shown: a secret is in them)");
  }
}

void add_fixed_secrets(SecretChecker& checker, Harness& harness) {
  checker.add(Harness::kIdentityHeader);
  checker.add(Harness::kMsiSecret);
  checker.add(kStaleIdentityHeader);
  // "fm-substituted-token-" is words (it matches "federated-token" in a file name).
  const std::string substituted = fault_matrix::kSubstitutedToken;
  checker.add(substituted, substituted.rfind('-') + 1);
  checker.add(harness.emu().federated_token());
}

// Every secret the run could have met: the fixed ones, the Arc keys, what the echo cases sent.
void add_every_secret(SecretChecker& checker, Harness& harness) {
  add_fixed_secrets(checker, harness);
  for (const auto& key : harness.arc_keys()) checker.add(key);
  for (const auto& echoed : harness.emu().echoed_secrets()) checker.add(echoed);
}

// The checker itself catches each kind of leak (and passes clean text).
TEST(SecretCheckerSelfTest, CatchesEachKindOfLeak) {
  Harness harness;
  SecretChecker checker(harness);
  add_fixed_secrets(checker, harness);
  const std::string issued =
      harness.emu().ledger().issue("someone", "https://vault.azure.net", std::chrono::seconds{600});
  auto failures_for = [&](const std::string& text) {
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      checker.check(text, "self-test");
    }
    return failures.size();
  };
  const std::string header = Harness::kIdentityHeader;
  const std::string msi = Harness::kMsiSecret;
  EXPECT_EQ(failures_for("App Service answered HTTP 500: {\"error\":\"[redacted]\"}"), 0);
  EXPECT_EQ(failures_for("check that IDENTITY_HEADER is current"), 0);
  EXPECT_GE(failures_for("header " + header + " echoed"), 1);
  EXPECT_GE(failures_for("secret=" + msi), 1);
  EXPECT_GE(failures_for("cut: " + header.substr(5, 8) + "..."), 1);  // 8 characters of one
  EXPECT_EQ(failures_for("cut: " + header.substr(5, 7) + "..."), 0);  // 7 are not a leak
  EXPECT_GE(failures_for("url: " + forms_of(msi)[1]), 1);
  EXPECT_GE(failures_for("json: " + forms_of(msi)[2]), 1);
  EXPECT_GE(failures_for("body: " + issued.substr(0, 60)), 1);  // a token cut short
  EXPECT_GE(failures_for("{\"access_token\":\"" + issued + "\"}"), 1);
  EXPECT_GE(failures_for(harness.emu().federated_token()), 1);
}

bool supports_client_id(Endpoint endpoint) {
  return endpoint != Endpoint::kCloudShell && endpoint != Endpoint::kAzureArc &&
         endpoint != Endpoint::kServiceFabric;
}

std::string test_name(const ::testing::TestParamInfo<Endpoint>& info) {
  std::string name(emulator::to_string(info.param));
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

// Every echo case: each position an endpoint may echo a secret in, for the request's own
// secret and for the answer's token, in each form.
std::vector<std::string> echo_cases() {
  std::vector<std::string> cases;
  for (const auto& fault : emulator::fault_cases()) {
    if (fault.name.rfind("echo-", 0) != 0) continue;
    for (const char* what : {"credential", "token"}) {
      for (const char* form : {"raw", "url", "json"}) {
        const std::string name = std::string(fault.name) + ":" + what + ":" + form;
        if (emulator::find_fault_case(name) != nullptr) cases.push_back(name);
      }
    }
  }
  return cases;
}

// By client id where the source can select one, so that a client_id echo meets the identity
// check (and its message).
TokenRequest echo_request(const Harness& harness, Endpoint endpoint) {
  TokenRequest request;
  if (supports_client_id(endpoint)) {
    request.identity = IdentitySelector::client_id(harness.identity(1).client_id);
  }
  return request;
}

// Every line the library logs while this lives (through azkms::set_log_hook).
class LogLines {
 public:
  LogLines() {
    set_log_hook([this](LogLevel, std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    });
  }
  ~LogLines() { set_log_hook(nullptr); }
  LogLines(const LogLines&) = delete;
  LogLines& operator=(const LogLines&) = delete;

  std::vector<std::string> take() {
    set_log_hook(nullptr);
    std::lock_guard lock(mutex_);
    return std::move(lines_);
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

// ---------------------------------------------------------------------------------------------
// The library: the whole fault matrix with the log hook installed.

class LibrarySecrets : public ::testing::TestWithParam<Endpoint> {
 protected:
  static void SetUpTestSuite() { harness_ = new Harness(); }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static Harness* harness_;
};
Harness* LibrarySecrets::harness_ = nullptr;

TEST_P(LibrarySecrets, NothingTheFaultMatrixProducesContainsASecret) {
  const Endpoint endpoint = GetParam();
  LogLines log_lines;

  std::vector<std::pair<std::string, std::string>> messages;  // (row, message)
  std::vector<std::string> tokens;
  for (const auto& row : fault_matrix::rows()) {
    if (!row.applies(endpoint)) continue;
    auto seen = harness_->run(row, endpoint);
    for (auto& message : seen.messages) messages.emplace_back(row.name, std::move(message));
    if (!seen.token.empty()) tokens.push_back(seen.token);
    if (!seen.recovery_token.empty()) tokens.push_back(seen.recovery_token);
  }
  const std::vector<std::string> lines = log_lines.take();

  SecretChecker checker(*harness_);
  add_every_secret(checker, *harness_);
  for (auto& token : tokens) checker.add(token);
  for (const auto& [row, message] : messages) checker.check(message, "a message of row " + row);
  for (const auto& line : lines) checker.check(line, "log line");

  // The check had something to check: errors from most rows, and log lines from the retries.
  EXPECT_GT(messages.size(), 30u);
  EXPECT_GT(lines.size(), 5u);
  EXPECT_GT(tokens.size(), 10u);
  if (endpoint == Endpoint::kAzureArc) {
    EXPECT_FALSE(harness_->arc_keys().empty());
  }
}

// ---------------------------------------------------------------------------------------------
// The library against endpoints that echo secrets back: every echo case, with the log hook
// installed, through a cache; errors, log lines, cache events and the text fields of the tokens
// that came back are checked.

TEST_P(LibrarySecrets, NoEchoedSecretReachesAnyOutput) {
  const Endpoint endpoint = GetParam();
  LogLines log_lines;

  std::vector<std::pair<std::string, std::string>> outputs;  // (where, text)
  int errors = 0;
  int tokens = 0;
  auto source = harness_->source(endpoint);
  const std::vector<std::string> cases = echo_cases();
  for (const auto& fault : cases) {
    std::vector<std::string> events;
    {
      TokenCache cache(Harness::cache_options(&events));
      TokenHandle handle = cache.handle(source, echo_request(*harness_, endpoint));
      harness_->emu().clear_faults();
      harness_->emu().inject(endpoint, fault, 1);
      try {
        const AccessToken token =
            handle.get(std::chrono::steady_clock::now() + std::chrono::seconds{10});
        ++tokens;
        outputs.emplace_back(fault + ": token_type", token.token_type);
        outputs.emplace_back(fault + ": resource", token.resource);
        outputs.emplace_back(fault + ": client_id", token.client_id);
      } catch (const Error& error) {
        ++errors;
        outputs.emplace_back(fault + ": error", error.what());
      }
      harness_->emu().clear_faults();
      outputs.emplace_back(fault + ": cache stats", cache.stats().last_error);
    }
    for (auto& event : events) outputs.emplace_back(fault + ": cache event", std::move(event));
  }
  const std::vector<std::string> lines = log_lines.take();

  SecretChecker checker(*harness_);
  add_every_secret(checker, *harness_);
  for (const auto& [where, text] : outputs) checker.check(text, where);
  for (const auto& line : lines) checker.check(line, "log line");

  // The cases did what they are for: most failed and said why, some gave a token, and every
  // one echoed a secret.
  EXPECT_GT(errors, static_cast<int>(cases.size()) / 2);
  EXPECT_GT(tokens, 0);
  EXPECT_GE(harness_->emu().echoed_secrets().size(), cases.size());
  EXPECT_GT(lines.size(), cases.size());
}

INSTANTIATE_TEST_SUITE_P(Sources, LibrarySecrets, ::testing::ValuesIn(emulator::kAllEndpoints),
                         test_name);

// ---------------------------------------------------------------------------------------------
// The command line, against the same emulator.

// The program built, and a scratch directory for its stderr.
template <class Base>
class CliFixture : public Base {
 protected:
  void SetUp() override {
    if (!fs::exists(cli_path())) {
      GTEST_FAIL() << "the command-line program is not built at " << cli_path()
                   << " (build the azkms_cli target)";
    }
    scratch_ = testing::make_temp_dir("azkms-cli-secrets");
  }
  void TearDown() override { fs::remove_all(scratch_); }
  fs::path scratch_;
};

using CliSecrets = CliFixture<::testing::Test>;
class CliEchoes : public CliFixture<::testing::TestWithParam<Endpoint>> {};

TEST_F(CliSecrets, DetectAndFailingTokenPrintNoSecret) {
  Harness harness;
  auto& emu = harness.emu();
  std::vector<std::pair<std::string, CliRun>> runs;  // what was run, what came out
  std::vector<std::string> printed_tokens;           // by successful `token` runs, on stdout
  std::vector<UnexpectedLines> unexpected_lines;

  for (auto endpoint : emulator::kAllEndpoints) {
    const fault_matrix::Vars vars = harness.environment_of(endpoint);
    const std::string source = "--source " + std::string(emulator::to_string(endpoint));
    const std::string name(emulator::to_string(endpoint));

    for (const char* detect : {"detect", "detect --json"}) {
      CliRun run = run_cli(vars, detect, scratch_);
      EXPECT_EQ(run.exit_code, 0) << name << " " << detect;  // its stderr is checked below
      EXPECT_THAT(run.out, ::testing::HasSubstr(std::string(emulator::display_name(endpoint))));
      runs.emplace_back(name + " " + detect, std::move(run));
    }

    // Failing `token`: answers an error message would be tempted to quote.
    std::vector<std::pair<std::string, std::string>> failures{
        {"html", ""},    {"bad-json", ""},      {"truncated", ""},        {"giant", ""},
        {"400", ""},     {"missing-token", ""}, {"non-string-token", ""}, {"bad-expiry", ""},
        {"redirect", ""}};
    if (supports_client_id(endpoint)) {
      failures.emplace_back("wrong-identity", " --client-id " + harness.identity(1).client_id);
    }
    if (endpoint == Endpoint::kAzureArc) {
      for (const char* arc :
           {"arc-no-realm", "arc-bad-realm", "arc-outside-dir", "arc-not-key", "arc-big-key"}) {
        failures.emplace_back(arc, "");
      }
    }
    for (const auto& [fault, extra] : failures) {
      emu.clear_faults();
      emu.inject(endpoint, fault, 20);
      CliRun run = run_cli(vars, "token " + source + " --timeout-ms 5000" + extra, scratch_);
      EXPECT_NE(run.exit_code, 0) << name << " token with " << fault << " succeeded";
      EXPECT_TRUE(run.out.empty()) << name << " " << fault << ": stdout on failure";
      if (line_count(run.err) != 1)
        unexpected_lines.push_back({"token " + source + " with " + fault, run.err});
      // Not EXPECT_THAT(run.err, ...): it would print the text before the checker has seen it.
      EXPECT_NE(run.err.find("azkms: error ["), std::string::npos) << name << " " << fault;
      runs.emplace_back(name + " token with " + fault, std::move(run));
    }
    emu.clear_faults();

    // Successful `token` prints the token on stdout, by design, and nothing secret elsewhere.
    for (const char* format : {"", " --json"}) {
      CliRun run = run_cli(vars, "token " + source + " --timeout-ms 5000" + format, scratch_);
      EXPECT_EQ(run.exit_code, 0) << name;  // its stderr is checked below
      auto pos = run.out.find(kEmulatorTokenPrefix);
      if (pos == std::string::npos) {
        ADD_FAILURE() << name << ": `token` printed no token";
      } else {
        std::size_t end = pos;
        while (end < run.out.size() && token_char(run.out[end])) ++end;
        printed_tokens.push_back(run.out.substr(pos, end - pos));
      }
      run.out.clear();  // the token, on purpose
      runs.emplace_back(name + " token (success)", std::move(run));
    }
  }

  // A stale IDENTITY_HEADER: App Service answers 401, and the message must not quote it.
  {
    fault_matrix::Vars vars = harness.environment_of(Endpoint::kAppService);
    vars["IDENTITY_HEADER"] = kStaleIdentityHeader;
    CliRun run = run_cli(vars, "token --source app-service --timeout-ms 5000", scratch_);
    EXPECT_NE(run.exit_code, 0);
    runs.emplace_back("app-service token with a stale IDENTITY_HEADER", std::move(run));
  }

  SecretChecker checker(harness);
  add_every_secret(checker, harness);
  for (auto& token : printed_tokens) checker.add(token);
  for (const auto& [what, run] : runs) {
    checker.check(run.out, "stdout of `azkms " + what + "`");
    checker.check(run.err, "stderr of `azkms " + what + "`");
    checker.check(run.sanitizer_notes, "sanitizer notes on stderr of `azkms " + what + "`");
  }
  report(checker, unexpected_lines);
  EXPECT_EQ(printed_tokens.size(), 2 * emulator::kAllEndpoints.size());
  EXPECT_GT(runs.size(), 100u);
}

// The command line against endpoints that echo secrets back: `azkms token` for every echo case,
// one source per test (each runs a few dozen processes, slow under sanitizers). On success the
// token line is the one line allowed to show the token.
TEST_P(CliEchoes, NoEchoedSecretReachesTheTerminal) {
  const Endpoint endpoint = GetParam();
  Harness harness;
  const std::string name(emulator::to_string(endpoint));
  const fault_matrix::Vars vars = harness.environment_of(endpoint);
  std::string arguments = "token --source " + name + " --timeout-ms 10000";
  if (supports_client_id(endpoint)) arguments += " --client-id " + harness.identity(1).client_id;
  std::vector<std::pair<std::string, CliRun>> runs;
  std::vector<UnexpectedLines> unexpected_lines;
  for (const auto& fault : echo_cases()) {
    // The command line prints what the library returns (checked above in every form): here
    // every position in its raw form, and every form of the positions the output shows.
    const bool printed = fault.rfind("echo-token-type", 0) == 0 ||
                         fault.rfind("echo-resource", 0) == 0 ||
                         fault.rfind("echo-client-id", 0) == 0;
    const bool raw = fault.ends_with(":raw");
    if (!raw && !printed) continue;
    // --verbose too: every attempt's log line, on stderr, is checked as well.
    for (const char* format : {"", " --json --verbose"}) {
      if (*format != '\0' && !(printed && raw)) continue;
      harness.emu().clear_faults();
      harness.emu().inject(endpoint, fault, 1);
      CliRun run = run_cli(vars, arguments + format, scratch_);
      if (*format == '\0') {
        if (line_count(run.err) > 1)
          unexpected_lines.push_back({arguments + " with " + fault, run.err});
      }
      if (run.exit_code == 0) {
        if (*format == '\0') {
          // Drop the token line, printed on purpose; everything else is checked.
          // EXPECT and skip, not ASSERT: the findings gathered so far are still reported.
          const auto at = run.out.find("\ntoken:      ");
          if (at == std::string::npos) {
            ADD_FAILURE() << fault << ": no token line";
            continue;
          }
          run.out.erase(at, run.out.find('\n', at + 1) - at);
        } else {
          auto shown = nlohmann::json::parse(run.out, nullptr, false);
          if (!shown.is_object()) {
            ADD_FAILURE() << fault << ": stdout is not one JSON object";
            continue;
          }
          shown.erase("accessToken");
          run.out = shown.dump();
        }
      } else if (*format == '\0') {
        EXPECT_TRUE(run.out.empty()) << fault << ": stdout on failure";
      } else {
        // With --json, the failure is one JSON object on stdout: checked whole.
        const auto shown = nlohmann::json::parse(run.out, nullptr, false);
        EXPECT_TRUE(shown.is_object() && shown.contains("error")) << fault;  // checked below
      }
      runs.emplace_back("token" + std::string(format) + " with " + fault, std::move(run));
    }
  }

  SecretChecker checker(harness);
  add_every_secret(checker, harness);
  int failures = 0;
  for (const auto& [what, run] : runs) {
    failures += run.exit_code != 0 ? 1 : 0;
    checker.check(run.out, "stdout of `azkms " + what + "`");
    checker.check(run.err, "stderr of `azkms " + what + "`");
    checker.check(run.sanitizer_notes, "sanitizer notes on stderr of `azkms " + what + "`");
  }
  report(checker, unexpected_lines);
  EXPECT_GE(runs.size(), 30u);
  EXPECT_GT(failures, static_cast<int>(runs.size()) / 3);
  EXPECT_LT(failures, static_cast<int>(runs.size()));
}

INSTANTIATE_TEST_SUITE_P(Sources, CliEchoes, ::testing::ValuesIn(emulator::kAllEndpoints),
                         test_name);

// The demo prints each step and the token's source, never the token.
TEST_F(CliSecrets, DemoPrintsNoToken) {
  CliRun run = run_cli({}, "demo", scratch_);
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_FALSE(run.out.empty());
  EXPECT_EQ(run.out.find(".emulator."), std::string::npos) << "the demo printed a token";
  EXPECT_EQ(run.err.find(".emulator."), std::string::npos) << "the demo printed a token";
  EXPECT_EQ(run.out.find("accessToken"), std::string::npos);
}

}  // namespace
}  // namespace azkms
