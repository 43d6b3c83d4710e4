// Service Fabric: GET https://.../metadata/identity/oauth2/token over TLS with a self-signed
// certificate, header `Secret` (IDENTITY_HEADER), api-version 2019-07-01-preview and a
// resource. The cluster configuration selects the identity, so any selector is refused. The
// platform may keep the tokens it issued (Options::platform_token_cache).
#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {
namespace {

constexpr const char* kSecretHeader = "Secret";

class ServiceFabric final : public EndpointBehaviour {
 public:
  ServiceFabric(const Options& options, const EndpointHost& host)
      : EndpointBehaviour(Endpoint::kServiceFabric, options), host_(host) {}

  [[nodiscard]] std::string token_path() const override {
    return "/metadata/identity/oauth2/token";
  }
  [[nodiscard]] bool serves_self_signed_https() const override { return true; }
  [[nodiscard]] bool platform_keeps_tokens() const override { return true; }

  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override {
    const auto params = query_params(req);
    Grant grant;
    if (!checks().secret_header(req, kSecretHeader, options().identity_header, res) ||
        !checks().api_version(params, {"2019-07-01-preview"}, res) ||
        !checks().resource(params, grant.resource, res)) {
      return std::nullopt;
    }
    if (names_a_selector(params)) {
      checks().reject(
          res, 400, "invalid_request",
          "Service Fabric selects the identity by cluster configuration, not per request");
      return std::nullopt;
    }
    grant.identity = default_identity();
    return grant;
  }

  // expires_on a number.
  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override {
    return {{"token_type", "Bearer"},
            {"access_token", issued.token},
            {"expires_on", epoch(issued.expires)},
            {"resource", grant.resource}};
  }

  [[nodiscard]] std::string request_credential(const httplib::Request& req) const override {
    return req.get_header_value(kSecretHeader);
  }

  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override {
    return {{"IDENTITY_ENDPOINT", token_url(base_url)},
            {"IDENTITY_HEADER", options().identity_header},
            {"IDENTITY_SERVER_THUMBPRINT", host_.service_fabric_thumbprint_unlocked()},
            {"AZKMS_SERVICE_FABRIC_CERT_FILE", host_.service_fabric_certificate_file_unlocked()}};
  }

 private:
  const EndpointHost& host_;
};

}  // namespace

std::unique_ptr<EndpointBehaviour> make_service_fabric(const Options& options,
                                                       const EndpointHost& host) {
  return std::make_unique<ServiceFabric>(options, host);
}

}  // namespace azkms::emulator::endpoints
