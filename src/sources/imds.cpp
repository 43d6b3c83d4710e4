// IMDS: the instance metadata service of VMs, VM scale sets and AKS nodes. The fallback when
// no other hosting environment is recognised.
//
// GET {authority}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...
// header Metadata: true (without it IMDS answers 400 bad_request_102). Selectors: client_id,
// object_id, msi_res_id. Retries follow Microsoft's IMDS guidance (RetryPolicy::imds()).
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {
namespace {

constexpr std::string_view kDefaultAuthority = "http://169.254.169.254";
constexpr std::string_view kTokenPath = "/metadata/identity/oauth2/token";

class ImdsSource final : public HttpTokenSource {
 public:
  ImdsSource(std::string authority, SourceContext context)
      : HttpTokenSource(std::move(context)), authority_(std::move(authority)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kImds; }
  [[nodiscard]] std::string endpoint() const override {
    return authority_ + std::string(kTokenPath);
  }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned | kSupportsClientId | kSupportsObjectId | kSupportsResourceId;
  }
  [[nodiscard]] RetryPolicy retry_policy() const override { return RetryPolicy::imds(); }

 protected:
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
    return http;
  }

  std::string authority_;
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
  return {std::make_shared<ImdsSource>(std::move(authority), context), std::move(reason)};
}

}  // namespace azkms::sources
