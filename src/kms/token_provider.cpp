#include "kms/token_provider.hpp"

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

class Cached final : public TokenProvider {
 public:
  explicit Cached(TokenHandle handle) : handle_(std::move(handle)) {}
  AccessToken get(Deadline deadline) override { return handle_.get(deadline); }
  void invalidate() override { handle_.invalidate(); }

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
