// The command line as a new user meets it: usage errors exit 2 before any request (an unknown
// --source, an empty --client-id, a mistyped command, with a suggestion), --json covers
// failures too (one JSON object on stdout), and --verbose shows every attempt on stderr. None
// of it ever shows a secret.
//
// The program runs against the emulator on loopback with an otherwise empty environment.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "cli_runner.hpp"
#include "emulator.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using emulator::Endpoint;
using testing::CliRun;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::run_cli;

class CliUsage : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(testing::cli_path())) {
      GTEST_FAIL() << "the command-line program is not built at " << testing::cli_path()
                   << " (build the azkms_cli target)";
    }
    scratch_ = fs::temp_directory_path() /
               ("azkms-cli-usage-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(scratch_);
    emu_.start();
  }
  void TearDown() override {
    emu_.stop();
    std::error_code ignored;
    fs::remove_all(scratch_, ignored);
  }

  std::map<std::string, std::string> app_service() const {
    return emu_.client_environment(Endpoint::kAppService);
  }
  // `arguments` exit 2 before any request, with one JSON object on stdout (code "usage", a
  // message holding `says`) and nothing on stderr.
  void expect_json_usage_error(const std::string& arguments, const std::string& says) {
    const auto before = requests();
    const CliRun run = run_cli(app_service(), arguments, scratch_);
    EXPECT_EQ(run.exit_code, 2) << arguments << ": " << run.err;
    EXPECT_TRUE(run.err.empty()) << arguments << ": " << run.err;
    ASSERT_EQ(std::count(run.out.begin(), run.out.end(), '\n'), 1) << arguments << ": " << run.out;
    const auto shown = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(shown.is_object()) << arguments << ": " << run.out;
    EXPECT_EQ(shown.at("error").at("code"), "usage") << run.out;
    EXPECT_THAT(shown.at("error").at("message").get<std::string>(), HasSubstr(says)) << run.out;
    EXPECT_EQ(requests(), before) << arguments;
  }
  std::uint64_t requests() const {
    std::uint64_t total = 0;
    for (auto endpoint : emulator::kAllEndpoints) total += emu_.requests_served(endpoint);
    return total;
  }

  emulator::Emulator emu_;
  fs::path scratch_;
};

TEST_F(CliUsage, UsageErrorsExitTwoBeforeAnyRequest) {
  struct Case {
    const char* arguments;
    const char* says;
  };
  const Case cases[] = {
      {"token --source nope", "unknown source 'nope'"},
      {"detect --source nope", "unknown source 'nope'"},
      {"demo --source nope", "unknown source 'nope'"},
      {"token --source ''", "--source"},
      {"token --timeout-ms 0", "--timeout-ms"},
      {"token --client-id ''", "--client-id: must not be empty"},
      {"token --object-id ''", "--object-id: must not be empty"},
      {"token --resource-id ''", "--resource-id: must not be empty"},
      {"token --resource ''", "--resource: must not be empty"},
      {"demo --client-id ''", "--client-id: must not be empty"},
      {"token --client-id a --object-id b", "excludes"},
      {"token --no-such-flag", "no-such-flag"},
  };
  for (const auto& c : cases) {
    const auto before = requests();
    const CliRun run = run_cli(app_service(), c.arguments, scratch_);
    EXPECT_EQ(run.exit_code, 2) << c.arguments << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr(c.says)) << c.arguments;
    EXPECT_TRUE(run.out.empty()) << c.arguments << ": " << run.out;
    EXPECT_EQ(requests(), before) << c.arguments;
  }
}

TEST_F(CliUsage, AMistypedCommandSuggestsTheRightOne) {
  const std::pair<const char*, const char*> typos[] = {
      {"tokn", "did you mean 'token'?"},
      {"tokens", "did you mean 'token'?"},
      {"detcet", "did you mean 'detect'?"},
      {"dmeo", "did you mean 'demo'?"},
  };
  for (const auto& [typo, suggestion] : typos) {
    const CliRun run = run_cli(app_service(), typo, scratch_);
    EXPECT_EQ(run.exit_code, 2) << typo << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr("unknown command '" + std::string(typo) + "'"));
    EXPECT_THAT(run.err, HasSubstr(suggestion)) << typo;
  }
  const CliRun far = run_cli(app_service(), "encrypt", scratch_);
  EXPECT_EQ(far.exit_code, 2);
  EXPECT_THAT(far.err, Not(HasSubstr("did you mean")));
  EXPECT_THAT(far.err, HasSubstr("detect, token, demo"));
}

