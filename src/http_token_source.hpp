// HttpTokenSource: the base of every source that talks HTTP to an identity endpoint (one
// subclass per hosting environment, under src/sources/). A subclass says what its request
// looks like; this class owns the selector check, the retry loop, status handling and parsing,
// so that no source repeats them. Internal to the library: users see these sources as
// TokenSource (azkms/source.hpp) and build them with detect() or make_source().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/retry.hpp"
#include "azkms/source.hpp"

namespace azkms {

class HttpTokenSource : public TokenSource {
 public:
  explicit HttpTokenSource(SourceContext context);

  // Endpoint URL without query string. Contains no secret; safe to print.
  [[nodiscard]] virtual std::string endpoint() const = 0;
  [[nodiscard]] virtual std::uint8_t supported_selectors() const = 0;
  // The request for one attempt, exactly as it goes on the wire. Throws
  // kUnsupportedSelector (before any I/O) when the selector cannot be honoured: the one
  // selector check, so that no source repeats it.
  [[nodiscard]] HttpRequest build_request(const TokenRequest& request) const;
  [[nodiscard]] virtual RetryPolicy retry_policy() const;
  [[nodiscard]] virtual HttpOptions http_options() const;

  AccessToken fetch(const TokenRequest& request, Deadline deadline) override;

 protected:
  // One attempt on the wire. Azure Arc overrides it to answer the 401 challenge.
  virtual HttpResponse exchange(const HttpRequest& request, const HttpOptions& options);
  // Turns a 200 response into a token. Default: parse_token_response() with `sent_at` (when
  // the answered request was sent: the expiry clock starts there) and the identity check.
  [[nodiscard]] virtual AccessToken parse_response(const HttpResponse& response,
                                                   const TokenRequest& request,
                                                   SystemTime sent_at) const;
  // Secrets this source sends; redacted from any excerpt that reaches an error.
  [[nodiscard]] virtual std::vector<std::string_view> secrets() const { return {}; }
  // Secrets carried by one built request: by default the values of its sensitive headers.
  // A source that puts a secret in the body (workload identity's client assertion) adds it.
  [[nodiscard]] virtual std::vector<std::string> request_secrets(const HttpRequest& request) const;
  // What a person should do about a non-200 answer ("check that IDENTITY_HEADER is
  // current"); empty when there is nothing specific to say.
  [[nodiscard]] virtual std::string status_hint(int status) const;
  // Why this source supports only the selectors it does, appended to kUnsupportedSelector.
  [[nodiscard]] virtual std::string selector_note() const { return {}; }
  // The client id the response must name when it names one: the requested client id, or the
  // one a source sends by default (Azure ML's DEFAULT_IDENTITY_CLIENT_ID). Empty: no check.
  [[nodiscard]] virtual std::string expected_client_id(const TokenRequest& request) const;
  // Builds an Error naming this source and endpoint.
  [[nodiscard]] Error make_error(ErrorCode code, std::string message) const;

  [[nodiscard]] const SourceContext& context() const noexcept { return context_; }
  [[nodiscard]] Clock& clock() const noexcept { return *context_.clock; }

 private:
  // The request for a selector this source supports (build_request() has checked it).
  [[nodiscard]] virtual HttpRequest make_request(const TokenRequest& request) const = 0;
  // Throws kUnsupportedSelector naming the source and what it does support.
  void check_selector(const TokenRequest& request) const;

  SourceContext context_;
};

// The HTTP source behind `source`: every source detect() builds is one. For the library's own
// programs, tests and benchmarks, which look at the requests a source builds. Throws
// std::invalid_argument for any other source (a callback source).
std::shared_ptr<HttpTokenSource> as_http_source(std::shared_ptr<TokenSource> source);

}  // namespace azkms
