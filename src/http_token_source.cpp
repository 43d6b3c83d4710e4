// HttpTokenSource: what every identity-endpoint source shares, so that no source repeats it.
// A source says what its request looks like; this file checks the selector, runs the retry
// loop, turns a non-200 answer into an Error a person can act on, parses the body and checks
// that the token is for the identity that was asked for.
#include "http_token_source.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "log.hpp"
#include "redaction.hpp"
#include "retry.hpp"
#include "selector_names.hpp"
#include "sources/common.hpp"
#include "text.hpp"
#include "token_response.hpp"

namespace azkms {
namespace {

// "system-assigned, client id": no selector named as whose token it gets from `source`.
std::string supported_list(std::uint8_t set, SourceKind source) {
  std::string text;
  for (const auto& name : identity_names(set, source)) text += (text.empty() ? "" : ", ") + name;
  return text.empty() ? std::string("none") : text;
}

// The fields of an OAuth error body that an operator needs to open a support case, by name:
// error (or error.code), error_description, error_codes, timestamp, trace_id, correlation_id.
// Read by name so that none is lost to the excerpt's length; each is redacted and bounded
// like any text from an endpoint. Empty when the body is not such a JSON object.
std::string oauth_error_fields(std::string_view body) {
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return {};
  std::string fields;
  auto add = [&fields](std::string_view name, const nlohmann::json& value, std::size_t limit) {
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_number() || (value.is_array() && value.size() <= 16)) {
      text = value.dump();
    } else {
      return;
    }
    if (!fields.empty()) fields += ", ";
    fields += std::string(name) + " " + safe_excerpt(text, limit);
  };
  if (auto error = json.find("error"); error != json.end()) {
    if (error->is_object()) {
      if (auto code = error->find("code"); code != error->end()) add("error", *code, 64);
      if (auto message = error->find("message"); message != error->end()) {
        add("message", *message, 300);
      }
    } else {
      add("error", *error, 64);
    }
  }
  constexpr std::pair<std::string_view, std::size_t> kFields[] = {
      {"error_description", 300}, {"error_codes", 100},   {"timestamp", 40},
      {"trace_id", 40},           {"correlation_id", 40},
  };
  for (const auto& [name, limit] : kFields) {
    if (auto value = json.find(name); value != json.end()) add(name, *value, limit);
  }
  return fields;
}

// Text fields of a token are what the endpoint said: an endpoint echoing a secret in one
// (token_type, resource, client_id) does not get it printed by whoever shows the token.
void redact_fields(AccessToken& token) {
  token.token_type = redacted(token.token_type);
  token.resource = redacted(token.resource);
  token.client_id = redacted(token.client_id);
}

}  // namespace

