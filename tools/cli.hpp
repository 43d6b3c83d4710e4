// Shared pieces of the azkms command-line program: each subcommand lives in its own file and
// registers itself on the CLI11 app.
//
// Exit codes: 0 success, 1 a runtime failure, 2 a usage error (anything wrong on the command
// line, found before any request is made).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <string>

#include "azkms/identity.hpp"
#include "azkms/source.hpp"

namespace azkms::cli {

inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// The names --source accepts.
inline constexpr const char* kSourceNames =
    "auto, imds, app-service, app-service-2017, azure-ml, cloud-shell, azure-arc, "
    "service-fabric or workload-identity";

// Adds --source to `command`, checked while parsing (an unknown name is a usage error).
CLI::Option* add_source_option(CLI::App& command, std::string& source, const std::string& help);

// Refuses an empty value while parsing: `--client-id ""` must not quietly mean "no selector".
// `when_left_out` says what leaving the option out means instead ("to use the
// system-assigned identity", "for https://vault.azure.net").
CLI::Validator non_empty(const std::string& when_left_out);

// Flags shared by commands that fetch tokens: --source, --client-id/--object-id/--resource-id.
struct IdentityFlags {
  std::string source = "auto";
  std::string client_id;
  std::string object_id;
  std::string resource_id;

  void add_to(CLI::App& command);
  // nullopt for "auto". The name was checked while parsing.
  [[nodiscard]] std::optional<SourceKind> forced_source() const;
  [[nodiscard]] IdentitySelector selector() const;
};

// Each returns the action to run after parsing; it returns the process exit code.
using Action = std::function<int()>;
Action add_detect_command(CLI::App& app);
Action add_token_command(CLI::App& app);
Action add_demo_command(CLI::App& app);

}  // namespace azkms::cli
