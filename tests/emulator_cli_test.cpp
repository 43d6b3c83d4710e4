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

}  // namespace
}  // namespace azkms
