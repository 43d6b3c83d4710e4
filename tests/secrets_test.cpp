// Secrets never leak: every error message, log line (azkms::set_log_hook), cache event and CLI
// output produced across the fault matrix is checked for
//  - tokens: each token the emulator issued that a client saw, any emulator token at all (they
//    share a recognisable prefix, and any run of token characters the ledger knows), and the
//    token of the bodies the matrix substitutes;
//  - IDENTITY_HEADER and MSI_SECRET (and a stale IDENTITY_HEADER sent to App Service);
//  - the workload identity's federated token (a client assertion);
//  - the contents of every Azure Arc key file the emulator wrote.
// `azkms token` on success prints the token by design: there only stderr is checked for it.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "azkms/log.hpp"
#include "fault_matrix.hpp"
#include "loopback_only.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using emulator::Endpoint;
using fault_matrix::Harness;

constexpr std::string_view kEmulatorTokenPrefix = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.emulator.";
constexpr const char* kStaleIdentityHeader = "stale-IDENTITY-HEADER-3e5f7a9c";

bool token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

class SecretChecker {
 public:
  explicit SecretChecker(Harness& harness) : harness_(harness) {}

  void add(std::string secret) {
    if (secret.size() >= 8) secrets_.push_back(std::move(secret));
  }

  // Fails the test, without printing the secret, when `text` contains one.
  void check(const std::string& text, const std::string& where) {
    ++checked_;
    for (const auto& secret : secrets_) {
      if (text.find(secret) != std::string::npos) {
        ADD_FAILURE() << where << " contains a secret (" << secret.size() << " bytes, starting "
                      << secret.substr(0, 4) << "...): " << redact(text, {secret});
      }
    }
    // Any emulator token, even one the test never saw, and even cut short.
    if (auto pos = text.find(".emulator."); pos != std::string::npos) {
      std::size_t end = pos + 10;
      while (end < text.size() && token_char(text[end])) ++end;
      if (end - pos - 10 >= 6) ADD_FAILURE() << where << " contains an emulator token";
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
        ADD_FAILURE() << where << " contains a token the emulator issued";
      }
      i = end;
    }
  }
  [[nodiscard]] int checked() const { return checked_; }

 private:
  Harness& harness_;
  std::vector<std::string> secrets_;
  int checked_ = 0;
};

