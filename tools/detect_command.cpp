// `azkms detect`: which hosting environment azkms sees, why, and what it supports.
#include <iostream>
#include <nlohmann/json.hpp>

#include "azkms/detect.hpp"
#include "cli.hpp"
#include "redaction.hpp"
#include "selector_names.hpp"

namespace azkms::cli {
namespace {

struct DetectFlags {
  bool json = false;
  std::string source = "auto";
};

// The reason, the endpoint and the variables' values come from the environment: shown
// redacted, printable and bounded, like any text from outside.
void print_text(const Detection& d) {
  std::cout << "source:     " << display_name(d.kind) << " (" << to_string(d.kind) << ")\n"
            << "chosen by:  " << (d.forced ? "--source" : "detection") << ": "
            << safe_excerpt(d.reason, 1000) << "\n"
            << "endpoint:   " << safe_excerpt(d.endpoint, 300) << "\n"
            << "identities: ";
  const auto names = identity_names(d.supported_selectors, d.kind);
  for (std::size_t i = 0; i < names.size(); ++i) std::cout << (i ? ", " : "") << names[i];
  std::cout << "\nvariables:" << (d.variables.empty() ? "  none set" : "") << "\n";
  for (const auto& var : d.variables) {
    std::cout << "  " << var.name << "=" << safe_excerpt(var.value, 300) << "\n";
  }
}

void print_json(const Detection& d) {
  nlohmann::json variables = nlohmann::json::array();
  for (const auto& var : d.variables) {
    variables.push_back({{"name", var.name}, {"value", safe_excerpt(var.value, 300)}});
  }
  nlohmann::json out = {{"source", to_string(d.kind)},
                        {"displayName", display_name(d.kind)},
                        {"forced", d.forced},
                        {"reason", safe_excerpt(d.reason, 1000)},
                        {"endpoint", safe_excerpt(d.endpoint, 300)},
                        {"identitySelectors", selector_names(d.supported_selectors)},
                        {"variables", variables}};
  std::cout << out.dump(2, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace)
            << "\n";
}

}  // namespace

Action add_detect_command(CLI::App& app) {
  auto flags = std::make_shared<DetectFlags>();
  auto* command = app.add_subcommand(
      "detect", "Explain which hosting environment is detected and why (secrets redacted)");
  command->add_flag("--json", flags->json, "print one JSON object (errors too)");
  add_source_option(*command, flags->source,
                    "name a source instead of detecting: " + std::string(kSourceNames));
  return [flags] {
    IdentityFlags parsed;
    parsed.source = flags->source;
    const Detection detection = detect(ProcessEnvironment{}, parsed.forced_source());
    flags->json ? print_json(detection) : print_text(detection);
    return 0;
  };
}

}  // namespace azkms::cli
