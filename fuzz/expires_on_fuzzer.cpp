// Fuzzes parse_expires_on() and parse_seconds(): the expiry shapes identity endpoints send
// (epoch seconds, App Service 2017 dates, RFC 3339, RFC 1123) and everything near them.
//
// Checks beyond "no crash, no sanitizer report":
// - neither function throws;
// - parse_seconds() never yields a negative number;
// - a plain run of up to 15 decimal digits is read exactly by parse_seconds(); up to 9 digits
//   parse_expires_on() reads it as epoch seconds, and for longer runs it either reads it
//   exactly or refuses it (no silent overflow of the time point);
// - parse_expires_on() is deterministic (same text, same answer).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string_view>

#include "token_response.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "expires_on_fuzzer: %s\n", what);
  std::abort();
}

bool plain_digits(std::string_view text) {
  if (text.empty() || text.size() > 15) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto seconds = azkms::parse_seconds(text);
    if (seconds && *seconds < 0) fail("parse_seconds returned a negative number");

    const auto expiry = azkms::parse_expires_on(text);
    const auto again = azkms::parse_expires_on(text);
    if (expiry != again) fail("parse_expires_on is not deterministic");

    if (plain_digits(text)) {
      long long expected = 0;
      for (char c : text) expected = expected * 10 + (c - '0');
      if (!seconds || *seconds != expected) fail("parse_seconds misread plain digits");
      if (!expiry) {
        if (text.size() <= 9) fail("parse_expires_on refused epoch seconds");
        return 0;
      }
      const auto epoch =
          std::chrono::duration_cast<std::chrono::seconds>(expiry->time_since_epoch()).count();
      if (epoch != expected) fail("parse_expires_on misread epoch seconds");
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "exception: %s\n", error.what());
    fail("a parser threw");
  }
  return 0;
}
