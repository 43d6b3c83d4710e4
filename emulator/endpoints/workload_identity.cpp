#include "endpoints/workload_identity.hpp"

#include "encoding.hpp"

namespace azkms::emulator::endpoints {
namespace {

using json = nlohmann::json;

constexpr std::string_view kJwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
constexpr std::string_view kTokenPath = "/oauth2/v2.0/token";  // after /{tenant}

}  // namespace

WorkloadIdentity::WorkloadIdentity(const Options& options, const EndpointHost& host)
    : EndpointBehaviour(Endpoint::kWorkloadIdentity, options), host_(host) {}

std::string WorkloadIdentity::token_path() const {
  return "/" + options().tenant_id + std::string(kTokenPath);
}

std::string WorkloadIdentity::route() const { return R"(/([^/]+)/oauth2/v2\.0/token)"; }

void WorkloadIdentity::prepare(const std::string& temp_dir) {
  // A service account token as AKS projects it: a JWT for api://AzureADTokenExchange. The
  // signature is random: the endpoint compares the whole string.
  const auto now = epoch(Clock::now());
  const json header = {{"alg", "RS256"}, {"kid", "azkms-emulator"}, {"typ", "JWT"}};
  const json payload = {{"aud", json::array({"api://AzureADTokenExchange"})},
                        {"iss", "https://oidc.azkms-emulator.invalid/"},
                        {"sub", "system:serviceaccount:default:azkms"},
                        {"iat", now},
                        {"nbf", now},
                        {"exp", now + 86400}};
  federated_token_ = base64url_encode(header.dump()) + "." + base64url_encode(payload.dump()) +
                     "." + base64url_encode(random_hex(64));
  federated_token_file_ = temp_dir + "/federated-token";
  write_private_file(federated_token_file_, federated_token_);
}

// What MSAL-based clients fetch before the token request: the tenant's OpenID configuration
// (/{tenant}/v2.0/.well-known/openid-configuration) and the instance discovery that leads to it
// (/common/discovery/instance). Their URLs name the server that was asked.
void WorkloadIdentity::add_routes(httplib::Server& server, ConnectionGuard& guard,
                                  bool is_authority) {
  server.Get(R"(/([^/]+)(/v2\.0)?/\.well-known/openid-configuration)",
             [this, &guard, is_authority](const httplib::Request& req, httplib::Response& res) {
               guard.request_arrived(req);
               openid_configuration(req, res, discovery_base(is_authority));
             });
  server.Get(R"(/[^/]+/discovery/instance)",
             [this, &guard, is_authority](const httplib::Request& req, httplib::Response& res) {
               guard.request_arrived(req);
               instance_discovery(req, res, discovery_base(is_authority));
             });
}

std::string WorkloadIdentity::discovery_base(bool is_authority) const {
  return is_authority ? host_.authority_url() : host_.base_url_unlocked(endpoint());
}

void WorkloadIdentity::openid_configuration(const httplib::Request& req, httplib::Response& res,
                                            const std::string& base) const {
  const std::string tenant = req.matches[1].str();
  if (tenant != options().tenant_id) {
    checks().reject(res, 400, "invalid_tenant", "AADSTS90002: Tenant '" + tenant + "' not found.");
    return;
  }
  const std::string root = base + "/" + tenant;
  const json body = {
      {"issuer", root + "/v2.0"},
      {"authorization_endpoint", root + "/oauth2/v2.0/authorize"},
      {"token_endpoint", root + "/oauth2/v2.0/token"},
      {"device_authorization_endpoint", root + "/oauth2/v2.0/devicecode"},
      {"end_session_endpoint", root + "/oauth2/v2.0/logout"},
      {"jwks_uri", root + "/discovery/v2.0/keys"},
      {"token_endpoint_auth_methods_supported",
       {"client_secret_post", "private_key_jwt", "client_secret_basic"}},
      {"response_types_supported", {"code", "id_token", "code id_token", "id_token token"}},
      {"response_modes_supported", {"query", "fragment", "form_post"}},
      {"scopes_supported", {"openid", "profile", "email", "offline_access"}},
      {"subject_types_supported", {"pairwise"}},
      {"id_token_signing_alg_values_supported", {"RS256"}},
      {"request_uri_parameter_supported", false},
      {"tenant_region_scope", "NA"},
      {"cloud_instance_name", "microsoftonline.com"},
      {"cloud_graph_host_name", "graph.windows.net"},
      {"msgraph_host", "graph.microsoft.com"}};
  checks().log("Workload identity: OpenID configuration served");
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

// Answers for this server's own authority only; anything else is an unknown instance, as
// Entra ID answers for a host that is not a Microsoft cloud.
void WorkloadIdentity::instance_discovery(const httplib::Request& req, httplib::Response& res,
                                          const std::string& base) const {
  const auto params = query_params(req);
  const std::string* version = param(params, "api-version");
  if (version == nullptr || *version != "1.1") {
    checks().reject(res, 400, "invalid_request",
                    "AADSTS900561: The api-version must be 1.1 for instance discovery.");
    return;
  }
  const std::string* authorization_endpoint = param(params, "authorization_endpoint");
  const std::string prefix = base + "/";
  if (authorization_endpoint == nullptr || authorization_endpoint->rfind(prefix, 0) != 0) {
    checks().reject(res, 400, "invalid_instance", "AADSTS50049: Unknown or invalid instance.");
    return;
  }
  const std::string tenant = authorization_endpoint->substr(
      prefix.size(), authorization_endpoint->find('/', prefix.size()) - prefix.size());
  const std::string host = base.substr(base.find("://") + 3);
  const json body = {
      {"tenant_discovery_endpoint", base + "/" + tenant + "/v2.0/.well-known/openid-configuration"},
      {"api-version", "1.1"},
      {"metadata",
       {{{"preferred_network", host}, {"preferred_cache", host}, {"aliases", {host}}}}}};
  checks().log("Workload identity: instance discovery served");
  res.status = 200;
  res.set_content(body.dump(), "application/json");
}

std::optional<Grant> WorkloadIdentity::check(const httplib::Request& req, httplib::Response& res) {
  const std::string tenant = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (tenant != options().tenant_id) {
    checks().reject(res, 400, "invalid_request", "AADSTS90002: Tenant '" + tenant + "' not found.");
    return std::nullopt;
  }
  if (!is_form(req)) {
    checks().reject(res, 400, "invalid_request",
                    "AADSTS900144: The request body must be application/x-www-form-urlencoded.");
    return std::nullopt;
  }
  const auto form = form_params(req);
  if (const std::string* claims = param(form, "claims")) {
    std::lock_guard lock(claims_mutex_);
    claims_received_.push_back(*claims);
  }
  const std::string* grant_type = param(form, "grant_type");
  if (grant_type == nullptr || *grant_type != "client_credentials") {
    checks().reject(res, 400, "unsupported_grant_type",
                    "AADSTS70003: grant_type must be client_credentials.");
    return std::nullopt;
  }
  const std::string* assertion_type = param(form, "client_assertion_type");
  if (assertion_type == nullptr || *assertion_type != kJwtBearer) {
    checks().reject(res, 400, "invalid_request",
                    "AADSTS900144: client_assertion_type must be " + std::string(kJwtBearer) + ".");
    return std::nullopt;
  }
  const std::string* client_id = param(form, "client_id");
  const Identity* identity =
      client_id == nullptr ? nullptr
                           : find_identity(options().identities, &Identity::client_id, *client_id);
  if (identity == nullptr) {
    checks().reject(res, 400, "unauthorized_client",
                    "AADSTS700016: Application with the given client_id was not found in the "
                    "directory.");
    return std::nullopt;
  }
  const std::string* assertion = param(form, "client_assertion");
  if (assertion == nullptr || *assertion != federated_token_) {
    checks().reject(res, 401, "invalid_client",
                    "AADSTS700213: No matching federated identity record found for the "
                    "presented assertion.");
    return std::nullopt;
  }
  const std::string* scope = param(form, "scope");
  constexpr std::string_view kDefault = "/.default";
  if (scope == nullptr || scope->size() <= kDefault.size() ||
      scope->compare(scope->size() - kDefault.size(), kDefault.size(), kDefault) != 0) {
    checks().reject(res, 400, "invalid_scope",
                    "AADSTS1002012: The scope must be <resource>/.default for client "
                    "credentials.");
    return std::nullopt;
  }
  return Grant{identity, scope->substr(0, scope->size() - kDefault.size())};
}

// expires_in and ext_expires_in numbers.
nlohmann::json WorkloadIdentity::token_body(const Grant& /*grant*/,
                                            const IssuedToken& issued) const {
  return {{"token_type", "Bearer"},
          {"expires_in", issued.lifetime.count()},
          {"ext_expires_in", issued.lifetime.count()},
          {"access_token", issued.token}};
}

std::string WorkloadIdentity::request_credential(const httplib::Request& req) const {
  const auto form = form_params(req);
  const std::string* assertion = param(form, "client_assertion");
  return assertion == nullptr ? std::string() : *assertion;
}

// The client id: the first user-assigned identity (workload identity has no system-assigned
// one), or the only identity there is.
std::map<std::string, std::string> WorkloadIdentity::client_environment(
    const std::string& base_url) const {
  const Identity* identity = nullptr;
  for (const auto& candidate : options().identities) {
    if (!candidate.system_assigned) {
      identity = &candidate;
      break;
    }
  }
  if (identity == nullptr) identity = &options().identities.front();
  return {{"AZURE_AUTHORITY_HOST", base_url + "/"},
          {"AZURE_CLIENT_ID", identity->client_id},
          {"AZURE_TENANT_ID", options().tenant_id},
          {"AZURE_FEDERATED_TOKEN_FILE", federated_token_file_}};
}

void WorkloadIdentity::add_sdk_environment(std::map<std::string, std::string>& env) const {
  env["AZURE_AUTHORITY_HOST"] = host_.authority_url() + "/";
}

std::vector<std::string> WorkloadIdentity::claims_received() const {
  std::lock_guard lock(claims_mutex_);
  return claims_received_;
}

}  // namespace azkms::emulator::endpoints
