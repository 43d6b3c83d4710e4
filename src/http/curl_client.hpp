// Helpers of the libcurl client (curl_client.cpp) that the identity sources share. Internal to
// the library.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace azkms {

// "AB:cd 01..." -> "ABCD01..." (40 upper-case hex digits, ':' and spaces dropped), or nullopt
// when the text is not a SHA-1 thumbprint. The form IDENTITY_SERVER_THUMBPRINT is compared in.
std::optional<std::string> normalize_sha1_thumbprint(std::string_view text);

// Percent-encodes a query component (through libcurl).
std::string url_encode(std::string_view value);

}  // namespace azkms
