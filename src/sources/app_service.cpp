// App Service, Azure Functions and Container Apps: the identity endpoint of API 2019-08-01.
//
// GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...
// headers X-IDENTITY-HEADER: $IDENTITY_HEADER (an SSRF guard the platform rotates) and
// Metadata: true (for Azure Automation, which serves the same protocol). After a refused token
// the request carries xms_cc=cp1&token_sha256_to_refresh=<hash> (MSI v1 token revocation).
// Selectors: client_id, principal_id (the object id), mi_res_id.
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {
namespace {

class AppServiceSource final : public HttpTokenSource {
 public:
  AppServiceSource(std::string endpoint, Secret identity_header, SourceContext context)
      : HttpTokenSource(std::move(context)),
        endpoint_(std::move(endpoint)),
        identity_header_(std::move(identity_header)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kAppService; }
  [[nodiscard]] std::string endpoint() const override { return endpoint_; }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned | kSupportsClientId | kSupportsObjectId | kSupportsResourceId;
  }

 protected:
  [[nodiscard]] std::vector<std::string_view> secrets() const override {
    return {identity_header_.reveal()};
  }
  [[nodiscard]] std::string status_hint(int status) const override {
    switch (status) {
      case 400:
        return "check the resource and the identity selector; is the identity assigned to this "
               "app?";
      case 401:
      case 403:
        return "check that IDENTITY_HEADER is current: the platform rotates it, so read it from "
               "the environment of the running app rather than copying it";
      case 404:
        return "check IDENTITY_ENDPOINT; is a managed identity enabled for this app?";
      default:
        return HttpTokenSource::status_hint(status);
    }
  }

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override {
    const std::string resource = resource_of(request);
    QueryParams params{{"api-version", "2019-08-01"}, {"resource", resource}};
    if (auto selector = selector_param(request, "client_id", "principal_id", "mi_res_id")) {
      params.push_back(*selector);
    }
    add_revocation_params(request, params);
    HttpRequest http;
    http.method = "GET";
    http.url = with_query(endpoint_, params);
    http.headers.push_back({"X-IDENTITY-HEADER", identity_header_.reveal(), /*sensitive=*/true});
    // App Service ignores it; Azure Automation, which serves the same protocol, expects it.
    http.headers.push_back({"Metadata", "true"});
    return http;
  }

  std::string endpoint_;
  Secret identity_header_;
};

}  // namespace

Candidate make_app_service(const Environment& env, const SourceContext& context, Mode mode) {
  const auto endpoint = get(env, kIdentityEndpoint);
  const auto header = get(env, kIdentityHeader);
  if (!endpoint || !header) {
    if (mode == Mode::kForced) {
      throw missing_variables(SourceKind::kAppService, env, {kIdentityEndpoint, kIdentityHeader});
    }
    return {};
  }
  auto url = checked_url(SourceKind::kAppService, kIdentityEndpoint, *endpoint);
  return {std::make_shared<AppServiceSource>(std::move(url), Secret(*header), context),
          "IDENTITY_ENDPOINT and IDENTITY_HEADER are set"};
}

}  // namespace azkms::sources
