// Telling "no connection was ever made" apart from other transport failures. IMDS reached by
// fallback uses it: nothing accepting a connection means there is no IMDS (a machine off
// Azure), while a connection that was made and then reset means IMDS is there and busy.
#pragma once

#include <string>
#include <string_view>

#include "azkms/error.hpp"

namespace azkms {

// Put by the libcurl client in front of the detail of an error raised before any connection
// was made (refused, unreachable, unresolvable, or the connection timeout ran out).
inline constexpr std::string_view kNoConnectionMarker = "no connection was made: ";

// A kConnection or kTimeout error carrying the marker.
inline bool is_no_connection(const Error& error) {
  return (error.code() == ErrorCode::kConnection || error.code() == ErrorCode::kTimeout) &&
         std::string_view(error.what()).find(kNoConnectionMarker) != std::string_view::npos;
}

}  // namespace azkms
