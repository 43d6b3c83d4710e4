#include "text.hpp"

#include <algorithm>

namespace azkms {
namespace {

// Not std::tolower: its answer depends on the process's locale.
char ascii_lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

std::string_view trim(std::string_view text, std::string_view strip) noexcept {
  const auto first = text.find_first_not_of(strip);
  if (first == std::string_view::npos) return text.substr(text.size());
  const auto last = text.find_last_not_of(strip);
  return text.substr(first, last - first + 1);
}

}  // namespace azkms
