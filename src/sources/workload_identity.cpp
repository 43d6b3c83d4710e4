// AKS workload identity: not a managed identity endpoint but Microsoft Entra ID's token
// endpoint, with the pod's projected service account token as a client assertion.
//
// POST {AZURE_AUTHORITY_HOST}{AZURE_TENANT_ID}/oauth2/v2.0/token, form body client_id,
// grant_type=client_credentials, client_assertion_type=...jwt-bearer, client_assertion=<the
// contents of AZURE_FEDERATED_TOKEN_FILE>, scope=<resource>/.default. The file is read again
// for every fetch because the kubelet rotates it. A client id selector replaces
// AZURE_CLIENT_ID (another app registration federated with the same service account); object
// and resource ids have no meaning here and are refused.
#include <algorithm>
#include <cctype>

#include "azkms/token_response.hpp"
#include "file_reader.hpp"
#include "redaction.hpp"
#include "sources/common.hpp"
#include "sources/registry.hpp"
#include "url.hpp"

namespace azkms::sources {
namespace {

constexpr std::string_view kDefaultAuthorityHost = "https://login.microsoftonline.com/";
constexpr std::size_t kMaxAssertionBytes = 64 * 1024;
constexpr std::string_view kAssertionField = "client_assertion=";

class WorkloadIdentitySource final : public HttpTokenSource {
 public:
  WorkloadIdentitySource(std::string endpoint, std::string client_id, std::string token_file,
                         SourceContext context)
      : HttpTokenSource(std::move(context)),
        endpoint_(std::move(endpoint)),
        client_id_(std::move(client_id)),
        token_file_(std::move(token_file)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kWorkloadIdentity; }
  [[nodiscard]] std::string endpoint() const override { return endpoint_; }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned | kSupportsClientId;
  }

 protected:
  [[nodiscard]] std::string expected_client_id(const TokenRequest& request) const override {
    if (request.identity.kind() == IdentitySelector::Kind::kClientId) {
      return request.identity.value();
    }
    return client_id_;
  }

  [[nodiscard]] std::vector<std::string> request_secrets(
      const HttpRequest& request) const override {
    auto found = HttpTokenSource::request_secrets(request);
    // The body is built above: the assertion is the value after "client_assertion=".
    const std::string_view body = request.body;
    std::size_t start = std::string_view::npos;
    if (body.starts_with(kAssertionField)) {
      start = 0;
    } else if (auto at = body.find("&" + std::string(kAssertionField)); at != body.npos) {
      start = at + 1;
    }
    if (start != std::string_view::npos) {
      start += kAssertionField.size();
      const auto end = body.find('&', start);
      auto value = body.substr(start, end == std::string_view::npos ? body.npos : end - start);
      if (!value.empty()) found.emplace_back(value);
    }
    return found;
  }

  [[nodiscard]] std::string selector_note() const override {
    return "workload identity signs in as an app registration, named by its client id "
           "(AZURE_CLIENT_ID or a client id selector)";
  }

  [[nodiscard]] std::string status_hint(int status) const override {
    if (status == 400 || status == 401) {
      return "check AZURE_CLIENT_ID and AZURE_TENANT_ID, and that the app registration has a "
             "federated credential for this service account (issuer and subject must match "
             "the token in AZURE_FEDERATED_TOKEN_FILE)";
    }
    return HttpTokenSource::status_hint(status);
  }

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override {
    const std::string scope = resource_of(request) + "/.default";
    const std::string client_id = expected_client_id(request);
    const Secret assertion = read_assertion();
    HttpRequest http;
    http.method = "POST";
    http.url = endpoint_;
    http.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
    QueryParams form{
        {"client_id", client_id},
        {"grant_type", "client_credentials"},
        {"client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
        {"client_assertion", assertion.reveal()},
        {"scope", scope}};
    // A claims challenge from the resource (Continuous Access Evaluation) goes to Entra ID,
    // which issues a token satisfying it.
    if (!request.claims.empty()) form.emplace_back("claims", request.claims);
    http.body = form_encode(form);
    return http;
  }

  // The kubelet projects the token as a symbolic link into a "..data" directory that it swaps
  // on rotation, so links are followed; what they lead to must be a regular file of at most
  // 64 KiB (a FIFO or a device there must not hang or flood the fetch).
  [[nodiscard]] Secret read_assertion() const {
    FileReadRules rules;
    rules.what = kFederatedTokenFile;
    rules.code = ErrorCode::kConfiguration;
    rules.max_bytes = kMaxAssertionBytes;
    rules.follow_links = true;
    rules.open_hint = "check that the service account token is projected into the pod";
    std::string contents;
    try {
      contents = read_regular_file(token_file_, rules);
    } catch (Error& error) {
      error.with_source(name()).with_endpoint(endpoint());
      throw;
    }
    while (!contents.empty() && std::isspace(static_cast<unsigned char>(contents.back()))) {
      contents.pop_back();
    }
    if (contents.empty()) {
      throw make_error(ErrorCode::kConfiguration,
                       "AZURE_FEDERATED_TOKEN_FILE " + token_file_ + " is empty");
    }
    return Secret(std::move(contents));
  }

  std::string endpoint_;
  std::string client_id_;
  std::string token_file_;
};

bool valid_tenant(std::string_view tenant) {
  return !tenant.empty() && std::all_of(tenant.begin(), tenant.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

}  // namespace

Candidate make_workload_identity(const Environment& env, const SourceContext& context, Mode mode) {
  const auto token_file = get(env, kFederatedTokenFile);
  const auto client_id = get(env, kAzureClientId);
  const auto tenant = get(env, kAzureTenantId);
  if (!token_file || !client_id || !tenant) {
    if (mode == Mode::kForced) {
      throw missing_variables(SourceKind::kWorkloadIdentity, env,
                              {kFederatedTokenFile, kAzureClientId, kAzureTenantId});
    }
    return {};
  }
  const auto source_name = std::string(display_name(SourceKind::kWorkloadIdentity));
  if (!valid_tenant(*tenant)) {
    throw Error(ErrorCode::kConfiguration,
                "AZURE_TENANT_ID=\"" + safe_excerpt(*tenant, 80) +
                    "\" is not a tenant id or domain (letters, digits, '-' and '.')")
        .with_source(source_name);
  }
  std::string authority(kDefaultAuthorityHost);
  if (auto host = get(env, kAzureAuthorityHost)) {
    // Microsoft Entra ID is HTTPS only; plain http is accepted for a loopback emulator.
    authority = checked_url(SourceKind::kWorkloadIdentity, kAzureAuthorityHost, *host,
                            /*https_only=*/!is_loopback_url(*host));
    if (authority.find('?') != std::string::npos) {
      throw Error(ErrorCode::kConfiguration, "AZURE_AUTHORITY_HOST must not have a query string")
          .with_source(source_name);
    }
  }
  while (!authority.empty() && authority.back() == '/') authority.pop_back();
  std::string endpoint = authority + "/" + *tenant + "/oauth2/v2.0/token";
  return {std::make_shared<WorkloadIdentitySource>(std::move(endpoint), *client_id, *token_file,
                                                   context),
          "AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID are set"};
}

}  // namespace azkms::sources