TEST_F(CliUsage, JsonAppliesToErrors) {
  const auto vars = app_service();
  const std::string identity_header = vars.at("IDENTITY_HEADER");
  emu_.inject(Endpoint::kAppService, "400", 5);
  const CliRun run =
      run_cli(vars, "token --source app-service --json --timeout-ms 10000", scratch_);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_TRUE(run.err.empty()) << run.err;
  ASSERT_EQ(std::count(run.out.begin(), run.out.end(), '\n'), 1) << run.out;
  const auto shown = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(shown.is_object()) << run.out;
  ASSERT_EQ(shown.size(), 1u) << run.out;
  const auto& error = shown.at("error");
  EXPECT_EQ(error.at("code"), "http_status");
  EXPECT_EQ(error.at("status"), 400);
  EXPECT_EQ(error.at("source"), "App Service");
  EXPECT_THAT(error.at("endpoint").get<std::string>(), HasSubstr("127.0.0.1"));
  EXPECT_GE(error.at("attempts").get<int>(), 1);
  EXPECT_THAT(error.at("message").get<std::string>(), HasSubstr("HTTP 400"));
  EXPECT_THAT(run.out, Not(HasSubstr(identity_header)));
}

// A script that asked for JSON reads stdout: a usage error is one JSON object there too.
TEST_F(CliUsage, JsonAppliesToUsageErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"token --json --timeout-ms 0", "--timeout-ms"},
      {"token --timeout-ms 0 --json", "--timeout-ms"},
      {"token --json --no-such-flag", "no-such-flag"},
      {"detect --json --source nope", "unknown source 'nope'"},
  };
  for (const auto& [arguments, says] : cases) expect_json_usage_error(arguments, says);
}

// --json anywhere on the command line makes a usage error JSON, even one found before the
// command is known: a mistyped command, or --json put before the command (refused, with a
// message saying where it goes).
TEST_F(CliUsage, JsonAppliesToUsageErrorsFoundBeforeTheCommand) {
  const std::pair<const char*, const char*> cases[] = {
      {"tokn --json", "did you mean 'token'?"},
      {"--json token", "put --json after the command"},
      {"--json token --source app-service", "put --json after the command"},
      {"--json", "put --json after the command"},
      {"demo --json", "--json"},
  };
  for (const auto& [arguments, says] : cases) expect_json_usage_error(arguments, says);
}

// --help and --version print their text and exit 0 wherever --json is.
TEST_F(CliUsage, HelpAndVersionWinOverAJsonBeforeTheCommand) {
  for (const char* arguments :
       {"--help --json", "--json --help", "--version --json", "-h --json"}) {
    const CliRun run = run_cli({}, arguments, scratch_);
    EXPECT_EQ(run.exit_code, 0) << arguments << ": " << run.err << run.out;
    EXPECT_FALSE(run.out.empty()) << arguments;
    EXPECT_THAT(run.out, Not(HasSubstr("put --json after the command"))) << arguments;
  }
}

// Every usage error in text is one line, like the runtime errors: "azkms: ", what is wrong,
// and where to read more.
TEST_F(CliUsage, UsageErrorsAreOneLineThatPointsToHelp) {
  const char* cases[] = {
      "token --client-id a --object-id b",
      "token --no-such-flag",
      "token --timeout-ms 0",
      "token --timeout-ms abc",
      "token --source",
      "token --resource ''",
      "detect --source nope",
      "token extra",
      "",
      "tokn",
  };
  for (const char* arguments : cases) {
    const CliRun run = run_cli(app_service(), arguments, scratch_);
    EXPECT_EQ(run.exit_code, 2) << arguments << ": " << run.err;
    EXPECT_TRUE(run.out.empty()) << arguments << ": " << run.out;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << arguments << ": " << run.err;
    EXPECT_EQ(run.err.rfind("azkms: ", 0), 0u) << arguments << ": " << run.err;
    EXPECT_THAT(run.err, ::testing::EndsWith("--help)\n")) << arguments << ": " << run.err;
  }
  const CliRun excluded = run_cli(app_service(), "token --client-id a --object-id b", scratch_);
  EXPECT_THAT(excluded.err, HasSubstr("see azkms token --help"));
}

