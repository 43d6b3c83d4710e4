// Fuzzes parse_token_response() and safe_excerpt(): any bytes an identity endpoint might send.
//
// Beyond "no crash, no sanitizer report", it checks the contract:
// - the parser either returns a token with a non-empty value that passes token_defect() (an
//   RFC 6750 token, not yet expired) or throws azkms::Error with kMalformedResponse, never
//   anything else;
// - an error message never contains the access_token value of the body (when that value is
//   long enough to be recognisable and appears nowhere else in the body);
// - safe_excerpt() stays within its limit and holds no control characters.
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "azkms/error.hpp"
#include "azkms/token_response.hpp"
#include "redaction.hpp"

namespace {

// The value of the first "access_token": "..." in the body, read naively (no escapes), so
// that the check also covers bodies that are not valid JSON (truncated, a broken field
// elsewhere).
std::string naive_token(std::string_view body) {
  constexpr std::string_view kKey = "\"access_token\"";
  auto key = body.find(kKey);
  if (key == std::string_view::npos) return {};
  auto pos = key + kKey.size();
  while (pos < body.size() && body[pos] == ' ') ++pos;
  if (pos >= body.size() || body[pos] != ':') return {};
  ++pos;
  while (pos < body.size() && body[pos] == ' ') ++pos;
  if (pos >= body.size() || body[pos] != '"') return {};
  auto end = body.find_first_of("\"\\", pos + 1);
  if (end == std::string_view::npos) end = body.size();
  return std::string(body.substr(pos + 1, end - pos - 1));
}

std::size_t count(std::string_view haystack, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = haystack.find(needle); pos != std::string_view::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "token_response_fuzzer: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const azkms::SystemTime now{std::chrono::seconds{1'700'000'000}};

  const std::string token = naive_token(body);
  // A recognisable token: long, made of token characters, present exactly once, in a body
  // naming the key once. (The redactor scans left to right, so a body that repeats the key
  // as its own value, `"access_token":"access_token":"<token>"`, keeps the token in the
  // excerpt unless the token also looks like a JWT; real tokens do. Reported, not checked.)
  std::string lower(body);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool check_leak =
      token.size() >= 12 && count(body, token) == 1 && count(lower, "access_token") == 1;
  for (char c : token) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      check_leak = false;
    }
  }

  try {
    azkms::AccessToken parsed = azkms::parse_token_response(body, now);
    if (parsed.token.empty()) fail("parsed a token with an empty value");
    if (azkms::token_defect(parsed, now)) fail("parsed a token that token_defect() refuses");
  } catch (const azkms::Error& error) {
    if (error.code() != azkms::ErrorCode::kMalformedResponse) {
      fail("parse error with a code other than malformed_response");
    }
    if (check_leak && std::string_view(error.what()).find(token) != std::string_view::npos) {
      fail("the error message contains the access_token value");
    }
  } catch (const std::exception& other) {
    std::fprintf(stderr, "unexpected exception: %s\n", other.what());
    fail("parse threw something other than azkms::Error");
  }

  for (std::size_t limit : {std::size_t{0}, std::size_t{16}, std::size_t{200}}) {
    const std::string excerpt = azkms::safe_excerpt(body, limit);
    // Leave room for an ellipsis marker of a few bytes.
    if (excerpt.size() > limit + 8) fail("safe_excerpt exceeded its limit");
    for (char c : excerpt) {
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7f) fail("safe_excerpt kept a control character");
    }
    if (check_leak && limit >= 200 && excerpt.find(token) != std::string::npos) {
      fail("safe_excerpt kept the access_token value");
    }
  }
  return 0;
}
