// Legacy App Service (API 2017-09-01): the MSI_SECRET wire (check_msi_secret_request), with
// expires_on in the Linux date format.
#include "endpoints/app_service_2017.hpp"

#include <ctime>

namespace azkms::emulator::endpoints {

std::optional<Grant> check_msi_secret_request(const RequestChecks& checks,
                                              const httplib::Request& req, httplib::Response& res,
                                              const Identity* when_none) {
  const auto params = query_params(req);
  Grant grant;
  if (!checks.secret_header(req, "secret", checks.options().msi_secret, res) ||
      !checks.api_version(params, {"2017-09-01"}, res) ||
      !checks.resource(params, grant.resource, res)) {
    return std::nullopt;
  }
  auto identity = checks.select(params, {{"clientid", &Identity::client_id}}, res, when_none);
  if (!identity) return std::nullopt;
  grant.identity = *identity;
  return grant;
}

std::string msi_secret_credential(const httplib::Request& req) {
  return req.get_header_value("secret");
}

namespace {

// App Service 2017 on Linux: "MM/dd/yyyy HH:mm:ss +00:00".
std::string format_2017(Clock::time_point time) {
  const std::time_t seconds = Clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[64];
  const std::size_t length =
      std::strftime(buffer, sizeof(buffer), "%m/%d/%Y %H:%M:%S +00:00", &utc);
  return std::string(buffer, length);
}

class AppService2017 final : public EndpointBehaviour {
 public:
  explicit AppService2017(const Options& options)
      : EndpointBehaviour(Endpoint::kAppService2017, options) {}

  [[nodiscard]] std::string token_path() const override { return kMsiTokenPath; }

  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override {
    return check_msi_secret_request(checks(), req, res);
  }

  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override {
    return {{"access_token", issued.token},
            {"expires_on", format_2017(issued.expires)},
            {"resource", grant.resource},
            {"token_type", "Bearer"}};
  }

  [[nodiscard]] std::string request_credential(const httplib::Request& req) const override {
    return msi_secret_credential(req);
  }

  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override {
    return {{"MSI_ENDPOINT", token_url(base_url)}, {"MSI_SECRET", options().msi_secret}};
  }
};

}  // namespace

std::unique_ptr<EndpointBehaviour> make_app_service_2017(const Options& options) {
  return std::make_unique<AppService2017>(options);
}

}  // namespace azkms::emulator::endpoints
