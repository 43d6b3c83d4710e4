// Cloud Shell: MSI_ENDPOINT alone (no MSI_SECRET).
//
// POST $MSI_ENDPOINT, header Metadata: true, body resource=<encoded> as
// application/x-www-form-urlencoded. Only the signed-in user's own identity is available, so
// every selector is refused before a request is sent.
#include "sources/common.hpp"
#include "sources/registry.hpp"

namespace azkms::sources {
namespace {

class CloudShellSource final : public HttpTokenSource {
 public:
  CloudShellSource(std::string endpoint, SourceContext context)
      : HttpTokenSource(std::move(context)), endpoint_(std::move(endpoint)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kCloudShell; }
  [[nodiscard]] std::string endpoint() const override { return endpoint_; }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned;
  }

 protected:
  [[nodiscard]] std::string selector_note() const override {
    return "Cloud Shell issues tokens only for the signed-in user; user-assigned identities "
           "are not available there";
  }

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override {
    HttpRequest http;
    http.method = "POST";
    http.url = endpoint_;
    http.headers.push_back({"Metadata", "true"});
    http.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
    http.body = form_encode({{"resource", resource_of(request)}});
    return http;
  }

  std::string endpoint_;
};

}  // namespace

Candidate make_cloud_shell(const Environment& env, const SourceContext& context, Mode mode) {
  const auto endpoint = get(env, kMsiEndpoint);
  if (!endpoint) {
    if (mode == Mode::kForced)
      throw missing_variables(SourceKind::kCloudShell, env, {kMsiEndpoint});
    return {};
  }
  auto url = checked_url(SourceKind::kCloudShell, kMsiEndpoint, *endpoint);
  std::string reason = get(env, kMsiSecret) ? "MSI_ENDPOINT is set" : "MSI_ENDPOINT is set alone";
  return {std::make_shared<CloudShellSource>(std::move(url), context), std::move(reason)};
}

}  // namespace azkms::sources
