// Service Fabric: the cluster's managed identity token service.
//
// GET $IDENTITY_ENDPOINT (HTTPS)?api-version=2019-07-01-preview&resource=..., header
// Secret: $IDENTITY_HEADER. The service's certificate is self-signed: TLS verification is
// replaced by pinning its SHA-1 thumbprint from IDENTITY_SERVER_THUMBPRINT (never simply turned
// off), and redirects are never followed (the HTTP client refuses them). The identity is fixed
// by the cluster configuration, so no selector is accepted. After a refused token the request
// carries xms_cc=cp1&token_sha256_to_refresh=<hash> (MSI v1 token revocation).
#include <algorithm>
#include <cctype>

#include "http/curl_client.hpp"
#include "redaction.hpp"
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {
namespace {

class ServiceFabricSource final : public HttpTokenSource {
 public:
  ServiceFabricSource(std::string endpoint, Secret identity_header, std::string thumbprint,
                      SourceContext context)
      : HttpTokenSource(std::move(context)),
        endpoint_(std::move(endpoint)),
        identity_header_(std::move(identity_header)),
        thumbprint_(std::move(thumbprint)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kServiceFabric; }
  [[nodiscard]] std::string endpoint() const override { return endpoint_; }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned;
  }

  [[nodiscard]] HttpOptions http_options() const override {
    HttpOptions options;
    options.pinned_sha1_thumbprint = thumbprint_;
    return options;
  }

 protected:
  [[nodiscard]] std::vector<std::string_view> secrets() const override {
    return {identity_header_.reveal()};
  }
  [[nodiscard]] std::string selector_note() const override {
    return "a Service Fabric application's identity is chosen by the cluster configuration "
           "(the application manifest), not per request";
  }
  [[nodiscard]] std::string status_hint(int status) const override {
    if (status == 401 || status == 403) {
      return "check that IDENTITY_HEADER is current: the cluster rotates it, so read it from "
             "the environment of the running service rather than copying it";
    }
    return HttpTokenSource::status_hint(status);
  }

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override {
    const std::string resource = resource_of(request);
    HttpRequest http;
    http.method = "GET";
    QueryParams params{{"api-version", "2019-07-01-preview"}, {"resource", resource}};
    add_revocation_params(request, params);
    http.url = with_query(endpoint_, params);
    http.headers.push_back({"Secret", identity_header_.reveal(), /*sensitive=*/true});
    return http;
  }

  std::string endpoint_;
  Secret identity_header_;
  std::string thumbprint_;
};

}  // namespace

Candidate make_service_fabric(const Environment& env, const SourceContext& context, Mode mode) {
  const auto endpoint = get(env, kIdentityEndpoint);
  const auto header = get(env, kIdentityHeader);
  const auto thumbprint = get(env, kIdentityServerThumbprint);
  if (!endpoint || !header || !thumbprint) {
    if (mode == Mode::kForced) {
      throw missing_variables(SourceKind::kServiceFabric, env,
                              {kIdentityEndpoint, kIdentityHeader, kIdentityServerThumbprint});
    }
    return {};
  }
  auto pinned = normalize_sha1_thumbprint(*thumbprint);
  if (!pinned) {
    throw Error(ErrorCode::kConfiguration,
                "IDENTITY_SERVER_THUMBPRINT=\"" + safe_excerpt(*thumbprint, 80) +
                    "\" is not a SHA-1 thumbprint: expected 40 hexadecimal digits (colons and "
                    "spaces are ignored)")
        .with_source(std::string(display_name(SourceKind::kServiceFabric)));
  }
  auto url = checked_url(SourceKind::kServiceFabric, kIdentityEndpoint, *endpoint,
                         /*https_only=*/true);
  return {std::make_shared<ServiceFabricSource>(std::move(url), Secret(*header), std::move(*pinned),
                                                context),
          "IDENTITY_ENDPOINT, IDENTITY_HEADER and IDENTITY_SERVER_THUMBPRINT are set"};
}

}  // namespace azkms::sources
