// `azkms demo`: the end-to-end walk-through on one machine. Starts the emulator in-process on
// free loopback ports, behaves as an app in the chosen hosting environment (App Service by
// default), and prints each step with its timing. Never prints a token.
#include <chrono>
#include <iostream>

#include "azkms/detect.hpp"
#include "cli.hpp"
#include "emulator.hpp"

namespace azkms::cli {
namespace {

struct DemoFlags {
  IdentityFlags identity;
};

using Ms = std::chrono::duration<double, std::milli>;

emulator::Endpoint endpoint_for(SourceKind kind) {
  switch (kind) {
    case SourceKind::kImds:
      return emulator::Endpoint::kImds;
    case SourceKind::kAppService:
      return emulator::Endpoint::kAppService;
    case SourceKind::kAppService2017:
      return emulator::Endpoint::kAppService2017;
    case SourceKind::kAzureMl:
      return emulator::Endpoint::kAzureMl;
    case SourceKind::kCloudShell:
      return emulator::Endpoint::kCloudShell;
    case SourceKind::kAzureArc:
      return emulator::Endpoint::kAzureArc;
    case SourceKind::kServiceFabric:
      return emulator::Endpoint::kServiceFabric;
    case SourceKind::kWorkloadIdentity:
      return emulator::Endpoint::kWorkloadIdentity;
    case SourceKind::kCustom:
      break;
  }
  throw Error(ErrorCode::kConfiguration, "the demo cannot emulate a custom source");
}

// Prints "[  12.3 ms] what happened" lines.
class StepPrinter {
 public:
  template <typename F>
  auto step(const std::string& what, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    auto result = f();
    const Ms took = std::chrono::steady_clock::now() - start;
    std::printf("[%8.1f ms] %s\n", took.count(), what.c_str());
    return result;
  }
};

int run(const DemoFlags& flags) {
  const SourceKind kind = flags.identity.forced_source().value_or(SourceKind::kAppService);
  const auto total_start = std::chrono::steady_clock::now();
  StepPrinter printer;

  emulator::Emulator emu;
  printer.step("started the local identity emulator on 127.0.0.1", [&] {
    emu.start();
    return 0;
  });
  const auto endpoint = endpoint_for(kind);
  MapEnvironment environment;
  for (const auto& [name, value] : emu.client_environment(endpoint)) environment.set(name, value);

  const Detection detection = printer.step("detected the hosting environment", [&] {
    return detect(environment, flags.identity.forced_source().has_value()
                                   ? flags.identity.forced_source()
                                   : std::nullopt);
  });
  std::cout << "             source: " << detection.source->name() << " at " << detection.endpoint
            << "\n             why:    " << detection.reason << "\n";

  TokenRequest request{std::string(kKeyVaultResource), flags.identity.selector()};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  const AccessToken token =
      printer.step("fetched a Key Vault token (" + request.identity.describe() + ")",
                   [&] { return detection.source->fetch(request, deadline); });
  const auto lifetime = std::chrono::duration_cast<std::chrono::seconds>(
      token.expires_on - std::chrono::system_clock::now());
  std::cout << "             token:  " << token.token.redacted() << " from " << token.source
            << ", valid for " << lifetime.count() << " s\n";

  const Ms total = std::chrono::steady_clock::now() - total_start;
  std::printf("demo finished in %.1f ms\n", total.count());
  return 0;
}

}  // namespace

Action add_demo_command(CLI::App& app) {
  auto flags = std::make_shared<DemoFlags>();
  auto* command = app.add_subcommand(
      "demo", "Run the end-to-end demo against the in-process emulator (loopback only)");
  flags->identity.add_to(*command);
  return [flags] { return run(*flags); };
}

}  // namespace azkms::cli
