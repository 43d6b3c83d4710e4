// Byte encodings shared inside the library and the emulator (not part of the public API):
// hexadecimal and base64url through OpenSSL, percent-encoding through libcurl.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace azkms {

enum class HexCase { kUpper, kLower };

// Two hexadecimal digits per byte, no separator: a SHA-1 thumbprint, a random secret.
[[nodiscard]] std::string hex_encode(std::string_view bytes, HexCase letters = HexCase::kUpper);

// `bytes` random bytes from OpenSSL's generator, in lower-case hexadecimal. Throws
// std::runtime_error when the generator fails.
[[nodiscard]] std::string random_hex(std::size_t bytes);

// Base64url without padding (RFC 4648 section 5), as JSON Web Tokens and Key Vault use it.
[[nodiscard]] std::string base64url_encode(std::string_view bytes);
// Strict base64url; trailing '=' padding tolerated. nullopt for anything else.
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);

// RFC 3986 percent-encoding: every byte but the unreserved ones (letters, digits, "-._~")
// becomes %XX, with `letters` choosing the case of the hexadecimal digits (libcurl writes
// upper case; some servers echo lower case).
[[nodiscard]] std::string percent_encode(std::string_view text, HexCase letters = HexCase::kUpper);
// Every %XX (two hexadecimal digits) becomes its byte; anything else stays as it is.
[[nodiscard]] std::string percent_decode(std::string_view text);

}  // namespace azkms
