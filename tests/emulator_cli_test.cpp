// azkms-emulator's command line: --version, and argument errors that exit 2 with a message a
// person can read, before anything is served.
//
// Every run is bounded by timeout(1): an emulator that accepted a bad command line would
// serve until killed (exit 124), which fails the test instead of hanging it. Only loopback is
// ever bound (the emulator refuses anything else).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "azkms/version.h"
#include "cli_runner.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct EmulatorRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

fs::path emulator_path() {
  return fs::read_symlink("/proc/self/exe").parent_path() / "azkms-emulator";
}

// Every argument here is a plain word or quoted by the caller.
EmulatorRun run_emulator(const std::string& arguments) {
  EmulatorRun run;
  const std::string command = "env -i PATH=/usr/bin:/bin timeout 20 " + emulator_path().string() +
                              " " + arguments + " --quiet 2>&1";
  const testing::CommandRun ran = testing::run_command(command);
  run.output = ran.out;
  run.exit_code = ran.exit_code;
  return run;
}

class EmulatorCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(emulator_path())) {
      GTEST_FAIL() << "azkms-emulator is not built at " << emulator_path();
    }
  }
};

TEST_F(EmulatorCli, VersionPrintsTheProjectVersion) {
  const EmulatorRun run = run_emulator("--version");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(run.output, "azkms-emulator " AZKMS_VERSION_STRING "\n");
}

TEST_F(EmulatorCli, ArgumentErrorsExitTwoWithAReadableMessage) {
  struct Case {
    const char* arguments;
    const char* says;
  };
  const Case cases[] = {
      {"--token-lifetime 0", "--token-lifetime: Value 0 not in range 1 to 31622400"},
      {"--token-lifetime -5", "--token-lifetime"},
      {"--token-lifetime 99999999999", "--token-lifetime"},
      {"--delay-ms -1", "--delay-ms: Value -1 not in range 0 to 600000"},
      {"--host 10.0.0.1", "--host"},
      {"--no-such-option", "no-such-option"},
      {"--port imds", "--port expects NAME=PORT"},
      {"--port nope=8080", "--port expects NAME=PORT"},
      {"--port imds=70000", "--port expects NAME=PORT"},
      // Trailing junk once read as port 0 (any free port) and served.
      {"--port imds=0junk", "--port expects NAME=PORT"},
      {"--port imds=0.5", "--port expects NAME=PORT"},
      {"--port imds=", "--port expects NAME=PORT"},
      // --json would print a line --print-env's eval cannot read.
      {"--json --print-env imds --foreground", "excludes"},
      {"--print-env nowhere --foreground", "--print-env expects an endpoint name"},
  };
  for (const auto& c : cases) {
    const EmulatorRun run = run_emulator(c.arguments);
    EXPECT_EQ(run.exit_code, 2) << c.arguments << ": " << run.output;
    EXPECT_THAT(run.output, HasSubstr(c.says)) << c.arguments;
    // No range of 300 digits (std::numeric_limits<double>::max()).
    EXPECT_LT(run.output.size(), 400u) << c.arguments << ": " << run.output;
    EXPECT_THAT(run.output, Not(HasSubstr("17976931348623157"))) << c.arguments;
  }
}

TEST_F(EmulatorCli, ListFaultsExitsZero) {
  const EmulatorRun run = run_emulator("--list-faults");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("500"));
}

// `eval "$(azkms-emulator --print-env <endpoint>)"` is all that `azkms token` needs, for every
// endpoint: the emulator serves in the background and print-env names its process. The token
// is replaced before the output reaches the test.
EmulatorRun token_with_print_env(const std::string& endpoint, const std::string& after_eval) {
  const std::string script =
      "out=\"$(timeout 20 \"$1\" --print-env \"$3\" --quiet)\" || { echo 'did not start'; exit 90; "
      "}\n"
      "eval \"$out\"\n" +
      after_eval +
      "\n"
      "timeout 60 \"$2\" token --source \"$3\" --json 2>&1 |\n"
      "  sed 's/\"accessToken\":\"[^\"]*\"/\"accessToken\":\"[present]\"/'\n"
      "rc=${PIPESTATUS[0]}\n"
      "kill \"$AZKMS_EMULATOR_PID\"\n"
      "exit $rc\n";
  const std::string command =
      "env -i PATH=/usr/bin:/bin bash -c " + testing::shell_quote(script) + " _ " +
      testing::shell_quote(emulator_path().string()) + " " +
      testing::shell_quote((emulator_path().parent_path() / "azkms").string()) + " " +
      testing::shell_quote(endpoint) + " 2>&1";
  const testing::CommandRun ran = testing::run_command(command);
  return {ran.exit_code, ran.out};
}

TEST_F(EmulatorCli, PrintEnvIsAllTheCommandLineNeedsForEveryEndpoint) {
  for (const char* endpoint : {"imds", "app-service", "app-service-2017", "azure-ml", "cloud-shell",
                               "azure-arc", "service-fabric", "workload-identity"}) {
    const EmulatorRun run = token_with_print_env(endpoint, "");
    EXPECT_EQ(run.exit_code, 0) << endpoint << ": " << run.output;
    EXPECT_THAT(run.output, HasSubstr("\"accessToken\":\"[present]\"")) << endpoint;
    EXPECT_THAT(run.output, HasSubstr(std::string("\"source\":\"") + endpoint + "\"")) << endpoint;
  }
}

// Workload identity's authority is served over https, as Entra ID is: the emulator's CA reaches
// azkms through SSL_CERT_FILE, and without it the authority is not trusted.
TEST_F(EmulatorCli, PrintEnvTrustsTheWorkloadAuthorityThroughSslCertFile) {
  const EmulatorRun untrusted = token_with_print_env("workload-identity", "unset SSL_CERT_FILE");
  EXPECT_NE(untrusted.exit_code, 0) << untrusted.output;
  EXPECT_THAT(untrusted.output, HasSubstr("\"code\":\"tls\"")) << untrusted.output;
  EXPECT_THAT(untrusted.output, HasSubstr("https://127.0.0.1:")) << untrusted.output;
}

}  // namespace
}  // namespace azkms
