// `azkms token --timeout-ms`: the deadline comes from the command line, so it is checked
// before any arithmetic. 10000000000000 ms once overflowed the deadline into the past and
// the command timed out at once; now a value outside 1 to 600000 (10 minutes, as
// tokenTimeoutMs) is a usage error, and the endpoint is never asked.
//
// The program runs against the emulator's IMDS on loopback (AZURE_POD_IDENTITY_AUTHORITY_HOST)
// with an otherwise empty environment.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli_runner.hpp"
#include "emulator.hpp"
#include "loopback_only.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using emulator::Endpoint;

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

fs::path cli_path() { return fs::read_symlink("/proc/self/exe").parent_path() / "azkms"; }

CliRun run_token(const emulator::Emulator& emu, const std::string& timeout) {
  CliRun run;
  const auto vars = emu.client_environment(Endpoint::kImds);
  const auto authority = vars.find("AZURE_POD_IDENTITY_AUTHORITY_HOST");
  if (authority == vars.end() || !testing::is_loopback_url(authority->second)) {
    ADD_FAILURE() << "refusing to run `azkms token` without a loopback IMDS";
    return run;
  }
  // Every argument here is a plain word: no quoting needed.
  const std::string command =
      "env -i PATH=/usr/bin:/bin AZURE_POD_IDENTITY_AUTHORITY_HOST=" + authority->second + " " +
      cli_path().string() + " token --source imds --timeout-ms " + timeout + " 2>&1";
  const testing::CommandRun ran = testing::run_command(command);
  run.output = ran.out;
  run.exit_code = ran.exit_code;
  return run;
}

class CliTimeout : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(cli_path())) {
      GTEST_FAIL() << "the command-line program is not built at " << cli_path()
                   << " (build the azkms_cli target)";
    }
    emu_.start();
  }
  emulator::Emulator emu_;
};

TEST_F(CliTimeout, AnOutOfRangeTimeoutIsAUsageErrorBeforeAnyRequest) {
  for (const char* timeout : {"10000000000000", "9223372036854775807", "600001", "0", "-5",
                              "99999999999999999999999", "1e6"}) {
    const auto served = emu_.requests_served(Endpoint::kImds);
    const CliRun run = run_token(emu_, timeout);
    EXPECT_EQ(run.exit_code, 2) << timeout << ": " << run.output;
    EXPECT_NE(run.output.find("--timeout-ms"), std::string::npos) << timeout << ": " << run.output;
    EXPECT_EQ(emu_.requests_served(Endpoint::kImds), served) << timeout;
  }
}

TEST_F(CliTimeout, TheLongestTimeoutStillGetsAToken) {
  for (const char* timeout : {"600000", "5000"}) {
    const CliRun run = run_token(emu_, timeout);
    EXPECT_EQ(run.exit_code, 0) << timeout << ": " << run.output;
    EXPECT_NE(run.output.find("source:"), std::string::npos) << run.output;
  }
}

}  // namespace
}  // namespace azkms
