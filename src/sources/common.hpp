// Helpers shared by the source files: reading variables, checking URLs, building query
// strings. Internal to the library.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "azkms/environment.hpp"
#include "azkms/error.hpp"
#include "azkms/source.hpp"
#include "azkms/token.hpp"

namespace azkms::sources {

// The names of every variable detection looks at, and which of them hold secrets.
inline constexpr std::string_view kIdentityEndpoint = "IDENTITY_ENDPOINT";
inline constexpr std::string_view kIdentityHeader = "IDENTITY_HEADER";
inline constexpr std::string_view kIdentityServerThumbprint = "IDENTITY_SERVER_THUMBPRINT";
inline constexpr std::string_view kImdsEndpoint = "IMDS_ENDPOINT";
inline constexpr std::string_view kMsiEndpoint = "MSI_ENDPOINT";
inline constexpr std::string_view kMsiSecret = "MSI_SECRET";
inline constexpr std::string_view kDefaultIdentityClientId = "DEFAULT_IDENTITY_CLIENT_ID";
inline constexpr std::string_view kPodIdentityAuthorityHost = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
inline constexpr std::string_view kFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE";
inline constexpr std::string_view kAzureClientId = "AZURE_CLIENT_ID";
inline constexpr std::string_view kAzureTenantId = "AZURE_TENANT_ID";
inline constexpr std::string_view kAzureAuthorityHost = "AZURE_AUTHORITY_HOST";
inline constexpr std::string_view kArcTokenDirectory = "AZKMS_ARC_TOKEN_DIRECTORY";
// Not a source's own: the trust anchors for an https identity endpoint (SourceContext::ca_file).
inline constexpr std::string_view kSslCertFile = "SSL_CERT_FILE";
inline constexpr std::string_view kArcAgentBinary = "/opt/azcmagent/bin/himds";

using QueryParams = std::vector<std::pair<std::string_view, std::string_view>>;

[[nodiscard]] std::optional<std::string> get(const Environment& env, std::string_view name);

// "A, B and C".
[[nodiscard]] std::string join_names(const std::vector<std::string_view>& names);

// The kConfiguration error for a source named explicitly whose variables are not all set:
// says which are missing and what the source needs.
[[nodiscard]] Error missing_variables(SourceKind kind, const Environment& env,
                                      const std::vector<std::string_view>& required);

// Checks that `value` (the content of variable `name`) is an absolute http or https URL
// with a host, and returns it unchanged. `https_only`: refuse http. Throws kConfiguration.
std::string checked_url(SourceKind kind, std::string_view name, const std::string& value,
                        bool https_only = false);

// scheme://host[:port] of an authority variable (AZURE_POD_IDENTITY_AUTHORITY_HOST); a path
// other than "/" is refused, so that joining it with the fixed path never yields "//".
std::string checked_authority(SourceKind kind, std::string_view name, const std::string& value);

// `base` + "?" (or "&" when it already has a query) + name=value pairs, values encoded.
[[nodiscard]] std::string with_query(std::string base, const QueryParams& params);

// name=value pairs joined by "&", values encoded (application/x-www-form-urlencoded).
[[nodiscard]] std::string form_encode(const QueryParams& params);

// The resource to ask for: the request's, with a trailing "/.default" removed (a scope
// "https://vault.azure.net/.default" names the resource "https://vault.azure.net").
[[nodiscard]] std::string resource_of(const TokenRequest& request);

// Query parameter name for the request's selector among a source's three names (empty name:
// unsupported; the caller has already checked support). nullopt for system-assigned.
[[nodiscard]] std::optional<std::pair<std::string_view, std::string_view>> selector_param(
    const TokenRequest& request, std::string_view client_id_name, std::string_view object_id_name,
    std::string_view resource_id_name);

// MSI v1 token revocation (App Service, Service Fabric): when the request carries the hash of a
// refused token, adds xms_cc=cp1 (the client handles claims challenges) and
// token_sha256_to_refresh=<hash>, so that the platform bypasses its own token cache.
void add_revocation_params(const TokenRequest& request, QueryParams& params);

}  // namespace azkms::sources