SourceContext SourceContext::with_defaults() const {
  SourceContext filled = *this;
  if (!filled.http) filled.http = default_http_client();
  if (!filled.clock) filled.clock = Clock::system();
  if (filled.attempt_timeout <= std::chrono::milliseconds{0}) {
    filled.attempt_timeout = std::chrono::milliseconds{10'000};
  }
  return filled;
}

HttpTokenSource::HttpTokenSource(SourceContext context) : context_(context.with_defaults()) {}

RetryPolicy HttpTokenSource::retry_policy() const { return RetryPolicy::identity_endpoint(); }

HttpOptions HttpTokenSource::http_options() const {
  HttpOptions options;
  options.ca_file = context_.ca_file;
  return options;
}

HttpResponse HttpTokenSource::exchange(const HttpRequest& request, const HttpOptions& options) {
  return context_.http->send(request, options);
}

std::vector<std::string> HttpTokenSource::request_secrets(const HttpRequest& request) const {
  std::vector<std::string> found;
  for (const auto& header : request.headers) {
    if (header.sensitive && !header.value.empty()) found.push_back(header.value);
  }
  return found;
}

std::string HttpTokenSource::status_hint(int status) const {
  switch (status) {
    case 400:
      return "check the resource and the identity selector; is the identity assigned to this "
             "resource?";
    case 401:
    case 403:
      return "the endpoint refused the request's credentials";
    case 404:
      return "check the endpoint URL; is a managed identity enabled for this resource?";
    case 408:
    case 504:
      return "the identity endpoint timed out; try again later";
    case 429:
      return "the identity endpoint is throttling: cache tokens instead of fetching one per "
             "operation, and try again later";
    default:
      if (status >= 500) return "the identity endpoint failed; try again later";
      if (status >= 300 && status < 400) return "identity endpoints never redirect";
      return {};
  }
}

std::string HttpTokenSource::expected_client_id(const TokenRequest& request) const {
  if (request.identity.kind() == IdentitySelector::Kind::kClientId) {
    return request.identity.value();
  }
  return {};
}

void HttpTokenSource::check_selector(const TokenRequest& request) const {
  const auto kind = request.identity.kind();  // the selector's, not the source's
  if (kind != IdentitySelector::Kind::kSystemAssigned && request.identity.value().empty()) {
    throw make_error(ErrorCode::kConfiguration,
                     "an empty " + std::string(to_string(kind)) +
                         " was given: name the user-assigned identity, or give no selector "
                         "for the " +
                         std::string(default_identity(this->kind())) + " identity");
  }
  if (supports(supported_selectors(), kind)) return;
  std::string message =
      "cannot select a managed identity by " + std::string(to_string(kind)) +
      "; this source supports: " + supported_list(supported_selectors(), this->kind());
  if (auto note = selector_note(); !note.empty()) message += " (" + note + ")";
  throw make_error(ErrorCode::kUnsupportedSelector, std::move(message));
}

HttpRequest HttpTokenSource::build_request(const TokenRequest& request) const {
  check_selector(request);
  return make_request(request);
}

Error HttpTokenSource::make_error(ErrorCode code, std::string message) const {
  Error error(code, std::move(message));
  error.with_source(name()).with_endpoint(endpoint());
  return error;
}

AccessToken HttpTokenSource::parse_response(const HttpResponse& response,
                                            const TokenRequest& request, SystemTime sent_at) const {
  AccessToken token = parse_token_response(response.body, sent_at);
  // A response naming another resource than the one asked for (a proxy rewriting the query,
  // an endpoint ignoring it) is for another audience: Key Vault would refuse it, or worse,
  // another service would accept it.
  const std::string asked = sources::resource_of(request);
  if (!token.resource.empty() && !same_resource(asked, token.resource)) {
    throw make_error(ErrorCode::kIdentityMismatch,
                     "asked for a token for " + safe_excerpt(asked, 128) +
                         " but the response is for " + safe_excerpt(token.resource, 128) +
                         "; check that nothing between azkms and the endpoint (a proxy) rewrites "
                         "the request, and that the resource is spelled as the service expects");
  }
  // What was sent, whatever form the caller or the endpoint used (a scope
  // "https://vault.azure.net/.default" is sent, and reported, as "https://vault.azure.net").
  token.resource = asked;
  const std::string expected = expected_client_id(request);
  if (!expected.empty() && !token.client_id.empty() && !iequals(expected, token.client_id)) {
    throw make_error(ErrorCode::kIdentityMismatch,
                     "asked for the identity with client id " + expected +
                         " but the token is for client id " + safe_excerpt(token.client_id, 64) +
                         "; check that this identity is assigned to the resource (the endpoint "
                         "may fall back to another identity)");
  }
  return token;
}

AccessToken HttpTokenSource::fetch(const TokenRequest& request, Deadline deadline) {
  // Every message made while this fetch runs (errors from any layer, log lines, what the
  // attempt observer sees) is redacted of the secrets it works with, which join the scope as
  // they become known: those the source holds and sends, then the Arc key, then the token.
  RedactionScope secrets_in_use;
  for (auto secret : secrets()) secrets_in_use.add(secret);
  const HttpRequest http_request = build_request(request);
  for (const auto& secret : request_secrets(http_request)) secrets_in_use.add(secret);
  const HttpOptions base_options = http_options();
  const RetryPolicy policy = context_.retry_policy.value_or(retry_policy());

  log(LogLevel::kDebug, name() + ": asking " + safe_excerpt(endpoint(), 300) + " for " +
                            safe_excerpt(request.resource, 120) + " (" +
                            std::string(to_string(request.identity.kind())) + ")");
  SystemTime sent_at = clock().now();
  int attempts = 0;
  HttpResponse response;
  try {
    response = run_with_retries(
        policy, clock(), deadline, context_.attempt_timeout,
        [&](std::chrono::milliseconds budget) {
          HttpOptions options = base_options;
          options.timeout = budget;
          sent_at = clock().now();
          return exchange(http_request, options);
        },
        &attempts, context_.on_attempt);
  } catch (Error& error) {
    if (error.source().empty()) error.with_source(name());
    if (error.endpoint().empty()) error.with_endpoint(endpoint());
    if (error.attempts() == 0) error.with_attempts(attempts);
    throw;
  }

  // Known before anything is said about the body: whatever the parser (or anything after it)
  // quotes cannot show the token, or any credential the body carries, wherever it was echoed.
  redact_credentials_of(response.body);
  if (response.status != 200) {
    std::string message = "answered HTTP " + std::to_string(response.status);
    if (auto fields = oauth_error_fields(response.body); !fields.empty()) {
      message += " (" + fields + ")";
    } else {
      const std::string excerpt = safe_excerpt(response.body);
      message += excerpt.empty() ? std::string(" with an empty body") : ": " + excerpt;
    }
    if (auto hint = status_hint(response.status); !hint.empty()) message += "; " + hint;
    Error error = make_error(ErrorCode::kHttpStatus, std::move(message));
    error.with_http_status(response.status).with_attempts(attempts);
    if (auto retry_after = response.header("Retry-After")) {
      if (auto seconds = parse_seconds(*retry_after)) {
        error.with_retry_after(static_cast<int>(std::min<long long>(*seconds, 86'400)));
      }
    }
    throw error;
  }

  AccessToken token;
  try {
    token = parse_response(response, request, sent_at);
  } catch (Error& error) {
    if (error.source().empty()) error.with_source(name()).with_endpoint(endpoint());
    error.with_http_status(response.status).with_attempts(attempts);
    throw;
  }
  token.source = name();
  redact_fields(token);
  log(LogLevel::kDebug, name() + ": token for " + safe_excerpt(token.resource, 120) + " after " +
                            std::to_string(attempts) + " attempt(s)");
  return token;
}

std::shared_ptr<HttpTokenSource> as_http_source(std::shared_ptr<TokenSource> source) {
  auto http = std::dynamic_pointer_cast<HttpTokenSource>(std::move(source));
  if (!http) throw std::invalid_argument("not a source that talks HTTP to an identity endpoint");
  return http;
}

}  // namespace azkms
