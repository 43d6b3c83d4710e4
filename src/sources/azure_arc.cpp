// Azure Arc-enabled servers: the local agent (himds), with its 401 challenge.
//
// GET {endpoint}?api-version=2020-06-01&resource=..., header Metadata: true. The agent answers
// 401 with `WWW-Authenticate: Basic realm=<path of a key file>`; the same request is sent
// again with `Authorization: Basic <file contents>`. See azure_arc.hpp
// for why the path is checked as it is, and why a user-assigned identity's token is accepted
// only when the response names that identity.
#include "sources/azure_arc.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "azkms/token_response.hpp"
#include "file_reader.hpp"
#include "redaction.hpp"
#include "sources/common.hpp"
#include "sources/registry.hpp"
#include "text.hpp"

namespace azkms::sources {
namespace {

constexpr std::size_t kMaxKeyBytes = 4096;
constexpr std::size_t kMaxFileName = 255;  // NAME_MAX on Linux

// A top-level string field of a JSON body; nullopt when absent or not a string.
std::optional<std::string> string_field(std::string_view body, std::string_view name) {
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  const auto it = json.find(name);
  if (it == json.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

class AzureArcSource final : public HttpTokenSource {
 public:
  AzureArcSource(std::string endpoint, std::string key_directory, SourceContext context)
      : HttpTokenSource(std::move(context)),
        endpoint_(std::move(endpoint)),
        key_directory_(std::move(key_directory)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kAzureArc; }
  [[nodiscard]] std::string endpoint() const override { return endpoint_; }
  [[nodiscard]] std::uint8_t supported_selectors() const override {
    return kSupportsSystemAssigned | kSupportsClientId | kSupportsObjectId | kSupportsResourceId;
  }

 protected:
  HttpResponse exchange(const HttpRequest& request, const HttpOptions& options) override {
    const SteadyTime started = clock().steady_now();
    HttpResponse first = HttpTokenSource::exchange(request, options);
    if (first.status != 401) return first;

    const auto challenge = first.header("WWW-Authenticate");
    if (!challenge) {
      throw make_error(ErrorCode::kArcChallenge,
                       "answered 401 without a WWW-Authenticate header; is this the Azure "
                       "Connected Machine agent?");
    }
    const std::string key_path = checked_key_path(*challenge);
    Secret key = read_key_file(key_path, started + options.timeout);
    // From here on, nothing this fetch says may quote the key, whatever the agent answers.
    redact_from_now_on(key.reveal());

    const auto spent =
        std::chrono::duration_cast<std::chrono::milliseconds>(clock().steady_now() - started);
    HttpOptions second_options = options;
    second_options.timeout = options.timeout - spent;
    if (second_options.timeout < std::chrono::milliseconds{1}) {
      throw make_error(ErrorCode::kTimeout, "no time left in this attempt to answer the challenge");
    }

    HttpRequest answer = request;
    answer.headers.push_back({"Authorization", "Basic " + key.reveal(), /*sensitive=*/true});
    HttpResponse second;
    try {
      second = HttpTokenSource::exchange(answer, second_options);
    } catch (...) {
      wipe(answer);
      throw;
    }
    wipe(answer);
    if (second.status == 401) {
      // Bounded on purpose: one public client loops forever on an agent that keeps asking.
      throw make_error(ErrorCode::kArcChallenge,
                       "answered 401 again after the challenge was answered with the key file " +
                           safe_excerpt(key_path, 200) +
                           "; the agent refused it (is the agent healthy? restart "
                           "himds)");
    }
    return second;
  }

  // An agent that does not know user-assigned identities ignores the selector and answers
  // with the system-assigned identity: accept a user-assigned token only when the response
  // names the identity that was asked for.
  [[nodiscard]] AccessToken parse_response(const HttpResponse& response,
                                           const TokenRequest& request,
                                           SystemTime sent_at) const override {
    AccessToken token = HttpTokenSource::parse_response(response, request, sent_at);
    const auto kind = request.identity.kind();
    if (kind == IdentitySelector::Kind::kSystemAssigned) return token;
    const std::string_view field = kind == IdentitySelector::Kind::kClientId   ? "client_id"
                                   : kind == IdentitySelector::Kind::kObjectId ? "object_id"
                                                                               : "msi_res_id";
    const auto echoed = string_field(response.body, field);
    if (echoed && iequals(*echoed, request.identity.value())) return token;
    throw make_error(
        ErrorCode::kIdentityMismatch,
        "asked for the user-assigned identity with " + std::string(field) + " " +
            safe_excerpt(request.identity.value(), 200) + ", but the response " +
            (echoed ? "names " + std::string(field) + " " + safe_excerpt(*echoed, 200)
                    : "does not name the identity it is for") +
            "; an Azure Connected Machine agent without user-assigned identity support answers "
            "with the system-assigned identity: update the agent, or ask for the "
            "system-assigned identity");
  }

  [[nodiscard]] std::string status_hint(int status) const override {
    if (status == 400) {
      return "check the resource and the identity selector; is the server connected to Azure "
             "Arc, with the identity asked for (a user-assigned one: assigned to this server)?";
    }
    if (status == 404)
      return "check IDENTITY_ENDPOINT; is the Azure Connected Machine agent "
             "running?";
    return HttpTokenSource::status_hint(status);
  }

 private:
  [[nodiscard]] HttpRequest make_request(const TokenRequest& request) const override {
    const std::string resource = resource_of(request);
    HttpRequest http;
    http.method = "GET";
    QueryParams params{{"api-version", "2020-06-01"}, {"resource", resource}};
    if (auto selector = selector_param(request, "client_id", "object_id", "msi_res_id")) {
      params.push_back(*selector);
    }
    http.url = with_query(endpoint_, params);
    http.headers.push_back({"Metadata", "true"});
    return http;
  }

  static void wipe(HttpRequest& request) {
    for (auto& header : request.headers) {
      if (header.sensitive && !header.value.empty()) {
        OPENSSL_cleanse(header.value.data(), header.value.size());
      }
    }
  }

  // Validates the realm before anything is read: returns key_directory_/<base name>.
  [[nodiscard]] std::string checked_key_path(const std::string& challenge) const {
    const std::string shown = safe_excerpt(challenge, 160);
    const auto equals = challenge.find('=');
    if (equals == std::string::npos || challenge.find('=', equals + 1) != std::string::npos) {
      throw make_error(ErrorCode::kArcChallenge,
                       "answered 401 with WWW-Authenticate \"" + shown +
                           "\", which is not of the form \"Basic realm=<path>\"");
    }
    const auto scheme = trim(std::string_view(challenge).substr(0, equals));
    auto realm = trim(std::string_view(challenge).substr(equals + 1));
    if (realm.size() >= 2 && realm.front() == '"' && realm.back() == '"') {
      realm = realm.substr(1, realm.size() - 2);
    }
    if (!iequals(scheme, "Basic realm") || realm.empty()) {
      throw make_error(ErrorCode::kArcChallenge,
                       "answered 401 with WWW-Authenticate \"" + shown +
                           "\", which is not of the form \"Basic realm=<path>\"");
    }
    const std::filesystem::path path{std::string(realm)};
    const std::string name = path.filename().string();
    const bool in_directory = path.is_absolute() && path.parent_path() == key_directory_;
    // No file name is longer than NAME_MAX: refusing longer ones also keeps every message that
    // names the file short.
    const bool named_key = name.size() > 4 && name.size() <= kMaxFileName &&
                           name.ends_with(".key") && name.find('\0') == std::string::npos;
    if (!in_directory || !named_key) {
      throw make_error(ErrorCode::kArcChallenge, "refused the challenge's key file \"" +
                                                     safe_excerpt(realm, 160) +
                                                     "\": it must be a *.key file directly in " +
                                                     key_directory_ + " (the file was not read)");
    }
    return (std::filesystem::path(key_directory_) / name).string();
  }

  // Reads the key file within the attempt's time. The path came from the network: a link is
  // never followed, and what was opened must be a regular file of at most 4096 bytes (the file
  // may be swapped for a FIFO or a link between any check and the open).
  [[nodiscard]] Secret read_key_file(const std::string& path, Deadline deadline) const {
    FileReadRules rules;
    rules.what = "the challenge's key file";
    rules.code = ErrorCode::kArcChallenge;
    rules.max_bytes = kMaxKeyBytes;
    rules.follow_links = false;
    rules.open_hint = "reading it needs root or membership in the himds group";
    rules.deadline = deadline;
    rules.clock = &clock();
    Secret key(read_regular_file(path, rules));
    if (key.empty()) {
      throw make_error(ErrorCode::kArcChallenge,
                       "refused the challenge's key file " + path + ": it is empty");
    }
    return key;
  }

  std::string endpoint_;
  std::string key_directory_;
};

std::string checked_directory(const std::string& directory, std::string_view origin) {
  std::filesystem::path path(directory);
  if (!path.is_absolute()) {
    throw Error(ErrorCode::kConfiguration, std::string(origin) + " \"" +
                                               safe_excerpt(directory, 160) +
                                               "\" is not an absolute directory path")
        .with_source(std::string(display_name(SourceKind::kAzureArc)));
  }
  // "/var/opt/azcmagent/tokens/" and "/var/opt/azcmagent/tokens" name the same directory.
  std::string normal = path.lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  return normal;
}

}  // namespace

Candidate make_azure_arc(const Environment& env, const SourceContext& context, Mode mode) {
  const auto identity_endpoint = get(env, kIdentityEndpoint);
  const auto imds_endpoint = get(env, kImdsEndpoint);
  const bool header_set = get(env, kIdentityHeader).has_value();
  const bool agent_installed = env.file_exists(std::string(kArcAgentBinary));

  std::string reason;
  if (identity_endpoint && imds_endpoint && !header_set) {
    reason = "IDENTITY_ENDPOINT and IMDS_ENDPOINT are set without IDENTITY_HEADER";
  } else if (agent_installed) {
    reason =
        "the Azure Connected Machine agent is installed (" + std::string(kArcAgentBinary) + ")";
  } else if (mode == Mode::kForced && identity_endpoint) {
    reason = "IDENTITY_ENDPOINT is set";
  } else if (mode == Mode::kForced) {
    throw Error(ErrorCode::kConfiguration,
                "named as the source, but neither IDENTITY_ENDPOINT and "
                "IMDS_ENDPOINT are set nor is the Azure Connected Machine agent installed (" +
                    std::string(kArcAgentBinary) +
                    "): install and connect the agent, or set IDENTITY_ENDPOINT and "
                    "IMDS_ENDPOINT")
        .with_source(std::string(display_name(SourceKind::kAzureArc)));
  } else {
    return {};
  }

  ArcOptions options;
  if (identity_endpoint) options.endpoint = *identity_endpoint;
  if (auto directory = get(env, kArcTokenDirectory)) {
    options.key_directory = *directory;
    reason += "; key files expected in " + std::string(kArcTokenDirectory) + "=" +
              safe_excerpt(*directory, 160);
  }
  return {make_azure_arc_source(std::move(options), context), std::move(reason)};
}

}  // namespace azkms::sources

namespace azkms {

std::shared_ptr<HttpTokenSource> make_azure_arc_source(ArcOptions options, SourceContext context) {
  const std::string origin = "the Azure Arc key directory";
  auto endpoint =
      sources::checked_url(SourceKind::kAzureArc, "IDENTITY_ENDPOINT", options.endpoint);
  auto directory = sources::checked_directory(options.key_directory, origin);
  return std::make_shared<sources::AzureArcSource>(std::move(endpoint), std::move(directory),
                                                   std::move(context));
}

}  // namespace azkms
