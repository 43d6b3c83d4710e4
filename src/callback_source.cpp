// A token source backed by a user's function: how another SDK's credential plugs into azkms.
#include <exception>

#include "azkms/source.hpp"
#include "azkms/token_response.hpp"
#include "redaction.hpp"

namespace azkms {
namespace {

class CallbackSource final : public TokenSource {
 public:
  CallbackSource(TokenCallback callback, std::string name)
      : callback_(std::move(callback)), name_(std::move(name)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kCustom; }
  [[nodiscard]] std::string name() const override { return name_; }

  AccessToken fetch(const TokenRequest& request, Deadline deadline) override {
    AccessToken token;
    try {
      token = callback_(request, deadline);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& error) {
      // The callback's message is the user's own; it is kept short and printable, and any
      // token-looking value in it is removed.
      throw Error(ErrorCode::kCallback,
                  "the token callback failed: " + safe_excerpt(error.what(), 300))
          .with_source(name_);
    } catch (...) {
      throw Error(ErrorCode::kCallback,
                  "the token callback threw something that is not a "
                  "std::exception")
          .with_source(name_);
    }
    if (token.token.empty()) {
      throw Error(ErrorCode::kCallback, "the token callback returned an empty token")
          .with_source(name_);
    }
    if (token.expires_on == SystemTime{}) {
      throw Error(ErrorCode::kCallback,
                  "the token callback returned a token without expires_on; set when it expires")
          .with_source(name_);
    }
    // The same check as an endpoint's token: a callback's value reaches the Authorization
    // header just the same.
    if (auto defect = token_defect(token, Clock::system()->now())) {
      throw Error(ErrorCode::kCallback, "the token callback returned an unusable token: " + *defect)
          .with_source(name_);
    }
    if (token.resource.empty()) token.resource = request.resource;
    if (token.source.empty()) token.source = name_;
    return token;
  }

 private:
  TokenCallback callback_;
  std::string name_;
};

}  // namespace

std::shared_ptr<TokenSource> make_callback_source(TokenCallback callback, std::string name) {
  if (!callback) {
    throw Error(ErrorCode::kConfiguration,
                "make_callback_source needs a callback, got an empty "
                "function");
  }
  return std::make_shared<CallbackSource>(std::move(callback), std::move(name));
}

}  // namespace azkms
