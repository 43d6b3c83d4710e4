// Cloud Shell: POST /oauth2/token with `Metadata: true` and a form body naming the resource.
// It serves only the system-assigned identity, so any selector is refused.
#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {
namespace {

class CloudShell final : public EndpointBehaviour {
 public:
  explicit CloudShell(const Options& options) : EndpointBehaviour(Endpoint::kCloudShell, options) {}

  [[nodiscard]] std::string token_path() const override { return "/oauth2/token"; }
  [[nodiscard]] bool token_by_post() const override { return true; }

  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override {
    if (!checks().metadata_header(req, res)) return std::nullopt;
    if (!is_form(req)) {
      checks().reject(res, 400, "invalid_request",
                      "The body must be application/x-www-form-urlencoded");
      return std::nullopt;
    }
    const auto form = form_params(req);
    const auto query = query_params(req);
    Grant grant;
    if (!checks().resource(form, grant.resource, res)) return std::nullopt;
    if (names_a_selector(form) || names_a_selector(query)) {
      checks().reject(res, 400, "invalid_request",
                      "Cloud Shell supports only the system-assigned identity");
      return std::nullopt;
    }
    grant.identity = default_identity();
    return grant;
  }

  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override {
    return {{"access_token", issued.token},
            {"refresh_token", ""},
            {"expires_in", issued.lifetime.count()},
            {"expires_on", std::to_string(epoch(issued.expires))},
            {"not_before", std::to_string(epoch(issued.now))},
            {"resource", grant.resource},
            {"token_type", "Bearer"}};
  }

  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override {
    return {{"MSI_ENDPOINT", token_url(base_url)}};
  }
};

}  // namespace

std::unique_ptr<EndpointBehaviour> make_cloud_shell(const Options& options) {
  return std::make_unique<CloudShell>(options);
}

}  // namespace azkms::emulator::endpoints
