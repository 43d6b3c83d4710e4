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
std::string_view to_string(SourceKind kind) noexcept;
// Human name: "IMDS", "App Service", "App Service 2017", "Azure ML", ...
std::string_view display_name(SourceKind kind) noexcept;
std::optional<SourceKind> parse_source_kind(std::string_view name) noexcept;

class TokenSource {
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
struct SourceContext {
  std::shared_ptr<HttpClient> http;
  std::shared_ptr<Clock> clock;
  std::chrono::milliseconds attempt_timeout{10'000};
  AttemptObserver on_attempt;  // optional
  // Replaces the source's own retry policy when set (e.g. RetryPolicy::no_retries() to see
  // every first answer as it is, as the MongoDB drivers' IMDS tests expect).
  std::optional<RetryPolicy> retry_policy;

  // Fills empty members with the defaults.
  [[nodiscard]] SourceContext with_defaults() const;
};

// Base of every source that talks HTTP to an identity endpoint. A subclass says what its
// request looks like; this class owns the selector check, the retry loop, status handling
// and parsing, so that no source repeats them.
class HttpTokenSource : public TokenSource {
 public:
  explicit HttpTokenSource(SourceContext context);

  // Endpoint URL without query string. Contains no secret; safe to print.
  [[nodiscard]] virtual std::string endpoint() const = 0;
  [[nodiscard]] virtual std::uint8_t supported_selectors() const = 0;
  // The request for one attempt, exactly as it goes on the wire. Throws
  // kUnsupportedSelector (before any I/O) when the selector cannot be honoured.
  [[nodiscard]] virtual HttpRequest build_request(const TokenRequest& request) const = 0;
  [[nodiscard]] virtual RetryPolicy retry_policy() const;
  [[nodiscard]] virtual HttpOptions http_options() const;

  AccessToken fetch(const TokenRequest& request, Deadline deadline) override;

 protected:
  // One attempt on the wire. Azure Arc overrides it to answer the 401 challenge.
  virtual HttpResponse exchange(const HttpRequest& request, const HttpOptions& options);
  // Turns a 200 response into a token. Default: parse_token_response() with `sent_at` (when
  // the answered request was sent: the expiry clock starts there) and the identity check.
  [[nodiscard]] virtual AccessToken parse_response(const HttpResponse& response,
                                                   const TokenRequest& request,
                                                   SystemTime sent_at) const;
  // Secrets this source sends; redacted from any excerpt that reaches an error.
  [[nodiscard]] virtual std::vector<std::string_view> secrets() const { return {}; }
  // Secrets carried by one built request: by default the values of its sensitive headers.
  // A source that puts a secret in the body (workload identity's client assertion) adds it.
  [[nodiscard]] virtual std::vector<std::string> request_secrets(const HttpRequest& request) const;
  // What a person should do about a non-200 answer ("check that IDENTITY_HEADER is
  // current"); empty when there is nothing specific to say.
  [[nodiscard]] virtual std::string status_hint(int status) const;
  // Why this source supports only the selectors it does, appended to kUnsupportedSelector.
  [[nodiscard]] virtual std::string selector_note() const { return {}; }
  // The client id the response must name when it names one: the requested client id, or the
  // one a source sends by default (Azure ML's DEFAULT_IDENTITY_CLIENT_ID). Empty: no check.
  [[nodiscard]] virtual std::string expected_client_id(const TokenRequest& request) const;
  // Throws kUnsupportedSelector naming the source and what it does support.
  void check_selector(const TokenRequest& request) const;
  // Builds an Error naming this source and endpoint.
  [[nodiscard]] Error make_error(ErrorCode code, std::string message) const;

  [[nodiscard]] const SourceContext& context() const noexcept { return context_; }
  [[nodiscard]] Clock& clock() const noexcept { return *context_.clock; }

 private:
  SourceContext context_;
};

// A source backed by a user's function: the official way to plug in another SDK. The
// function must honour the deadline; anything it throws is wrapped as ErrorCode::kCallback
// (an azkms::Error passes through unchanged).
using TokenCallback = std::function<AccessToken(const TokenRequest&, Deadline)>;
std::shared_ptr<TokenSource> make_callback_source(TokenCallback callback,
                                                  std::string name = "custom callback");

}  // namespace azkms