void add_fixed_secrets(SecretChecker& checker, Harness& harness) {
  checker.add(Harness::kIdentityHeader);
  checker.add(Harness::kMsiSecret);
  checker.add(kStaleIdentityHeader);
  checker.add(fault_matrix::kSubstitutedToken);
  checker.add(harness.emu().federated_token());
  checker.add(std::string(kEmulatorTokenPrefix));
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
  EXPECT_EQ(failures_for("App Service answered HTTP 500: {\"error\":\"[redacted]\"}"), 0);
  EXPECT_GE(failures_for(std::string("header ") + Harness::kIdentityHeader + " echoed"), 1);
  EXPECT_GE(failures_for(std::string("secret=") + Harness::kMsiSecret), 1);
  EXPECT_GE(failures_for("body: " + issued.substr(0, 60)), 1);  // a token cut short
  EXPECT_GE(failures_for("{\"access_token\":\"" + issued + "\"}"), 1);
  EXPECT_GE(failures_for(harness.emu().federated_token()), 1);
}

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
  std::mutex mutex;
  std::vector<std::string> lines;
  set_log_hook([&](LogLevel, std::string_view message) {
    std::lock_guard lock(mutex);
    lines.emplace_back(message);
  });

  std::vector<std::string> messages;
  std::vector<std::string> tokens;
  for (const auto& row : fault_matrix::rows()) {
    if (!row.applies(endpoint)) continue;
    auto seen = harness_->run(row, endpoint);
    for (auto& message : seen.messages) messages.push_back(row.name + ": " + message);
    if (!seen.token.empty()) tokens.push_back(seen.token);
    if (!seen.recovery_token.empty()) tokens.push_back(seen.recovery_token);
  }
  set_log_hook(nullptr);

  SecretChecker checker(*harness_);
  add_fixed_secrets(checker, *harness_);
  for (auto& token : tokens) checker.add(token);
  for (auto& key : harness_->arc_keys()) checker.add(key);
  for (const auto& message : messages)
    checker.check(message, "error message \"" + message.substr(0, 60) + "...\"");
  std::lock_guard lock(mutex);
  for (const auto& line : lines) checker.check(line, "log line");

  // The check had something to check: errors from most rows, and log lines from the retries.
  EXPECT_GT(messages.size(), 30u);
  EXPECT_GT(lines.size(), 5u);
  EXPECT_GT(tokens.size(), 10u);
  if (endpoint == Endpoint::kAzureArc) {
    EXPECT_FALSE(harness_->arc_keys().empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Sources, LibrarySecrets, ::testing::ValuesIn(emulator::kAllEndpoints),
                         [](const ::testing::TestParamInfo<Endpoint>& info) {
                           std::string name(emulator::to_string(info.param));
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// ---------------------------------------------------------------------------------------------
// The command line, against the same emulator.

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string shell_quote(const std::string& value) {
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

fs::path cli_path() { return fs::read_symlink("/proc/self/exe").parent_path() / "azkms"; }

// Runs build/bin/azkms with exactly `vars` as its environment (plus PATH).
CliRun run_cli(const fault_matrix::Vars& vars, const std::string& arguments,
               const fs::path& scratch) {
  // The command line may only ever reach loopback.
  for (const char* name : {"IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                           "AZURE_AUTHORITY_HOST", "IMDS_ENDPOINT"}) {
    auto it = vars.find(name);
    if (it != vars.end() && !testing::is_loopback_url(it->second)) {
      ADD_FAILURE() << "refusing to run the CLI with " << name << " pointing off loopback";
      return {};
    }
  }
  if (arguments.find("token") != std::string::npos &&
      vars.count("AZURE_POD_IDENTITY_AUTHORITY_HOST") == 0 &&
      vars.count("IDENTITY_ENDPOINT") == 0 && vars.count("MSI_ENDPOINT") == 0 &&
      vars.count("AZURE_AUTHORITY_HOST") == 0) {
    ADD_FAILURE() << "refusing to run `azkms token` without a loopback endpoint";
    return {};
  }
  std::string command = "env -i PATH=/usr/bin:/bin";
  for (const auto& [name, value] : vars) command += " " + name + "=" + shell_quote(value);
  const fs::path err_file = scratch / "stderr.txt";
  command += " " + shell_quote(cli_path().string()) + " " + arguments + " 2>" +
             shell_quote(err_file.string());
  CliRun run;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed";
    return run;
  }
  std::array<char, 4096> buffer{};
  while (std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe))
    run.out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err_file);
  std::stringstream err;
  err << in.rdbuf();
  run.err = err.str();
  return run;
}

class CliSecrets : public ::testing::Test {
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

bool supports_client_id(Endpoint endpoint) {
  return endpoint != Endpoint::kCloudShell && endpoint != Endpoint::kAzureArc &&
         endpoint != Endpoint::kServiceFabric;
}

TEST_F(CliSecrets, DetectAndFailingTokenPrintNoSecret) {
  Harness harness;
  auto& emu = harness.emu();
  std::vector<std::pair<std::string, CliRun>> runs;  // what was run, what came out
  std::vector<std::string> printed_tokens;           // by successful `token` runs, on stdout

  for (auto endpoint : emulator::kAllEndpoints) {
    const fault_matrix::Vars vars = harness.environment_of(endpoint);
    const std::string source = "--source " + std::string(emulator::to_string(endpoint));
    const std::string name(emulator::to_string(endpoint));

    for (const char* detect : {"detect", "detect --json"}) {
      CliRun run = run_cli(vars, detect, scratch_);
      EXPECT_EQ(run.exit_code, 0) << name << " " << detect << ": " << run.err;
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
      EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1)
          << name << " " << fault << ": one line on stderr: " << run.err;
      EXPECT_THAT(run.err, ::testing::HasSubstr("azkms: error ["));
      runs.emplace_back(name + " token with " + fault, std::move(run));
    }
    emu.clear_faults();

    // Successful `token` prints the token on stdout, by design, and nothing secret elsewhere.
    for (const char* format : {"", " --json"}) {
      CliRun run = run_cli(vars, "token " + source + " --timeout-ms 5000" + format, scratch_);
      EXPECT_EQ(run.exit_code, 0) << name << ": " << run.err;
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
  add_fixed_secrets(checker, harness);
  for (auto& token : printed_tokens) checker.add(token);
  for (auto& key : harness.arc_keys()) checker.add(key);
  for (const auto& [what, run] : runs) {
    checker.check(run.out, "stdout of `azkms " + what + "`");
    checker.check(run.err, "stderr of `azkms " + what + "`");
  }
  EXPECT_EQ(printed_tokens.size(), 2 * emulator::kAllEndpoints.size());
  EXPECT_GT(runs.size(), 100u);
}

// The demo prints each step and the token's source, never the token.
TEST_F(CliSecrets, DemoPrintsNoToken) {
  CliRun run = run_cli({}, "demo", scratch_);
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_FALSE(run.out.empty());
  EXPECT_EQ(run.out.find(".emulator."), std::string::npos) << "the demo printed a token";
  EXPECT_EQ(run.err.find(".emulator."), std::string::npos) << "the demo printed a token";
  EXPECT_EQ(run.out.find("accessToken"), std::string::npos);
}

}  // namespace
}  // namespace azkms
