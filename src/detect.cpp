// Detection: walks the ordered list of source factories in src/sources/registry.cpp.
#include "azkms/detect.hpp"

#include <array>

#include "log.hpp"
#include "redaction.hpp"
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms {
namespace {

struct WatchedVariable {
  std::string_view name;
  bool secret;
};

// Every variable that any source reads, in the order `azkms detect` shows them.
constexpr std::array<WatchedVariable, 14> kWatched{{
    {sources::kIdentityEndpoint, false},
    {sources::kIdentityHeader, true},
    {sources::kIdentityServerThumbprint, false},
    {sources::kImdsEndpoint, false},
    {sources::kMsiEndpoint, false},
    {sources::kMsiSecret, true},
    {sources::kDefaultIdentityClientId, false},
    {sources::kPodIdentityAuthorityHost, false},
    {sources::kFederatedTokenFile, false},
    {sources::kAzureClientId, false},
    {sources::kAzureTenantId, false},
    {sources::kAzureAuthorityHost, false},
    {sources::kArcTokenDirectory, false},
    {sources::kSslCertFile, false},
}};

std::vector<DetectedVariable> seen_variables(const Environment& env) {
  std::vector<DetectedVariable> seen;
  for (const auto& watched : kWatched) {
    auto value = sources::get(env, watched.name);
    if (!value) continue;
    seen.push_back({std::string(watched.name),
                    watched.secret ? std::string("[redacted]") : safe_excerpt(*value, 200)});
  }
  if (env.file_exists(std::string(sources::kArcAgentBinary))) {
    seen.push_back({std::string(sources::kArcAgentBinary), "(file exists)"});
  }
  return seen;
}

}  // namespace

Detection detect(const Environment& environment, std::optional<SourceKind> force,
                 SourceContext context) {
  Detection detection;
  detection.variables = seen_variables(environment);
  // As OpenSSL-based clients do (curl's tool, Go's, Python's): the CA bundle named by
  // SSL_CERT_FILE. libcurl itself ignores it, because it always names its own bundle.
  if (context.ca_file.empty()) {
    auto ca_file = sources::get(environment, sources::kSslCertFile);
    if (ca_file && !ca_file->empty()) context.ca_file = *ca_file;
  }
  sources::Candidate chosen;
  if (force) {
    const auto* registration = sources::find_registration(*force);
    if (registration == nullptr) {
      throw Error(ErrorCode::kConfiguration,
                  "\"" + std::string(to_string(*force)) +
                      "\" is not a hosting environment that can be detected or named; a custom "
                      "source is built with make_callback_source()");
    }
    chosen = registration->create(environment, context, sources::Mode::kForced);
    detection.forced = true;
    detection.reason = "named explicitly; " + chosen.reason;
  } else {
    for (const auto& registration : sources::registrations()) {
      chosen = registration.create(environment, context, sources::Mode::kDetect);
      if (chosen.source) break;
    }
    detection.reason = chosen.reason;
  }
  if (!chosen.source) {
    // Unreachable while IMDS is the fallback; kept so that removing it cannot go unnoticed.
    throw Error(ErrorCode::kNoSource, "no hosting environment detected; name a source");
  }
  detection.kind = chosen.source->kind();
  detection.endpoint = chosen.source->endpoint();
  detection.supported_selectors = chosen.source->supported_selectors();
  detection.source = std::move(chosen.source);
  log(LogLevel::kInfo, "identity source: " + std::string(display_name(detection.kind)) + " (" +
                           detection.reason + ") at " + detection.endpoint);
  return detection;
}

std::shared_ptr<TokenSource> make_source(const Environment& environment,
                                         std::optional<SourceKind> force, SourceContext context) {
  return detect(environment, force, std::move(context)).source;
}

}  // namespace azkms
