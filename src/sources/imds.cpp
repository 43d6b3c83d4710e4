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

// How long a probe of IMDS waits for a connection, as the Azure SDKs do.
constexpr std::chrono::milliseconds kProbeConnectTimeout{1'000};

class ImdsSource final : public HttpTokenSource {
 public:
  // `probe`: IMDS was reached by fallback, not named, so there may be no IMDS at all (a
  // machine off Azure). Until IMDS has answered once, each attempt connects within a second,
  // and a connection that fails or does not come ends the fetch at once with kNoSource instead
  // of the half minute of retries the IMDS policy allows. Once IMDS has answered anything, the
  // full policy applies.
  ImdsSource(std::string authority, bool probe, SourceContext context)
      : HttpTokenSource(std::move(context)), authority_(std::move(authority)), probe_(probe) {}

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
      throw make_error(ErrorCode::kNoSource,
                       "no managed identity endpoint was found: no hosting environment's "
                       "variables are set (looked for IDENTITY_ENDPOINT with IDENTITY_HEADER, "
                       "IMDS_ENDPOINT or IDENTITY_SERVER_THUMBPRINT; MSI_ENDPOINT; "
                       "AZURE_FEDERATED_TOKEN_FILE with AZURE_CLIENT_ID and AZURE_TENANT_ID; the "
                       "Azure Arc agent), and IMDS at " +
                           authority_ + " did not accept a connection within " +
                           std::to_string(kProbeConnectTimeout.count()) + " ms (" + error.what() +
                           "). Off Azure, name a source or use a callback; on an Azure VM, check "
                           "that a managed identity is enabled");
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

  std::string authority_;
  bool probe_;
  std::atomic<bool> answered_{false};
};

}  // namespace

Candidate make_imds(const Environment& env, const SourceContext& context, Mode mode) {
  std::string authority(kDefaultAuthority);
  std::string reason = mode == Mode::kForced
                           ? "IMDS needs no variable"
                           : "no other hosting environment's variables are set: IMDS is the "
                             "fallback";
  if (auto host = get(env, kPodIdentityAuthorityHost)) {
    authority = checked_authority(SourceKind::kImds, kPodIdentityAuthorityHost, *host);
    reason += " (authority from " + std::string(kPodIdentityAuthorityHost) + ")";
  }
  const bool probe = mode != Mode::kForced;
  return {std::make_shared<ImdsSource>(std::move(authority), probe, context), std::move(reason)};
}

}  // namespace azkms::sources
