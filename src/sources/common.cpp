#include "sources/common.hpp"

#include <algorithm>

#include "azkms/http.hpp"
#include "http/curl_client.hpp"
#include "redaction.hpp"
#include "url.hpp"

namespace azkms::sources {
namespace {

// The value with anything before an '@' in its authority replaced: user:password@ is refused,
// and the refusal must not print the password, even when the value is not a URL libcurl can
// parse (no scheme, a second '@').
std::string without_user_info(std::string value) {
  const auto scheme_end = value.find("://");
  const std::size_t begin = scheme_end == std::string::npos ? 0 : scheme_end + 3;
  const std::size_t end = std::min(value.find_first_of("/?#", begin), value.size());
  const auto at = std::string_view(value).substr(begin, end - begin).rfind('@');
  if (at != std::string_view::npos) value.replace(begin, at, "[redacted]");
  return value;
}

// Endpoint variables are not secrets, but they are input: what reaches a message is short and
// printable, and never the password of a URL.
std::string shown(const std::string& value) {
  return "\"" + safe_excerpt(without_user_info(value), 120) + "\"";
}

}  // namespace

std::optional<std::string> get(const Environment& env, std::string_view name) {
  return env.get(std::string(name));
}

std::string join_names(const std::vector<std::string_view>& names) {
  std::string text;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i > 0) text += (i + 1 == names.size()) ? " and " : ", ";
    text += names[i];
  }
  return text;
}

Error missing_variables(SourceKind kind, const Environment& env,
                        const std::vector<std::string_view>& required) {
  std::vector<std::string_view> missing;
  for (auto name : required) {
    if (!get(env, name)) missing.push_back(name);
  }
  const bool one = missing.size() == 1;
  std::string message = "named as the source, but " + join_names(missing) + (one ? " is" : " are") +
                        " not set: set " + join_names(required) + " (the platform sets " +
                        (required.size() == 1 ? "it" : "them") +
                        " where this source applies), or let azkms detect the source";
  return Error(ErrorCode::kConfiguration, std::move(message))
      .with_source(std::string(display_name(kind)));
}

std::string checked_url(SourceKind kind, std::string_view name, const std::string& value,
                        bool https_only) {
  const auto parts = split_url(value);
  const bool scheme_ok =
      parts && (parts->scheme == "https" || (!https_only && parts->scheme == "http"));
  if (!parts || !scheme_ok || parts->has_credentials || parts->has_fragment) {
    throw Error(ErrorCode::kConfiguration,
                std::string(name) + "=" + shown(value) + " is not an absolute " +
                    (https_only ? "https" : "http or https") +
                    " URL without credentials or fragment: check the variable")
        .with_source(std::string(display_name(kind)));
  }
  return value;
}

std::string checked_authority(SourceKind kind, std::string_view name, const std::string& value) {
  const auto parts = split_url(value);
  const bool ok = parts && (parts->scheme == "http" || parts->scheme == "https") &&
                  !parts->has_credentials && !parts->has_fragment && !parts->query &&
                  (parts->path.empty() || parts->path == "/");
  if (!ok) {
    throw Error(ErrorCode::kConfiguration,
                std::string(name) + "=" + shown(value) +
                    " is not an authority of the form scheme://host[:port] (no path, query or "
                    "credentials): check the variable")
        .with_source(std::string(display_name(kind)));
  }
  std::string authority = parts->scheme + "://";
  // libcurl hands back IPv6 hosts with their brackets.
  authority += parts->host;
  if (parts->port) authority += ":" + *parts->port;
  return authority;
}

std::string with_query(std::string base, const QueryParams& params) {
  bool first = base.find('?') == std::string::npos;
  for (const auto& [name, value] : params) {
    base += first ? '?' : '&';
    first = false;
    base += name;
    base += '=';
    base += url_encode(value);
  }
  return base;
}

std::string form_encode(const QueryParams& params) {
  std::string body;
  for (const auto& [name, value] : params) {
    if (!body.empty()) body += '&';
    body += name;
    body += '=';
    body += url_encode(value);
  }
  return body;
}

void add_revocation_params(const TokenRequest& request, QueryParams& params) {
  if (request.token_sha256_to_refresh.empty()) return;
  params.emplace_back("xms_cc", "cp1");
  params.emplace_back("token_sha256_to_refresh", request.token_sha256_to_refresh);
}

std::string resource_of(const TokenRequest& request) {
  constexpr std::string_view kScopeSuffix = "/.default";
  std::string resource = request.resource;
  if (resource.size() > kScopeSuffix.size() &&
      std::string_view(resource).substr(resource.size() - kScopeSuffix.size()) == kScopeSuffix) {
    resource.resize(resource.size() - kScopeSuffix.size());
  }
  if (resource.empty()) {
    throw Error(ErrorCode::kConfiguration,
                "no resource given: name the service the token is for (for Key Vault, " +
                    std::string(kKeyVaultResource) + ")");
  }
  return resource;
}

std::optional<std::pair<std::string_view, std::string_view>> selector_param(
    const TokenRequest& request, std::string_view client_id_name, std::string_view object_id_name,
    std::string_view resource_id_name) {
  const auto& identity = request.identity;
  switch (identity.kind()) {
    case IdentitySelector::Kind::kSystemAssigned:
      return std::nullopt;
    case IdentitySelector::Kind::kClientId:
      return std::pair{client_id_name, std::string_view(identity.value())};
    case IdentitySelector::Kind::kObjectId:
      return std::pair{object_id_name, std::string_view(identity.value())};
    case IdentitySelector::Kind::kResourceId:
      return std::pair{resource_id_name, std::string_view(identity.value())};
  }
  return std::nullopt;
}

}  // namespace azkms::sources
