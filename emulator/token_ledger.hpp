// TokenLedger: the tokens the emulator's identity endpoints have issued, so that its Key Vault
// can accept exactly those (401 for anything else) and tell identities apart (403 when the
// identity is not granted on a key). Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace azkms::emulator {

struct IssuedToken {
  std::string client_id;  // identity the token was issued to
  std::string resource;   // e.g. https://vault.azure.net
  std::chrono::system_clock::time_point expires_on;
};

// kJwtLike tokens start like a JSON Web Token, as Microsoft Entra ID's do; kOpaque ones do not
// (random RFC 6750 token characters, '+' and '/' included), so that a client cannot recognise
// them by their shape.
enum class TokenShape : std::uint8_t { kJwtLike, kOpaque };

class TokenLedger {
 public:
  // Creates a new random opaque token for the identity, records it and returns it.
  std::string issue(const std::string& client_id, const std::string& resource,
                    std::chrono::seconds lifetime, TokenShape shape = TokenShape::kJwtLike);
  // The record when `token` was issued here and has not expired at `now`.
  std::optional<IssuedToken> lookup(
      const std::string& token,
      std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) const;
  [[nodiscard]] std::uint64_t issued_count() const;

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, IssuedToken> tokens_;
  std::uint64_t issued_ = 0;
};

}  // namespace azkms::emulator