// An empty --resource has its own hint: leaving it out means Key Vault, not an identity.
TEST_F(CliUsage, AnEmptyResourceSaysWhatLeavingItOutMeans) {
  const CliRun run = run_cli(app_service(), "token --resource ''", scratch_);
  EXPECT_EQ(run.exit_code, 2) << run.err;
  EXPECT_THAT(run.err, HasSubstr("--resource: must not be empty"));
  EXPECT_THAT(run.err, HasSubstr("leave the option out for https://vault.azure.net"));
  EXPECT_THAT(run.err, Not(HasSubstr("system-assigned")));
  const CliRun identity = run_cli(app_service(), "token --client-id ''", scratch_);
  EXPECT_THAT(identity.err, HasSubstr("to use the source's default identity"));
}

TEST_F(CliUsage, TimeoutMsSaysItWantsWholeMilliseconds) {
  for (const char* value : {"abc", "0", "1.5", "600001", "-5", "10000000000000"}) {
    const CliRun run = run_cli(app_service(), "token --timeout-ms " + std::string(value), scratch_);
    EXPECT_EQ(run.exit_code, 2) << value << ": " << run.err;
    EXPECT_THAT(run.err, HasSubstr("--timeout-ms"));
    EXPECT_THAT(run.err, HasSubstr("a whole number of milliseconds from 1 to 600000")) << value;
    EXPECT_THAT(run.err, Not(HasSubstr("Value "))) << value;
  }
}

TEST_F(CliUsage, AnOptionWithoutItsValueSaysWhatItNeeds) {
  for (const char* arguments : {"token --source", "detect --source", "token --source --json"}) {
    const CliRun run = run_cli(app_service(), arguments, scratch_);
    const std::string said = run.err + run.out;
    EXPECT_EQ(run.exit_code, 2) << arguments << ": " << said;
    EXPECT_THAT(said, HasSubstr("--source")) << arguments;
    EXPECT_THAT(said, HasSubstr("needs a source name")) << arguments;
    EXPECT_THAT(said, HasSubstr("imds")) << arguments;
    EXPECT_THAT(said, HasSubstr("workload-identity")) << arguments;
    EXPECT_THAT(said, Not(HasSubstr("required"))) << arguments;
  }
  const CliRun client = run_cli(app_service(), "token --client-id", scratch_);
  EXPECT_EQ(client.exit_code, 2) << client.err;
  EXPECT_THAT(client.err, HasSubstr("--client-id needs a value"));
  EXPECT_THAT(client.err, Not(HasSubstr("required")));
  // CLI11 would take the next option as the value: `--client-id --json` is not client id
  // "--json", and no request is made for it.
  for (const char* arguments :
       {"token --client-id --json", "token --object-id -v", "token --resource --json"}) {
    const auto before = requests();
    const CliRun run = run_cli(app_service(), arguments, scratch_);
    EXPECT_EQ(run.exit_code, 2) << arguments << ": " << run.err << run.out;
    EXPECT_THAT(run.err + run.out, HasSubstr("needs a value")) << arguments;
    EXPECT_EQ(requests(), before) << arguments;
  }
}

// demo has no --json: its help must not offer it.
TEST_F(CliUsage, DemoHelpDoesNotOfferJson) {
  const CliRun demo = run_cli(app_service(), "demo --help", scratch_);
  EXPECT_EQ(demo.exit_code, 0) << demo.err;
  EXPECT_THAT(demo.out, HasSubstr("Exit status"));
  EXPECT_THAT(demo.out, Not(HasSubstr("json")));
  const CliRun token = run_cli(app_service(), "token --help", scratch_);
  EXPECT_EQ(token.exit_code, 0) << token.err;
  EXPECT_THAT(token.out, HasSubstr("with --json"));
}

TEST_F(CliUsage, JsonErrorHasNullWhereAFieldDoesNotApply) {
  // A workload identity without its variables: refused before any request.
  auto vars = app_service();
  const CliRun run = run_cli(vars, "token --source workload-identity --json", scratch_);
  EXPECT_EQ(run.exit_code, 1) << run.err;
  const auto shown = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(shown.is_object()) << run.out;
  const auto& error = shown.at("error");
  EXPECT_EQ(error.at("code"), "configuration");
  EXPECT_TRUE(error.at("status").is_null()) << run.out;
  EXPECT_TRUE(error.at("endpoint").is_null()) << run.out;
  EXPECT_EQ(error.at("attempts"), 0);
}

