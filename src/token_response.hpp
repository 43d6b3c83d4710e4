// Helpers of the token response parser (token_response.cpp) that other parts of the library
// share. Internal to the library; the parser itself is public (azkms/token_response.hpp).
#pragma once

#include <optional>
#include <string_view>

#include "azkms/token_response.hpp"

namespace azkms {

// Seconds given as a number or a numeric string ("3599"); nullopt otherwise or if negative.
std::optional<long long> parse_seconds(std::string_view text);

}  // namespace azkms
