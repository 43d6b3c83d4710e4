// App Service 2017-09-01: the legacy identity endpoint (older Linux Consumption plans and
// older App Service images), selected by MSI_ENDPOINT + MSI_SECRET. Its wire is shared with
// Azure ML (see app_service_2017.hpp); expiry arrives as "MM/dd/yyyy HH:mm:ss +00:00" on Linux
// and "M/d/yyyy h:mm:ss AM +00:00" on Windows, both handled by parse_token_response().
#include "sources/app_service_2017.hpp"

#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {

MsiSecretSource::MsiSecretSource(SourceKind kind, std::string endpoint, Secret msi_secret,
                                 std::string default_client_id, SourceContext context)
    : HttpTokenSource(std::move(context)),
      kind_(kind),
      endpoint_(std::move(endpoint)),
      msi_secret_(std::move(msi_secret)),
      default_client_id_(std::move(default_client_id)) {}

HttpRequest MsiSecretSource::make_request(const TokenRequest& request) const {
  const std::string resource = resource_of(request);
  QueryParams params{{"api-version", "2017-09-01"}, {"resource", resource}};
  const std::string client_id = expected_client_id(request);
  if (!client_id.empty()) params.emplace_back("clientid", client_id);
  HttpRequest http;
  http.method = "GET";
  http.url = with_query(endpoint_, params);
  http.headers.push_back({"secret", msi_secret_.reveal(), /*sensitive=*/true});
  return http;
}

std::string MsiSecretSource::expected_client_id(const TokenRequest& request) const {
  if (request.identity.kind() == IdentitySelector::Kind::kClientId) {
    return request.identity.value();
  }
  return default_client_id_;
}

std::string MsiSecretSource::selector_note() const {
  return "API 2017-09-01 selects an identity only by client id (clientid); use the client id of "
         "the user-assigned identity";
}

std::string MsiSecretSource::status_hint(int status) const {
  switch (status) {
    case 401:
    case 403:
      return "check that MSI_SECRET is current: the platform rotates it, so read it from the "
             "environment of the running process rather than copying it";
    case 400:
      return kind_ == SourceKind::kAzureMl
                 ? "check the resource and the client id; is the identity (default: "
                   "DEFAULT_IDENTITY_CLIENT_ID) assigned to this compute?"
                 : "check the resource and the client id; is the identity assigned to this app?";
    case 404:
      return "check MSI_ENDPOINT; is a managed identity enabled for this resource?";
    default:
      return HttpTokenSource::status_hint(status);
  }
}

Candidate make_app_service_2017(const Environment& env, const SourceContext& context, Mode mode) {
  const auto endpoint = get(env, kMsiEndpoint);
  const auto secret = get(env, kMsiSecret);
  if (!endpoint || !secret) {
    if (mode == Mode::kForced) {
      throw missing_variables(SourceKind::kAppService2017, env, {kMsiEndpoint, kMsiSecret});
    }
    return {};
  }
  auto url = checked_url(SourceKind::kAppService2017, kMsiEndpoint, *endpoint);
  return {std::make_shared<MsiSecretSource>(SourceKind::kAppService2017, std::move(url),
                                            Secret(*secret), std::string(), context),
          "MSI_ENDPOINT and MSI_SECRET are set"};
}

}  // namespace azkms::sources
