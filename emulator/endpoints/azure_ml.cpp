// Azure Machine Learning: the API 2017-09-01 wire (check_msi_secret_request), serving
// Options::azure_ml_default_client_id (DEFAULT_IDENTITY_CLIENT_ID on the platform) when a
// request names no identity; expires_in a number, expires_on an epoch string.
#include "endpoints/app_service_2017.hpp"

namespace azkms::emulator::endpoints {
namespace {

class AzureMl final : public EndpointBehaviour {
 public:
  explicit AzureMl(const Options& options) : EndpointBehaviour(Endpoint::kAzureMl, options) {}

  [[nodiscard]] std::string token_path() const override { return kMsiTokenPath; }

  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override {
    return check_msi_secret_request(checks(), req, res, configured_default());
  }

  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override {
    return {{"access_token", issued.token},
            {"expires_in", issued.lifetime.count()},
            {"expires_on", std::to_string(epoch(issued.expires))},
            {"resource", grant.resource},
            {"token_type", "Bearer"}};
  }

  [[nodiscard]] std::string request_credential(const httplib::Request& req) const override {
    return msi_secret_credential(req);
  }

  [[nodiscard]] const Identity* default_identity() const override {
    if (const Identity* configured = configured_default()) return configured;
    return EndpointBehaviour::default_identity();
  }

  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override {
    std::map<std::string, std::string> env = {{"MSI_ENDPOINT", token_url(base_url)},
                                              {"MSI_SECRET", options().msi_secret}};
    if (!options().azure_ml_default_client_id.empty()) {
      env["DEFAULT_IDENTITY_CLIENT_ID"] = options().azure_ml_default_client_id;
    }
    return env;
  }

  // Azure ML always sets it; MSAL-based clients send it as the identity when none is named.
  void add_sdk_environment(std::map<std::string, std::string>& env) const override {
    env.try_emplace("DEFAULT_IDENTITY_CLIENT_ID", default_identity()->client_id);
  }

 private:
  // The identity Options::azure_ml_default_client_id names (the emulator checked that one
  // does); nullptr when it is empty.
  [[nodiscard]] const Identity* configured_default() const {
    return find_identity(options().identities, &Identity::client_id,
                         options().azure_ml_default_client_id);
  }
};

}  // namespace

std::unique_ptr<EndpointBehaviour> make_azure_ml(const Options& options) {
  return std::make_unique<AzureMl>(options);
}

}  // namespace azkms::emulator::endpoints
