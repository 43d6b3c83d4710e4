// The API 2017-09-01 wire, shared by legacy App Service (app_service_2017.cpp) and Azure
// Machine Learning (azure_ml.cpp): the two differ only in detection and the default identity.
#pragma once

#include <string>

#include "azkms/secret.hpp"
#include "http_token_source.hpp"

namespace azkms::sources {

// GET $MSI_ENDPOINT?api-version=2017-09-01&resource=...[&clientid=...], header
// `secret: $MSI_SECRET`. Only `clientid` selects an identity: this API has no object or
// resource id parameter, and sending `client_id` is silently ignored (the wrong identity comes
// back), so anything but a client id is refused before a request is sent.
class MsiSecretSource final : public HttpTokenSource {
 public:
  // `default_client_id`: sent as clientid when the caller asks for the default identity
  // (Azure ML's DEFAULT_IDENTITY_CLIENT_ID); empty for App Service.
  MsiSecretSource(SourceKind kind, std::string endpoint, Secret msi_secret,
                  std::string default_client_id, SourceContext context);

  [[nodiscard]] SourceKind kind() const override { return kind_; }
  [[nodiscard]] std::string endpoint() const override { return endpoint_; }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned | kSupportsClientId;
  }

 protected:
  [[nodiscard]] std::vector<std::string_view> secrets() const override {
    return {msi_secret_.reveal()};
  }
  [[nodiscard]] std::string status_hint(int status) const override;
  [[nodiscard]] std::string selector_note() const override;
  [[nodiscard]] std::string expected_client_id(const TokenRequest& request) const override;

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override;

  SourceKind kind_;
  std::string endpoint_;
  Secret msi_secret_;
  std::string default_client_id_;
};

}  // namespace azkms::sources