TEST_F(CliUsage, VerboseShowsEveryAttemptAndNoSecret) {
  const auto vars = app_service();
  const std::string identity_header = vars.at("IDENTITY_HEADER");
  emu_.inject(Endpoint::kAppService, "500", 2);
  const CliRun run =
      run_cli(vars, "token --source app-service --json -v --timeout-ms 20000", scratch_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto shown = nlohmann::json::parse(run.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(shown.is_object()) << run.out;
  const std::string token = shown.at("accessToken");
  ASSERT_FALSE(token.empty());

  EXPECT_THAT(run.err, HasSubstr("attempt 1 ("));
  EXPECT_THAT(run.err, HasSubstr("HTTP 500; retrying in"));
  EXPECT_THAT(run.err, HasSubstr("attempt 2 ("));
  EXPECT_THAT(run.err, HasSubstr("attempt 3 ("));
  EXPECT_THAT(run.err, HasSubstr("HTTP 200"));
  EXPECT_THAT(run.err, Not(HasSubstr(token)));
  EXPECT_THAT(run.err, Not(HasSubstr(token.substr(0, 12))));
  EXPECT_THAT(run.err, Not(HasSubstr(identity_header)));
  // Each line: the time of day, then what the library said.
  std::istringstream lines(run.err);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(std::regex_search(line, std::regex(R"(^\d\d:\d\d:\d\d\.\d\d\d azkms \w+: )")))
        << line;
  }

  // Without --verbose, a success prints nothing on stderr.
  const CliRun quiet = run_cli(vars, "token --source app-service --json", scratch_);
  EXPECT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_TRUE(quiet.err.empty()) << quiet.err;
}

// Workload identity has no system-assigned identity: without a selector it signs in as the app
// registration AZURE_CLIENT_ID names, and `detect` says so rather than "system-assigned".
TEST_F(CliUsage, DetectNamesWhoWorkloadIdentitySignsInAsWithoutASelector) {
  const CliRun run =
      run_cli(emu_.client_environment(Endpoint::kWorkloadIdentity), "detect", scratch_);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("identities: default (AZURE_CLIENT_ID), client id\n"));
  EXPECT_THAT(run.out, Not(HasSubstr("system-assigned")));

  const CliRun app = run_cli(app_service(), "detect", scratch_);
  EXPECT_THAT(app.out, HasSubstr("identities: system-assigned, client id"));
}

// The runner itself. A sanitizer build's runtime may write a note of its own on the program's
// stderr; tests that count the program's lines must not count it, and must not miss a report.
TEST(CliRunner, SanitizerNotesAreSetApartFromTheProgramsLines) {
  CliRun run;
  run.err =
      "azkms: error [connection]: no connection was made\n"
      "==4242==Running thread 4243 was not suspended. False leak reports may appear.\n";
  testing::set_aside_sanitizer_notes(run);
  EXPECT_EQ(run.err, "azkms: error [connection]: no connection was made\n");
  EXPECT_EQ(run.sanitizer_notes,
            "==4242==Running thread 4243 was not suspended. False leak reports may appear.\n");
}

TEST(CliRunner, TextThatOnlyLooksLikeANoteStaysTheProgramsOwn) {
  for (const std::string text :
       {"== not a note\n", "==12 no closing marks\n", "====\n", "azkms: ==1== in the middle\n",
        "azkms: error [http_status]: the body said: runtime error: ERROR: AddressSanitizer\n"}) {
    CliRun run;
    run.err = text;
    testing::set_aside_sanitizer_notes(run);
    EXPECT_EQ(run.err, text);
    EXPECT_TRUE(run.sanitizer_notes.empty()) << text;
  }
}

TEST(CliRunner, ASanitizerReportFailsTheTestAndStaysInStderr) {
  for (const std::string report :
       {"==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n",
        "==7==ERROR: LeakSanitizer: detected memory leaks\n",
        "src/x.cpp:1:2: runtime error: signed integer overflow\n",
        "==7==LeakSanitizer has encountered a fatal error.\n"}) {
    CliRun run;
    run.err = report;
    EXPECT_NONFATAL_FAILURE(testing::set_aside_sanitizer_notes(run), "sanitizer runtime reported");
    EXPECT_EQ(run.err, report);
  }
}

}  // namespace
}  // namespace azkms
