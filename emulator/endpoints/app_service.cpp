// App Service (API 2019-08-01): GET /msi/token with X-IDENTITY-HEADER, api-version 2019-08-01
// and a resource; client_id, principal_id (alias object_id) or mi_res_id selects an identity.
// The platform may keep the tokens it issued (Options::platform_token_cache).
#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {
namespace {

constexpr const char* kSecretHeader = "X-IDENTITY-HEADER";

class AppService final : public EndpointBehaviour {
 public:
  explicit AppService(const Options& options) : EndpointBehaviour(Endpoint::kAppService, options) {}

  [[nodiscard]] std::string token_path() const override { return "/msi/token"; }
  [[nodiscard]] bool platform_keeps_tokens() const override { return true; }

  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override {
    const auto params = query_params(req);
    Grant grant;
    if (!checks().secret_header(req, kSecretHeader, options().identity_header, res) ||
        !checks().api_version(params, {"2019-08-01"}, res) ||
        !checks().resource(params, grant.resource, res)) {
      return std::nullopt;
    }
    auto identity = checks().select(params,
                                    {{"client_id", &Identity::client_id},
                                     {"principal_id", &Identity::object_id},
                                     {"object_id", &Identity::object_id},
                                     {"mi_res_id", &Identity::resource_id}},
                                    res);
    if (!identity) return std::nullopt;
    grant.identity = *identity;
    return grant;
  }

  // expires_on as an epoch string, and no expires_in.
  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override {
    return {{"access_token", issued.token},
            {"expires_on", std::to_string(epoch(issued.expires))},
            {"resource", grant.resource},
            {"token_type", "Bearer"},
            {"client_id", grant.identity->client_id}};
  }

  [[nodiscard]] std::string request_credential(const httplib::Request& req) const override {
    return req.get_header_value(kSecretHeader);
  }

  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override {
    return {{"IDENTITY_ENDPOINT", token_url(base_url)},
            {"IDENTITY_HEADER", options().identity_header}};
  }
};

}  // namespace

std::unique_ptr<EndpointBehaviour> make_app_service(const Options& options) {
  return std::make_unique<AppService>(options);
}

}  // namespace azkms::emulator::endpoints
