// SHA-256 through OpenSSL, for the places that identify a token without keeping it: the MSI
// token revocation protocol (token_sha256_to_refresh) and attributing a refused token to the
// named provider it was handed to.
#pragma once

#include <string>
#include <string_view>

namespace azkms {

// The 32-byte digest, as raw bytes.
std::string sha256(std::string_view data);
// The digest as 64 lowercase hex digits.
std::string sha256_hex(std::string_view data);

}  // namespace azkms
