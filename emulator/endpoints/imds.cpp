// IMDS: GET /metadata/identity/oauth2/token with `Metadata: true`, api-version 2018-02-01 and
// a resource; client_id, object_id or msi_res_id selects a user-assigned identity.
#include "endpoints/imds.hpp"

namespace azkms::emulator::endpoints {

std::optional<const Identity*> select_imds_identity(const RequestChecks& checks,
                                                    const httplib::Params& params,
                                                    httplib::Response& res) {
  return checks.select(params,
                       {{"client_id", &Identity::client_id},
                        {"object_id", &Identity::object_id},
                        {"msi_res_id", &Identity::resource_id}},
                       res);
}

nlohmann::json imds_token_body(const Grant& grant, const IssuedToken& issued) {
  const std::string lifetime = std::to_string(issued.lifetime.count());
  return {{"access_token", issued.token}, {"client_id", grant.identity->client_id},
          {"expires_in", lifetime},       {"expires_on", std::to_string(epoch(issued.expires))},
          {"ext_expires_in", lifetime},   {"not_before", std::to_string(epoch(issued.now))},
          {"resource", grant.resource},   {"token_type", "Bearer"}};
}

namespace {

class Imds final : public EndpointBehaviour {
 public:
  explicit Imds(const Options& options) : EndpointBehaviour(Endpoint::kImds, options) {}

  [[nodiscard]] std::string token_path() const override { return std::string(kImdsTokenPath); }
  // Also with a trailing slash: @azure/identity appends one when
  // AZURE_POD_IDENTITY_AUTHORITY_HOST is set, and the service answers it.
  [[nodiscard]] std::string route() const override { return token_path() + "/?"; }

  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override {
    // IMDS refuses anything that went through a proxy (an SSRF guard).
    if (req.has_header("X-Forwarded-For")) {
      checks().reject(res, 400, "invalid_request", "Request contained X-Forwarded-For header");
      return std::nullopt;
    }
    const auto params = query_params(req);
    Grant grant;
    if (!checks().metadata_header(req, res) || !checks().api_version(params, {"2018-02-01"}, res) ||
        !checks().resource(params, grant.resource, res)) {
      return std::nullopt;
    }
    auto identity = select_imds_identity(checks(), params, res);
    if (!identity) return std::nullopt;
    grant.identity = *identity;
    return grant;
  }

  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override {
    return imds_token_body(grant, issued);
  }

  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override {
    return {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", base_url}};
  }
};

}  // namespace

std::unique_ptr<EndpointBehaviour> make_imds(const Options& options) {
  return std::make_unique<Imds>(options);
}

}  // namespace azkms::emulator::endpoints
