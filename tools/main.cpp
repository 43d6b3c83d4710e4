// azkms: see what azkms detects in this environment, fetch a token, or run the end-to-end demo.
// Exit codes: 0 success, 1 a runtime failure (one line on stderr, never a secret), 2 usage.
#include <cstdlib>
#include <iostream>

#include "azkms/error.hpp"
#include "azkms/version.h"
#include "cli.hpp"
#include "redaction.hpp"

namespace azkms::cli {

void IdentityFlags::add_to(CLI::App& command) {
  command
      .add_option("--source", source,
                  "auto, imds, app-service, app-service-2017, azure-ml, cloud-shell, azure-arc, "
                  "service-fabric or workload-identity")
      ->capture_default_str();
  auto* client = command.add_option("--client-id", client_id, "user-assigned identity client id");
  auto* object =
      command.add_option("--object-id", object_id, "user-assigned identity object (principal) id");
  auto* resource =
      command.add_option("--resource-id", resource_id, "user-assigned identity Azure resource id");
  client->excludes(object)->excludes(resource);
  object->excludes(resource);
}

std::optional<SourceKind> IdentityFlags::forced_source() const {
  if (source == "auto") return std::nullopt;
  auto kind = parse_source_kind(source);
  if (!kind || *kind == SourceKind::kCustom) {
    throw Error(ErrorCode::kConfiguration,
                "unknown --source '" + source +
                    "': use auto, imds, app-service, app-service-2017, azure-ml, cloud-shell, "
                    "azure-arc, service-fabric or workload-identity");
  }
  return kind;
}

IdentitySelector IdentityFlags::selector() const {
  if (!client_id.empty()) return IdentitySelector::client_id(client_id);
  if (!object_id.empty()) return IdentitySelector::object_id(object_id);
  if (!resource_id.empty()) return IdentitySelector::resource_id(resource_id);
  return IdentitySelector::system_assigned();
}

}  // namespace azkms::cli

int main(int argc, char** argv) {
  // Whatever the program prints, on any path, never shows the secrets of its environment.
  azkms::RedactionScope environment_secrets;
  for (const char* name : {"IDENTITY_HEADER", "MSI_SECRET"}) {
    if (const char* value = std::getenv(name)) environment_secrets.add(value);
  }
  CLI::App app{"azkms: Azure managed identity tokens for MongoDB client-side encryption"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "azkms " AZKMS_VERSION_STRING);
  const auto detect = azkms::cli::add_detect_command(app);
  const auto token = azkms::cli::add_token_command(app);
  const auto demo = azkms::cli::add_demo_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (app.got_subcommand("detect")) return detect();
    if (app.got_subcommand("token")) return token();
    if (app.got_subcommand("demo")) return demo();
  } catch (const azkms::Error& e) {
    std::cerr << "azkms: error [" << azkms::to_string(e.code())
              << "]: " << azkms::safe_message(e.what()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "azkms: error: " << azkms::safe_excerpt(e.what(), 1000) << "\n";
    return 1;
  }
  return 2;
}
