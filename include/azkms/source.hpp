// TokenSource: anything that can produce a fresh AccessToken. Managed identity sources (one
// file per hosting environment under src/sources/), workload identity, and user callbacks
// all implement it; the cache wraps it. A source never caches.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/clock.hpp"
#include "azkms/error.hpp"
#include "azkms/export.h"
#include "azkms/http.hpp"
#include "azkms/identity.hpp"
#include "azkms/retry.hpp"
#include "azkms/token.hpp"

namespace azkms {

enum class SourceKind : std::uint8_t {
  kImds,
  kAppService,      // App Service, Functions, Container Apps: API 2019-08-01
  kAppService2017,  // legacy MSI_ENDPOINT + MSI_SECRET, API 2017-09-01
  kAzureMl,
  kCloudShell,
  kAzureArc,
  kServiceFabric,
  kWorkloadIdentity,
  kCustom,  // a user-supplied callback
};

// Command-line name: "imds", "app-service", "app-service-2017", "azure-ml", "cloud-shell",
// "azure-arc", "service-fabric", "workload-identity", "custom".
AZKMS_EXPORT std::string_view to_string(SourceKind kind) noexcept;
// Human name: "IMDS", "App Service", "App Service 2017", "Azure ML", ...
AZKMS_EXPORT std::string_view display_name(SourceKind kind) noexcept;
AZKMS_EXPORT std::optional<SourceKind> parse_source_kind(std::string_view name) noexcept;
// Whose token a request without an identity selector gets from this source, for messages:
// "system-assigned" for the managed identity sources; "default (AZURE_CLIENT_ID)" for workload
// identity, which has no system-assigned identity and signs in as the app registration that
// AZURE_CLIENT_ID names; "default" for a callback.
AZKMS_EXPORT std::string_view default_identity(SourceKind kind) noexcept;

class AZKMS_EXPORT TokenSource {
 public:
  virtual ~TokenSource() = default;
  [[nodiscard]] virtual SourceKind kind() const = 0;
  [[nodiscard]] virtual std::string name() const { return std::string(display_name(kind())); }
  // Fetches a fresh token, never from a cache. Returns or throws azkms::Error before
  // `deadline`. Thread-safe.
  virtual AccessToken fetch(const TokenRequest& request, Deadline deadline) = 0;
};

// What an HTTP source needs from its surroundings. Defaults: libcurl, the system clock, the
// MongoDB specification's 10 s per attempt.
struct AZKMS_EXPORT SourceContext {
  std::shared_ptr<HttpClient> http;
  std::shared_ptr<Clock> clock;
  std::chrono::milliseconds attempt_timeout{10'000};
  AttemptObserver on_attempt;  // optional
  // Replaces the source's own retry policy when set (e.g. RetryPolicy::no_retries() to see
  // every first answer as it is, as the MongoDB drivers' IMDS tests expect).
  std::optional<RetryPolicy> retry_policy;
  // Extra trust anchors (a PEM file) for identity endpoints reached over https (a workload
  // identity authority), used as OpenSSL uses SSL_CERT_FILE: in place of the default bundle,
  // next to the system's certificate directory. Empty: detect() takes SSL_CERT_FILE from the
  // environment when it is set. Service Fabric's pinned certificate is checked by its
  // thumbprint whatever this says.
  std::string ca_file;

  // Fills empty members with the defaults.
  [[nodiscard]] SourceContext with_defaults() const;
};

// A source backed by a user's function: the official way to plug in another SDK. The
// function must honour the deadline; anything it throws is wrapped as ErrorCode::kCallback
// (an azkms::Error passes through unchanged).
using TokenCallback = std::function<AccessToken(const TokenRequest&, Deadline)>;
AZKMS_EXPORT std::shared_ptr<TokenSource> make_callback_source(
    TokenCallback callback, std::string name = "custom callback");

}  // namespace azkms
