#include "kms/token_provider.hpp"

#include <mutex>

namespace azkms::kms {
namespace {

class Uncached final : public TokenProvider {
 public:
  Uncached(std::shared_ptr<TokenSource> source, TokenRequest request)
      : source_(std::move(source)), request_(std::move(request)) {}
  AccessToken get(Deadline deadline) override {
    TokenRequest request = request_;
    {
      std::lock_guard lock(mutex_);
      request.claims = pending_claims_;
    }
    AccessToken token = source_->fetch(request, deadline);
    std::lock_guard lock(mutex_);
    if (pending_claims_ == request.claims) pending_claims_.clear();
    return token;
  }
  // Every get() fetches, so there is no token to drop; a claims challenge goes with the next.
  void invalidate(std::string_view claims) override {
    std::lock_guard lock(mutex_);
    pending_claims_ = claims;
  }

 private:
  std::shared_ptr<TokenSource> source_;
  TokenRequest request_;
  std::mutex mutex_;
  std::string pending_claims_;
};

class Cached final : public TokenProvider {
 public:
  explicit Cached(TokenHandle handle) : handle_(std::move(handle)) {}
  AccessToken get(Deadline deadline) override { return handle_.get(deadline); }
  void invalidate(std::string_view claims) override { handle_.invalidate(claims); }

 private:
  TokenHandle handle_;
};

}  // namespace

std::shared_ptr<TokenProvider> make_token_provider(std::shared_ptr<TokenSource> source,
                                                   TokenRequest request,
                                                   const std::shared_ptr<TokenCache>& cache) {
  if (!cache) return std::make_shared<Uncached>(std::move(source), std::move(request));
  return std::make_shared<Cached>(cache->handle(std::move(source), std::move(request)));
}

}  // namespace azkms::kms
