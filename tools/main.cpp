// azkms: see what azkms detects in this environment, fetch a token, or run the end-to-end demo.
// Exit codes: 0 success, 1 a runtime failure (one line on stderr, or with --json one JSON
// object on stdout; never a secret), 2 usage (with --json, the same object, code "usage").
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/version.h"
#include "cli.hpp"
#include "redaction.hpp"

namespace azkms::cli {

CLI::Option* add_source_option(CLI::App& command, std::string& source, const std::string& help) {
  static const CLI::Validator known_source(
      [](std::string& value) -> std::string {
        if (value == "auto") return {};
        const auto kind = parse_source_kind(value);
        if (kind && *kind != SourceKind::kCustom) return {};
        return "unknown source '" + safe_excerpt(value, 60) + "': use " + kSourceNames;
      },
      "SOURCE");
  return command.add_option("--source", source, help)->capture_default_str()->check(known_source);
}

const CLI::Validator& non_empty() {
  static const CLI::Validator validator(
      [](std::string& value) -> std::string {
        if (!value.empty()) return {};
        return "must not be empty (leave the option out to use the system-assigned identity)";
      },
      "NON-EMPTY");
  return validator;
}

void IdentityFlags::add_to(CLI::App& command) {
  add_source_option(command, source, std::string(kSourceNames));
  auto* client = command.add_option("--client-id", client_id, "user-assigned identity client id")
                     ->check(non_empty());
  auto* object =
      command.add_option("--object-id", object_id, "user-assigned identity object (principal) id")
          ->check(non_empty());
  auto* resource =
      command.add_option("--resource-id", resource_id, "user-assigned identity Azure resource id")
          ->check(non_empty());
  client->excludes(object)->excludes(resource);
  object->excludes(resource);
}

std::optional<SourceKind> IdentityFlags::forced_source() const {
  if (source == "auto") return std::nullopt;
  auto kind = parse_source_kind(source);
  if (!kind || *kind == SourceKind::kCustom) {
    // Checked while parsing; kept so that a caller setting `source` directly gets an error.
    throw Error(ErrorCode::kConfiguration,
                "unknown --source '" + source + "': use " + std::string(kSourceNames));
  }
  return kind;
}

IdentitySelector IdentityFlags::selector() const {
  if (!client_id.empty()) return IdentitySelector::client_id(client_id);
  if (!object_id.empty()) return IdentitySelector::object_id(object_id);
  if (!resource_id.empty()) return IdentitySelector::resource_id(resource_id);
  return IdentitySelector::system_assigned();
}

namespace {

// Levenshtein distance, for suggesting the command a typo was meant to be.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool is_command(const CLI::App& app, std::string_view word) {
  for (const CLI::App* command : app.get_subcommands({})) {
    if (command->get_name() == word) return true;
  }
  return false;
}

// The first word of the command line when it is neither an option nor a command: the one
// usage error CLI11 words unhelpfully ("A subcommand is required").
int unknown_command(const CLI::App& app, std::string_view word) {
  std::string names;
  std::string closest;
  std::size_t best = 3;  // at most two edits away, or it is not a typo
  const std::vector<const CLI::App*> commands = app.get_subcommands({});
  for (const CLI::App* command : commands) {
    const std::string& name = command->get_name();
    names += (names.empty() ? "" : ", ") + name;
    const std::size_t distance = edit_distance(word, name);
    if (distance < best || (name.rfind(word, 0) == 0 && !word.empty())) {
      best = std::min(distance, best);
      closest = name;
    }
  }
  std::cerr << "azkms: unknown command '" << safe_excerpt(word, 60) << "'";
  if (!closest.empty()) std::cerr << "; did you mean '" << closest << "'?";
  std::cerr << " (commands: " << names << "; see azkms --help)\n";
  return kExitUsage;
}

// --json asked of the command that ran: its errors are JSON too.
bool wants_json(const CLI::App& app) {
  for (const CLI::App* command : app.get_subcommands()) {
    const CLI::Option* json = command->get_option_no_throw("--json");
    if (json != nullptr && json->count() > 0) return true;
  }
  return false;
}

nlohmann::json text_or_null(const std::string& text, std::size_t limit) {
  if (text.empty()) return nullptr;
  return safe_excerpt(text, limit);
}

// {"error": {"code", "message", "source", "endpoint", "status", "attempts"}} on stdout, as
// include/azkms/error.hpp describes; null where a field does not apply.
void print_json_error(std::string_view code, const std::string& message, const Error* error) {
  nlohmann::json fields = {{"code", code},      {"message", safe_message(message)},
                           {"source", nullptr}, {"endpoint", nullptr},
                           {"status", nullptr}, {"attempts", 0}};
  if (error != nullptr) {
    fields["source"] = text_or_null(error->source(), 100);
    fields["endpoint"] = text_or_null(error->endpoint(), 300);
    if (error->http_status() != 0) fields["status"] = error->http_status();
    fields["attempts"] = error->attempts();
  }
  const nlohmann::json out = {{"error", fields}};
  std::cout << out.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace)
            << "\n";
}

int report(const CLI::App& app, const Error& error) {
  if (wants_json(app)) {
    print_json_error(to_string(error.code()), error.what(), &error);
  } else {
    std::cerr << "azkms: error [" << to_string(error.code()) << "]: " << safe_message(error.what())
              << "\n";
  }
  return kExitFailure;
}

int report(const CLI::App& app, const std::exception& error) {
  const std::string message = safe_excerpt(error.what(), 1000);
  if (wants_json(app)) {
    print_json_error("internal", message, nullptr);
  } else {
    std::cerr << "azkms: error: " << message << "\n";
  }
  return kExitFailure;
}

}  // namespace
}  // namespace azkms::cli

int main(int argc, char** argv) {
  using namespace azkms::cli;
  // Whatever the program prints, on any path, never shows the secrets of its environment.
  azkms::RedactionScope environment_secrets;
  for (const char* name : {"IDENTITY_HEADER", "MSI_SECRET"}) {
    if (const char* value = std::getenv(name)) environment_secrets.add(value);
  }
  CLI::App app{"azkms: Azure managed identity tokens for MongoDB client-side encryption"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "azkms " AZKMS_VERSION_STRING);
  app.footer(
      "Exit status: 0 success, 1 failure (one line on stderr; with --json, one JSON object "
      "{\"error\": {...}} on stdout), 2 usage error (with --json, the same object with code "
      "\"usage\").");
  const auto detect = add_detect_command(app);
  const auto token = add_token_command(app);
  const auto demo = add_demo_command(app);
  if (argc > 1 && argv[1][0] != '-' && !is_command(app, argv[1])) {
    return unknown_command(app, argv[1]);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // A script that asked for JSON reads stdout only: its usage errors are JSON too, with the
    // code "usage" (help and --version still print text and exit 0).
    if (e.get_exit_code() != 0 && wants_json(app)) {
      print_json_error("usage", e.what(), nullptr);
      return kExitUsage;
    }
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  try {
    if (app.got_subcommand("detect")) return detect();
    if (app.got_subcommand("token")) return token();
    if (app.got_subcommand("demo")) return demo();
  } catch (const azkms::Error& e) {
    return report(app, e);
  } catch (const std::exception& e) {
    return report(app, e);
  }
  return kExitUsage;
}
