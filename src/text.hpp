// Small text helpers shared inside the library and the emulator (not part of the public API).
#pragma once

#include <string_view>

namespace azkms {

// What trim() removes by default: the blanks HTTP allows around a header value or a
// challenge parameter (RFC 9110 "OWS").
inline constexpr std::string_view kBlanks = " \t";
// Every ASCII white-space character (what isspace() accepts in the C locale, whatever the
// process's locale is).
inline constexpr std::string_view kAsciiWhitespace = " \t\n\v\f\r";

// ASCII case-insensitive equality: HTTP header names, schemes, AM/PM markers.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

// `text` without the characters of `strip` at either end.
[[nodiscard]] std::string_view trim(std::string_view text,
                                    std::string_view strip = kBlanks) noexcept;

}  // namespace azkms
