// Small text helpers shared inside the library (not part of the public API).
#pragma once

#include <algorithm>
#include <cctype>
#include <string_view>

namespace azkms {

// ASCII case-insensitive equality: HTTP header names, schemes, AM/PM markers.
inline bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) ==
           std::tolower(static_cast<unsigned char>(y));
  });
}

}  // namespace azkms
