// `azkms token`: fetch one token from the detected (or named) source. The only command that
// prints a token, because asking for it is the whole point of the command.
#include <charconv>
#include <chrono>
#include <ctime>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "azkms/detect.hpp"
#include "azkms/log.hpp"
#include "cli.hpp"
#include "redaction.hpp"

namespace azkms::cli {
namespace {

constexpr long long kLongestTimeoutMs = 600'000;  // 10 minutes

// --timeout-ms: digits only, 1 to kLongestTimeoutMs. Said in words, for "abc" as for "0".
const CLI::Validator& whole_milliseconds() {
  static const CLI::Validator validator(
      [](std::string& value) -> std::string {
        long long ms = 0;
        const char* end = value.data() + value.size();
        const auto [stop, failure] = std::from_chars(value.data(), end, ms);
        if (failure == std::errc{} && stop == end && ms >= 1 && ms <= kLongestTimeoutMs) return {};
        return "expects a whole number of milliseconds from 1 to " +
               std::to_string(kLongestTimeoutMs) + ", not '" + safe_excerpt(value, 40) + "'";
      },
      "MILLISECONDS");
  return validator;
}

struct TokenFlags {
  IdentityFlags identity;
  std::string resource{kKeyVaultResource};
  long long timeout_ms = 30'000;
  bool json = false;
  bool verbose = false;
};

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "log";
}

// "HH:MM:SS.mmm" in UTC.
std::string time_of_day() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch() %
                                                                            std::chrono::seconds{1})
                          .count();
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  const std::size_t length = std::strftime(text, sizeof(text), "%H:%M:%S", &utc);
  std::snprintf(text + length, sizeof(text) - length, ".%03d", static_cast<int>(millis));
  return text;
}

// --verbose: what the library says it does (detection, each attempt with its outcome and the
// wait before the next), one line each on stderr. The library redacts every line before the
// hook sees it.
void log_to_stderr() {
  set_log_hook([](LogLevel level, std::string_view message) {
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    std::cerr << time_of_day() << " azkms " << level_name(level) << ": " << message << "\n";
  });
}

long long epoch_seconds(SystemTime t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

int run(const TokenFlags& flags) {
  if (flags.verbose) log_to_stderr();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(flags.timeout_ms);
  auto source = make_source(ProcessEnvironment{}, flags.identity.forced_source());
  TokenRequest request{flags.resource, flags.identity.selector()};
  const AccessToken token = source->fetch(request, deadline);
  // Printed on purpose, but only on its own line: the other fields are the endpoint's text,
  // shown redacted (of the token too), printable and bounded, so that they can neither carry
  // a secret nor forge a line of this output.
  RedactionScope printed_token;
  printed_token.add(token.token.reveal());
  const std::string resource =
      safe_excerpt(token.resource.empty() ? request.resource : token.resource, 300);
  const std::string token_type = safe_excerpt(token.token_type, 100);
  if (flags.json) {
    nlohmann::json out = {{"accessToken", token.token.reveal()},
                          {"expiresOn", epoch_seconds(token.expires_on)},
                          {"tokenType", token_type},
                          {"resource", resource},
                          {"source", to_string(source->kind())}};
    std::cout << out.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  const auto remaining = std::chrono::duration_cast<std::chrono::seconds>(
      token.expires_on - std::chrono::system_clock::now());
  std::cout << "source:     " << safe_excerpt(source->name(), 100) << "\n"
            << "resource:   " << resource << "\n"
            << "type:       " << token_type << "\n"
            << "expires on: " << epoch_seconds(token.expires_on) << " (in " << remaining.count()
            << " s)\n"
            << "token:      " << token.token.reveal() << "\n";
  return 0;
}

}  // namespace

Action add_token_command(CLI::App& app) {
  auto flags = std::make_shared<TokenFlags>();
  auto* command = app.add_subcommand("token", "Fetch an access token and print it");
  command->add_option("--resource", flags->resource, "resource URI the token is for")
      ->capture_default_str()
      ->check(non_empty("for " + std::string(kKeyVaultResource)));
  flags->identity.add_to(*command);
  // Checked while parsing, before any arithmetic: 10000000000000 ms once overflowed the
  // deadline into the past. The bound is tokenTimeoutMs's in a KMS provider configuration.
  command
      ->add_option("--timeout-ms", flags->timeout_ms,
                   "deadline for the whole operation, 1 to 600000 ms")
      ->capture_default_str()
      ->check(whole_milliseconds());
  command->add_flag("--json", flags->json,
                    "print {accessToken, expiresOn, tokenType, resource, source}; on failure "
                    "{\"error\": {code, message, source, endpoint, status, attempts}}");
  command->add_flag("-v,--verbose", flags->verbose,
                    "log each step to stderr: detection, every attempt with its time, outcome "
                    "and the wait before the next (never a secret)");
  return [flags] { return run(*flags); };
}

}  // namespace azkms::cli
