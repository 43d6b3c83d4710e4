// `azkms demo`: the end-to-end walk-through on one machine (see demo.hpp).
// Starts the emulators in-process on free loopback ports, behaves as an app in the chosen
// hosting environment (App Service by default), creates a data key in the emulated Key Vault,
// encrypts and decrypts a sample field, and prints each step with its timing. Never prints a
// token.
#include <iostream>

#include "cli.hpp"
#include "demo.hpp"

namespace azkms::cli {
namespace {

struct DemoFlags {
  IdentityFlags identity;
  std::string sample = "457-55-5462";
};

int run(const DemoFlags& flags) {
  DemoOptions options;
  const auto forced = flags.identity.forced_source();
  options.environment = forced.value_or(SourceKind::kAppService);
  // Without --source the demo shows detection at work on App Service's variables; with it, the
  // named environment is emulated and its source named explicitly (Azure ML and App Service
  // 2017 share their variables, so detection alone could not tell them apart).
  options.force_source = forced.has_value();
  options.identity = flags.identity.selector();
  options.sample = flags.sample;
  run_demo(options, std::cout);
  return 0;
}

}  // namespace

Action add_demo_command(CLI::App& app) {
  auto flags = std::make_shared<DemoFlags>();
  auto* command = app.add_subcommand(
      "demo",
      "Create a data key, encrypt and decrypt a field, with credentials from an emulated Azure "
      "hosting environment (in-process, loopback only)");
  // The app's footer offers --json for failures, which demo does not take. (A --json on the
  // command line still makes a usage error JSON, as for every command: azkms --help says so.)
  command->footer("Exit status: 0 success, 1 failure (one line on stderr), 2 usage error.");
  flags->identity.add_to(*command);
  command->add_option("--sample", flags->sample, "the value to encrypt")->capture_default_str();
  return [flags] { return run(*flags); };
}

}  // namespace azkms::cli
