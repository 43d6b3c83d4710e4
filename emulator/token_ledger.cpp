#include "token_ledger.hpp"

#include <openssl/rand.h>

#include <array>
#include <stdexcept>

namespace azkms::emulator {
namespace {

// kJwtLike: looks like a JWT in size and alphabet (clients must not assume a short token), but
// is opaque.
std::string random_token(TokenShape shape) {
  std::array<unsigned char, 48> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw std::runtime_error("emulator: RAND_bytes failed");
  }
  if (shape == TokenShape::kOpaque) {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string token = "Opq";
    for (unsigned char byte : bytes) token.push_back(kAlphabet[byte % 64]);
    return token;
  }
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.emulator.";
  for (unsigned char byte : bytes) token.push_back(kAlphabet[byte % 64]);
  return token;
}

}  // namespace

std::string TokenLedger::issue(const std::string& client_id, const std::string& resource,
                               std::chrono::seconds lifetime, TokenShape shape) {
  std::string token = random_token(shape);
  std::lock_guard lock(mutex_);
  tokens_[token] = IssuedToken{client_id, resource, std::chrono::system_clock::now() + lifetime};
  ++issued_;
  return token;
}

std::optional<IssuedToken> TokenLedger::lookup(const std::string& token,
                                               std::chrono::system_clock::time_point now) const {
  std::lock_guard lock(mutex_);
  auto it = tokens_.find(token);
  if (it == tokens_.end() || it->second.expires_on <= now) return std::nullopt;
  return it->second;
}

std::uint64_t TokenLedger::issued_count() const {
  std::lock_guard lock(mutex_);
  return issued_;
}

}  // namespace azkms::emulator
