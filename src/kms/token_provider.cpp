#include "kms/token_provider.hpp"

#include <mutex>
#include <optional>

namespace azkms::kms {
namespace {

class Uncached final : public TokenProvider {
 public:
  Uncached(std::shared_ptr<TokenSource> source, TokenRequest request)
      : source_(std::move(source)), request_(std::move(request)) {}
  AccessToken get(Deadline deadline) override { return source_->fetch(request_, deadline); }
  void invalidate() override {}

 private:
  std::shared_ptr<TokenSource> source_;
  TokenRequest request_;
};

// Interim cache until the shared TokenCache is wired in: reuse while more than one minute
// remains (the client-side encryption specification's rule), one fetch at a time.
class Cached final : public TokenProvider {
 public:
  Cached(std::shared_ptr<TokenSource> source, TokenRequest request, std::shared_ptr<Clock> clock)
      : source_(std::move(source)), request_(std::move(request)), clock_(std::move(clock)) {}

  AccessToken get(Deadline deadline) override {
    std::lock_guard lock(mutex_);
    if (token_ && clock_->now() + std::chrono::minutes(1) < token_->expires_on) return *token_;
    token_ = source_->fetch(request_, deadline);
    return *token_;
  }
  void invalidate() override {
    std::lock_guard lock(mutex_);
    token_.reset();
  }

 private:
  std::shared_ptr<TokenSource> source_;
  TokenRequest request_;
  std::shared_ptr<Clock> clock_;
  std::mutex mutex_;
  std::optional<AccessToken> token_;
};

}  // namespace

std::shared_ptr<TokenProvider> make_token_provider(std::shared_ptr<TokenSource> source,
                                                   TokenRequest request, bool cache,
                                                   std::shared_ptr<Clock> clock) {
  if (!cache) return std::make_shared<Uncached>(std::move(source), std::move(request));
  if (!clock) clock = Clock::system();
  return std::make_shared<Cached>(std::move(source), std::move(request), std::move(clock));
}

}  // namespace azkms::kms
