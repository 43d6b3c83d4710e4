// Azure Machine Learning compute: the API 2017-09-01 wire (MSI_ENDPOINT + MSI_SECRET) with a
// default identity named by DEFAULT_IDENTITY_CLIENT_ID.
//
// Detection: MSI_ENDPOINT + MSI_SECRET alone are also what legacy App Service sets, so Azure
// ML is recognised only when DEFAULT_IDENTITY_CLIENT_ID is set too; without it the process is
// treated as App Service 2017, which sends the same request minus the default clientid. Name
// the source ("azure-ml") to use it without DEFAULT_IDENTITY_CLIENT_ID.
//
// Identity: with no selector, clientid=$DEFAULT_IDENTITY_CLIENT_ID is sent (the compute's
// assigned identity); a client id selector replaces it. Object and resource ids are refused
// before any request: the API has no parameter for them.
#include "sources/app_service_2017.hpp"
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {

Candidate make_azure_ml(const Environment& env, const SourceContext& context, Mode mode) {
  const auto endpoint = get(env, kMsiEndpoint);
  const auto secret = get(env, kMsiSecret);
  const auto default_client_id = get(env, kDefaultIdentityClientId);
  const bool selected = endpoint && secret && (default_client_id || mode == Mode::kForced);
  if (!selected) {
    if (mode == Mode::kForced) {
      throw missing_variables(SourceKind::kAzureMl, env, {kMsiEndpoint, kMsiSecret});
    }
    return {};
  }
  auto url = checked_url(SourceKind::kAzureMl, kMsiEndpoint, *endpoint);
  std::string reason = default_client_id
                           ? "MSI_ENDPOINT, MSI_SECRET and DEFAULT_IDENTITY_CLIENT_ID are set"
                           : "MSI_ENDPOINT and MSI_SECRET are set (no DEFAULT_IDENTITY_CLIENT_ID: "
                             "no default client id is sent)";
  return {std::make_shared<MsiSecretSource>(SourceKind::kAzureMl, std::move(url), Secret(*secret),
                                            default_client_id.value_or(""), context),
          std::move(reason)};
}

}  // namespace azkms::sources
