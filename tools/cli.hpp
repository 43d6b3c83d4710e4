// Shared pieces of the azkms command-line program: each subcommand lives in its own file and
// registers itself on the CLI11 app.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <string>

#include "azkms/identity.hpp"
#include "azkms/source.hpp"

namespace azkms::cli {

// Flags shared by commands that fetch tokens: --source, --client-id/--object-id/--resource-id.
struct IdentityFlags {
  std::string source = "auto";
  std::string client_id;
  std::string object_id;
  std::string resource_id;

  void add_to(CLI::App& command);
  // nullopt for "auto". Throws azkms::Error(kConfiguration) for an unknown name.
  [[nodiscard]] std::optional<SourceKind> forced_source() const;
  [[nodiscard]] IdentitySelector selector() const;
};

// Each returns the action to run after parsing; it returns the process exit code.
using Action = std::function<int()>;
Action add_detect_command(CLI::App& app);
Action add_token_command(CLI::App& app);
Action add_demo_command(CLI::App& app);

}  // namespace azkms::cli
