// Test guard: tests that run a credential may talk to loopback only. A source whose endpoint is
// not loopback (169.254.169.254, login.microsoftonline.com, ...) is refused before it can send,
// and the HTTP client wrapper refuses any request that is not for a loopback host, so a
// mistake in a test's environment fails the test instead of reaching the network.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/source.hpp"
#include "http_token_source.hpp"
#include "url.hpp"

namespace azkms::testing {

// True when `url` is an absolute URL whose host is loopback (the library's check, url.hpp).
inline bool is_loopback_url(const std::string& url) { return azkms::is_loopback_url(url); }

// Refuses (throws, and fails the test) unless the source's endpoint is loopback.
inline std::shared_ptr<HttpTokenSource> require_loopback(
    const std::shared_ptr<TokenSource>& detected) {
  if (!detected) throw std::runtime_error("no source");
  auto source = as_http_source(detected);
  if (!is_loopback_url(source->endpoint())) {
    ADD_FAILURE() << "refusing to run " << source->name() << " against " << source->endpoint()
                  << ": tests may only reach loopback addresses";
    throw std::runtime_error("non-loopback identity endpoint refused: " + source->endpoint());
  }
  return source;
}

// An HttpClient that forwards to `inner` only requests for loopback hosts.
class LoopbackOnlyHttpClient final : public HttpClient {
 public:
  explicit LoopbackOnlyHttpClient(std::shared_ptr<HttpClient> inner) : inner_(std::move(inner)) {}

  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    if (!is_loopback_url(request.url)) {
      ADD_FAILURE() << "a test tried to reach a non-loopback address: " << request.method << " "
                    << request.url;
      throw Error(ErrorCode::kConnection, "refused by the test: not a loopback address");
    }
    return inner_->send(request, options);
  }

 private:
  std::shared_ptr<HttpClient> inner_;
};

}  // namespace azkms::testing
