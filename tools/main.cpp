// azkms: see what azkms detects in this environment, fetch a token, or run the end-to-end demo.
// Exit codes: 0 success, 1 a runtime failure (one line on stderr, or with --json one JSON
// object on stdout; never a secret), 2 usage (with --json, the same object, code "usage").
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string_view>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/version.h"
#include "cli.hpp"
#include "redaction.hpp"

namespace azkms::cli {

namespace {
// CLI11 takes the word after an option as its value even when that word is another option
// (`--client-id --json`): then the option's own value was left out. No source name, identity
// id or resource starts with '-'.
bool is_next_option(const std::string& value) { return !value.empty() && value[0] == '-'; }
}  // namespace

CLI::Option* add_source_option(CLI::App& command, std::string& source, const std::string& help) {
  static const CLI::Validator known_source(
      [](std::string& value) -> std::string {
        if (is_next_option(value)) {
          return "needs a source name ('" + safe_excerpt(value, 60) +
                 "' is the next option): " + kSourceNames;
        }
        if (value == "auto") return {};
        const auto kind = parse_source_kind(value);
        if (kind && *kind != SourceKind::kCustom) return {};
        return "unknown source '" + safe_excerpt(value, 60) + "': use " + kSourceNames;
      },
      "SOURCE");
  return command.add_option("--source", source, help)->capture_default_str()->check(known_source);
}

// What leaving out --client-id, --object-id and --resource-id means.
constexpr const char* kNoSelectorMeans =
    "to use the source's default identity: the system-assigned one, or for workload identity "
    "the app in AZURE_CLIENT_ID";

CLI::Validator non_empty(const std::string& when_left_out) {
  return {[when_left_out](std::string& value) -> std::string {
            if (is_next_option(value)) {
              return "needs a value ('" + safe_excerpt(value, 60) + "' is the next option)";
            }
            if (!value.empty()) return {};
            return "must not be empty (leave the option out " + when_left_out + ")";
          },
          "NON-EMPTY"};
}

void IdentityFlags::add_to(CLI::App& command) {
  add_source_option(command, source, std::string(kSourceNames));
  auto* client = command.add_option("--client-id", client_id, "user-assigned identity client id")
                     ->check(non_empty(kNoSelectorMeans));
  auto* object =
      command.add_option("--object-id", object_id, "user-assigned identity object (principal) id")
          ->check(non_empty(kNoSelectorMeans));
  auto* resource =
      command.add_option("--resource-id", resource_id, "user-assigned identity Azure resource id")
          ->check(non_empty(kNoSelectorMeans));
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

// "detect, token, demo": the app's commands, as they are registered.
std::string command_names(const CLI::App& app) {
  std::string names;
  for (const CLI::App* command : app.get_subcommands({})) {
    names += (names.empty() ? "" : ", ") + command->get_name();
  }
  return names;
}

// The first word of the command line when it is neither an option nor a command: the one
// usage error CLI11 words unhelpfully ("A subcommand is required").
std::string unknown_command(const CLI::App& app, std::string_view word) {
  std::string closest;
  std::size_t best = 3;  // at most two edits away, or it is not a typo
  const std::vector<const CLI::App*> commands = app.get_subcommands({});
  for (const CLI::App* command : commands) {
    const std::string& name = command->get_name();
    const std::size_t distance = edit_distance(word, name);
    if (distance < best || (name.rfind(word, 0) == 0 && !word.empty())) {
      best = std::min(distance, best);
      closest = name;
    }
  }
  std::string message = "unknown command '" + safe_excerpt(word, 60) + "'";
  if (!closest.empty()) message += "; did you mean '" + closest + "'?";
  return message + " (commands: " + command_names(app) + "; see azkms --help)";
}

// --json anywhere on the command line, whether or not it parses: a script that asked for JSON
// reads stdout only, so even a usage error found before the command is known is JSON.
bool json_requested(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "--") break;  // what follows is a value, whatever it looks like
    if (argument == "--json") return true;
  }
  return false;
}

// --json belongs to the command (detect, token): before it, it would be the app's option, which
// it is not. Said plainly rather than as "The following argument was not expected".
// --help and --version win over it: they print their text and exit 0, --json or not.
bool json_before_command(const CLI::App& app, int argc, char** argv) {
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "-h" || argument == "--help" || argument == "--version") return false;
    if (argument == "--" || is_command(app, argument)) break;
    if (argument == "--json") json = true;
  }
  return json;
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

// The command whose --help explains a usage error: the one being parsed, or the app.
std::string help_pointer(const CLI::App& app) {
  const std::vector<CLI::App*> parsed = app.get_subcommands();
  if (parsed.empty()) return "see azkms --help";
  return "see azkms " + parsed.front()->get_name() + " --help";
}

// CLI11's "--source: 1 required TEXT:SOURCE missing" says what is missing in its own terms:
// say instead what the option needs, from its own help.
std::string missing_value(const CLI::App& app, const CLI::ArgumentMismatch& error) {
  static const std::regex typed_missing(R"(^(-[^:\s]+): \d+ required \S+ missing$)");
  std::cmatch match;
  if (!std::regex_match(error.what(), match, typed_missing)) return error.what();
  const std::string name = match[1];
  if (name == "--source") return "--source needs a source name: " + std::string(kSourceNames);
  for (const CLI::App* command : app.get_subcommands()) {
    const CLI::Option* option = command->get_option_no_throw(name);
    if (option != nullptr && !option->get_description().empty()) {
      return name + " needs a value (" + option->get_description() + ")";
    }
  }
  return name + " needs a value";
}

// What CLI11 found wrong, in the words a person needs.
std::string describe(const CLI::App& app, const CLI::ParseError& error) {
  if (const auto* mismatch = dynamic_cast<const CLI::ArgumentMismatch*>(&error)) {
    return missing_value(app, *mismatch);
  }
  if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr && app.get_subcommands().empty()) {
    return "a command is required: " + command_names(app);
  }
  return error.what();
}

// A usage error, like a runtime one: with --json one JSON object on stdout (code "usage"),
// otherwise one line on stderr starting "azkms: ". Either way it ends by saying where to read
// more. Never a secret: the line passes through safe_message like every other message.
int usage_error(bool json, const std::string& message) {
  if (json) {
    print_json_error("usage", message, nullptr);
  } else {
    std::cerr << "azkms: " << safe_message(message) << "\n";
  }
  return kExitUsage;
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
  const bool json = json_requested(argc, argv);
  if (argc > 1 && argv[1][0] != '-' && !is_command(app, argv[1])) {
    return usage_error(json, unknown_command(app, argv[1]));
  }
  if (json_before_command(app, argc, argv)) {
    return usage_error(json,
                       "put --json after the command: azkms detect --json, azkms token --json "
                       "(see azkms --help)");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version print their text and exit 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    return usage_error(json, describe(app, e) + " (" + help_pointer(app) + ")");
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
