// IMDS: the instance metadata service of VMs, VM scale sets and AKS nodes. The fallback when
// no other hosting environment is recognised.
//
// GET {authority}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...
// headers Metadata: true (without it IMDS answers 400 bad_request_102) and Accept:
// application/json. Selectors: client_id,
// object_id, msi_res_id. Retries follow Microsoft's IMDS guidance (RetryPolicy::imds()).
#include <atomic>

#include "azkms/error.hpp"
#include "http/connection_failure.hpp"
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {
namespace {

constexpr std::string_view kDefaultAuthority = "http://169.254.169.254";
constexpr std::string_view kTokenPath = "/metadata/identity/oauth2/token";

// What detection looks for before it falls back to IMDS.
constexpr std::string_view kLookedFor =
    "IDENTITY_ENDPOINT with IDENTITY_HEADER, IMDS_ENDPOINT or IDENTITY_SERVER_THUMBPRINT; "
    "MSI_ENDPOINT; AZURE_FEDERATED_TOKEN_FILE with AZURE_CLIENT_ID and AZURE_TENANT_ID; the "
    "Azure Arc agent";

// What the fallback found of the other environments' variables. A variable that belongs to
// them alone, set without the rest of its set (IDENTITY_ENDPOINT without IDENTITY_HEADER, say),
// is named: that environment is half configured, not absent. Names only, never values.
std::string other_environments(const Environment& env) {
  std::vector<std::string_view> set;
  for (const std::string_view name :
       {kIdentityEndpoint, kIdentityHeader, kIdentityServerThumbprint, kImdsEndpoint, kMsiEndpoint,
        kMsiSecret, kFederatedTokenFile}) {
    if (get(env, name)) set.push_back(name);
  }
  if (set.empty()) return "no other hosting environment's variables are set";
  return join_names(set) + (set.size() == 1 ? " is" : " are") +
         " set, but not with the variables that complete a hosting environment";
}

// How long a probe of IMDS waits for a connection, as the Azure SDKs do.
constexpr std::chrono::milliseconds kProbeConnectTimeout{1'000};

class ImdsSource final : public HttpTokenSource {
 public:
  // `probe`: IMDS was reached by fallback, not named, so there may be no IMDS at all (a
  // machine off Azure). Until IMDS has answered once, each attempt connects within a second,
  // and a connection that fails or does not come ends the fetch at once with kNoSource instead
  // of the half minute of retries the IMDS policy allows. Once IMDS has answered anything, the
  // full policy applies.
  // `environment`: what the fallback found of the other environments' variables, for the
  // error that ends a probe.
  ImdsSource(std::string authority, bool probe, std::string environment, SourceContext context)
      : HttpTokenSource(std::move(context)),
        authority_(std::move(authority)),
        probe_(probe),
        environment_(std::move(environment)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kImds; }
  [[nodiscard]] std::string endpoint() const override {
    return authority_ + std::string(kTokenPath);
  }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned | kSupportsClientId | kSupportsObjectId | kSupportsResourceId;
  }
  [[nodiscard]] RetryPolicy retry_policy() const override { return RetryPolicy::imds(); }

 protected:
  HttpResponse exchange(const HttpRequest& request, const HttpOptions& options) override {
    if (!probe_ || answered_.load(std::memory_order_acquire)) {
      return HttpTokenSource::exchange(request, options);
    }
    HttpOptions probe = options;
    probe.connect_timeout = kProbeConnectTimeout;
    try {
      HttpResponse response = HttpTokenSource::exchange(request, probe);
      answered_.store(true, std::memory_order_release);
      return response;
    } catch (const Error& error) {
      if (!is_no_connection(error)) throw;
      // The caller's budget for this attempt was shorter than the probe's second and ran out
      // first: that says nothing about whether IMDS is there.
      if (error.code() == ErrorCode::kTimeout && options.timeout < kProbeConnectTimeout) throw;
      throw make_error(ErrorCode::kNoSource, nothing_there(error));
    }
  }

  [[nodiscard]] std::string status_hint(int status) const override {
    switch (status) {
      case 400:
        return "is the identity assigned to this resource? IMDS answers 400 when the requested "
               "identity (or, with no selector, a system-assigned one) is not assigned to the VM";
      case 404:
      case 410:
        return "IMDS is updating or no managed identity is enabled on this VM; try again "
               "shortly";
      case 429:
        return "IMDS is throttling (about 5 token requests per second per VM): cache tokens "
               "instead of fetching one per operation";
      default:
        return HttpTokenSource::status_hint(status);
    }
  }

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override {
    const std::string resource = resource_of(request);
    QueryParams params{{"api-version", "2018-02-01"}, {"resource", resource}};
    if (auto selector = selector_param(request, "client_id", "object_id", "msi_res_id")) {
      params.push_back(*selector);
    }
    HttpRequest http;
    http.method = "GET";
    http.url = with_query(endpoint(), params);
    http.headers.push_back({"Metadata", "true"});
    // As the MongoDB specification's IMDS request does.
    http.headers.push_back({"Accept", "application/json"});
    return http;
  }

  // The message of the probe's end: what was looked for, what happened at IMDS, what to do.
  [[nodiscard]] std::string nothing_there(const Error& error) const {
    const std::string happened = error.code() == ErrorCode::kTimeout
                                     ? "accepted no connection within " +
                                           std::to_string(kProbeConnectTimeout.count()) + " ms"
                                     : "could not be connected to";
    return "no managed identity endpoint was found: " + environment_ + " (looked for " +
           std::string(kLookedFor) + "), and IMDS at " + authority_ + " " + happened + " (" +
           error.what() + "). " +
           (authority_ == kDefaultAuthority
                ? "Off Azure, set the variables of an identity endpoint (azkms-emulator "
                  "--print-env prints those of a local one) or give azkms a callback source; "
                  "on an Azure VM, check that a managed identity is enabled"
                : std::string(kPodIdentityAuthorityHost) +
                      " names this endpoint: is it running (a local azkms-emulator, say)?");
  }

  std::string authority_;
  bool probe_;
  std::string environment_;
  std::atomic<bool> answered_{false};
};

}  // namespace

Candidate make_imds(const Environment& env, const SourceContext& context, Mode mode) {
  std::string authority(kDefaultAuthority);
  const std::string environment = other_environments(env);
  std::string reason =
      mode == Mode::kForced ? "IMDS needs no variable" : environment + ": IMDS is the fallback";
  if (auto host = get(env, kPodIdentityAuthorityHost)) {
    authority = checked_authority(SourceKind::kImds, kPodIdentityAuthorityHost, *host);
    reason += " (authority from " + std::string(kPodIdentityAuthorityHost) + ")";
  }
  const bool probe = mode != Mode::kForced;
  return {std::make_shared<ImdsSource>(std::move(authority), probe, environment, context),
          std::move(reason)};
}

}  // namespace azkms::sources
