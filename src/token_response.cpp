// Token response parsing. JSON goes through nlohmann::json and dates through Howard Hinnant's
// date library; this file only decides which shapes are accepted and what an error says.
#include "token_response.hpp"

#include <date/date.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <locale>
#include <nlohmann/json.hpp>
#include <sstream>

#include "azkms/error.hpp"
#include "redaction.hpp"
#include "text.hpp"

namespace azkms {
namespace {

using std::chrono::seconds;
using Micros = date::sys_time<std::chrono::microseconds>;

// Bounds that keep every computed time inside SystemTime's range (nanoseconds: years 1678 to
// 2262) whatever an endpoint sends. No token lives ten years; no expiry lies past 2200.
constexpr long long kMaxRelativeSeconds = 10LL * 366 * 24 * 3600;
constexpr long long kMaxEpochSeconds = kLatestExpiry.count();

Error malformed(std::string message) {
  return Error(ErrorCode::kMalformedResponse, std::move(message));
}

std::optional<SystemTime> from_epoch_seconds(long long value) {
  if (value < 0 || value > kMaxEpochSeconds) return std::nullopt;
  return SystemTime{seconds{value}};
}

std::optional<SystemTime> from_micros(Micros when) {
  const auto secs = std::chrono::floor<seconds>(when).time_since_epoch().count();
  if (secs < 0 || secs > kMaxEpochSeconds) return std::nullopt;
  return std::chrono::time_point_cast<SystemTime::duration>(when);
}

// date.h has undefined behaviour on some malformed input (found by fuzz/expires_on_fuzzer):
// it negates an unset offset (INT64_MIN) when a sign is not followed by two digits
// ("+?05:30"), and converts uninitialised seconds to an integer when the seconds field does
// not start with a digit ("08:00:MT", "08:00:\xF80Z"). No accepted shape has a byte outside
// printable ASCII, a sign without two digits, or a ':' without a digit after it.
bool safe_for_date_library(std::string_view text) {
  auto digit_at = [&](std::size_t i) {
    return i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) != 0;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte >= 0x7f) return false;
    if ((text[i] == '+' || text[i] == '-') && !(digit_at(i + 1) && digit_at(i + 2))) return false;
    if (text[i] == ':' && !digit_at(i + 1)) return false;
  }
  return true;
}

// Parses all of `text` with `format`; nullopt unless every character is consumed.
template <class TimePoint>
std::optional<TimePoint> parse_whole(const std::string& text, const char* format,
                                     std::chrono::minutes* offset = nullptr) {
  if (!safe_for_date_library(text)) return std::nullopt;
  std::istringstream in(text);
  in.imbue(std::locale::classic());
  TimePoint when{};
  std::chrono::minutes parsed_offset{0};
  in >> date::parse(format, when, parsed_offset);
  if (in.fail() || in.peek() != std::char_traits<char>::eof()) return std::nullopt;
  // Real offsets stay within a day; "+99:99" is not one.
  if (std::chrono::abs(parsed_offset) > std::chrono::hours{18}) return std::nullopt;
  if (offset != nullptr) *offset = parsed_offset;
  return when;
}

// .NET writes seven fraction digits; the parser keeps what fits in microseconds.
std::string clip_fraction(std::string text) {
  const auto dot = text.find('.');
  if (dot == std::string::npos) return text;
  std::size_t end = dot + 1;
  while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
  if (end - dot - 1 > 6) text.erase(dot + 7, end - dot - 7);
  return text;
}

// "2021-07-02T08:00:34Z", "2021-07-02T08:00:34.1234567+02:00", "2021-07-02 08:00:34Z",
// "2021-07-02 08:00:34 Z", "2021-07-02T08:00:34" (no offset: UTC).
std::optional<SystemTime> parse_iso(std::string text) {
  if (text.size() < 19 || text[4] != '-' || text[7] != '-') return std::nullopt;
  if (text[10] == 't' || text[10] == ' ') text[10] = 'T';
  text = clip_fraction(std::move(text));
  if (text.back() == 'Z' || text.back() == 'z') {
    text.pop_back();
    if (!text.empty() && text.back() == ' ') text.pop_back();
    if (auto when = parse_whole<Micros>(text, "%Y-%m-%dT%H:%M:%S")) return from_micros(*when);
    return std::nullopt;
  }
  for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%Ez", "%Y-%m-%dT%H:%M:%S%z",
                             "%Y-%m-%dT%H:%M:%S %Ez"}) {
    if (auto when = parse_whole<Micros>(text, format)) return from_micros(*when);
  }
  return std::nullopt;
}

// "06/19/2019 23:42:01 +00:00" (App Service 2017 on Linux) and
// "1/16/2020 5:24:12 AM +00:00" (on Windows).
std::optional<SystemTime> parse_app_service_2017(const std::string& text) {
  if (text.find('/') == std::string::npos) return std::nullopt;
  if (auto when = parse_whole<Micros>(text, "%m/%d/%Y %H:%M:%S %Ez")) return from_micros(*when);

  // libstdc++'s time_get ignores %p, so the date library cannot tell PM from AM with it: take
  // the AM/PM word out and apply it to the 12-hour clock here.
  const auto space = text.find(' ');
  const auto second_space = space == std::string::npos ? space : text.find(' ', space + 1);
  if (second_space == std::string::npos || second_space + 3 > text.size()) return std::nullopt;
  const std::string marker = text.substr(second_space + 1, 2);
  const bool am = iequals(marker, "AM");
  const bool pm = iequals(marker, "PM");
  if (!am && !pm) return std::nullopt;
  const std::string without = text.substr(0, second_space) + text.substr(second_space + 3);
  std::chrono::minutes offset{0};
  auto local = parse_whole<date::local_time<std::chrono::microseconds>>(
      without, "%m/%d/%Y %H:%M:%S %Ez", &offset);
  if (!local) return std::nullopt;
  const auto day = std::chrono::floor<date::days>(*local);
  const auto hour = std::chrono::floor<std::chrono::hours>(*local - day).count();
  if (hour < 1 || hour > 12) return std::nullopt;
  auto adjusted = *local;
  if (am && hour == 12) adjusted -= std::chrono::hours{12};
  if (pm && hour != 12) adjusted += std::chrono::hours{12};
  return from_micros(Micros{adjusted.time_since_epoch()} - offset);
}

// "Fri, 02 Jul 2021 08:00:34 GMT".
std::optional<SystemTime> parse_rfc1123(const std::string& text) {
  if (text.find(',') == std::string::npos) return std::nullopt;
  for (const char* format :
       {"%a, %d %b %Y %H:%M:%S GMT", "%a, %d %b %Y %H:%M:%S UTC", "%a, %d %b %Y %H:%M:%S %z"}) {
    if (auto when = parse_whole<Micros>(text, format)) return from_micros(*when);
  }
  return std::nullopt;
}

std::optional<long long> seconds_of(const nlohmann::json& value) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(kMaxEpochSeconds)) return std::nullopt;
    return static_cast<long long>(v);
  }
  if (value.is_number_integer()) {
    const auto v = value.get<std::int64_t>();
    if (v < 0) return std::nullopt;
    return v;
  }
  if (value.is_number_float()) {
    const double v = value.get<double>();
    if (!std::isfinite(v) || v < 0 || v > static_cast<double>(kMaxEpochSeconds)) {
      return std::nullopt;
    }
    return static_cast<long long>(std::floor(v));
  }
  if (value.is_string()) return parse_seconds(value.get_ref<const std::string&>());
  return std::nullopt;
}

// What an unexpected value looked like, without the value when it may be long.
std::string shape_of(const nlohmann::json& value) {
  if (value.is_string()) {
    return "\"" + safe_excerpt(value.get_ref<const std::string&>(), 48) + "\"";
  }
  if (value.is_number() || value.is_boolean() || value.is_null()) {
    return safe_excerpt(value.dump(), 48);
  }
  return std::string("a JSON ") + value.type_name();
}

// A field that is missing, null, or a string of nothing but blanks: mature clients read
// `"expires_in": ""` as no expires_in, and so does azkms.
bool absent(const nlohmann::json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return true;
  return it->is_string() && trim(it->get_ref<const std::string&>(), kAsciiWhitespace).empty();
}

std::optional<SystemTime> relative_field(const nlohmann::json& object, const char* name,
                                         SystemTime now) {
  if (absent(object, name)) return std::nullopt;
  const auto it = object.find(name);
  const auto value = seconds_of(*it);
  if (!value || *value > kMaxRelativeSeconds) {
    throw malformed(std::string(name) + " is " + shape_of(*it) +
                    ", not a number of seconds (a number or a numeric string)");
  }
  return now + seconds{*value};
}

std::optional<SystemTime> absolute_field(const nlohmann::json& object, const char* name) {
  if (absent(object, name)) return std::nullopt;
  const auto it = object.find(name);
  std::optional<SystemTime> when;
  if (it->is_string()) {
    when = parse_expires_on(it->get_ref<const std::string&>());
  } else if (it->is_number()) {
    if (auto value = seconds_of(*it)) when = from_epoch_seconds(*value);
  }
  if (!when) {
    throw malformed(std::string(name) + " is " + shape_of(*it) +
                    ", which is neither epoch seconds nor a date azkms knows (RFC 3339, RFC "
                    "1123, \"MM/dd/yyyy HH:mm:ss +00:00\", \"M/d/yyyy h:mm:ss AM +00:00\")");
  }
  return when;
}

std::string optional_string(const nlohmann::json& object, const char* name) {
  const auto it = object.find(name);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) {
    throw malformed(std::string(name) + " is " + shape_of(*it) + ", not a string");
  }
  return it->get<std::string>();
}

// RFC 6750 b64token characters, apart from the trailing '='. ASCII ranges, not isalnum():
// under a Latin-1 locale isalnum() accepts bytes above 0x7f.
bool is_token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

// What a refused character is, in words (a single character is no secret, but a control
// character must not reach a terminal).
std::string describe_char(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (c == '\r' || c == '\n') return "a line break (CR or LF)";
  if (c == ' ' || c == '\t') return "a blank";
  if (byte < 0x20 || byte == 0x7f) return "a control character";
  if (byte >= 0x80) return "a byte outside ASCII";
  if (c == '=') return "an '=' before the end";
  return std::string("the character '") + c + "'";
}

// Where a non-empty value stops being an RFC 6750 b64token, or npos when it is one.
std::size_t first_bad_token_char(std::string_view value) {
  std::size_t end = value.size();
  while (end > 0 && value[end - 1] == '=') --end;
  for (std::size_t i = 0; i < end; ++i) {
    if (!is_token_char(value[i])) return i;
  }
  return std::string_view::npos;
}

std::string normalized_resource(std::string_view resource) {
  std::string text(trim(resource, kAsciiWhitespace));
  if (!text.empty() && text.back() == '/') text.pop_back();
  const auto scheme_end = text.find("://");
  if (scheme_end == std::string::npos) return text;
  const auto host_end = std::min(text.find_first_of("/?#", scheme_end + 3), text.size());
  std::transform(
      text.begin(), text.begin() + static_cast<std::ptrdiff_t>(host_end), text.begin(),
      [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
  return text;
}

std::string utc_text(SystemTime when) {
  return date::format("%FT%TZ", std::chrono::floor<seconds>(when));
}

std::string field_names(const nlohmann::json& object) {
  if (object.empty()) return "none";
  std::string names;
  std::size_t count = 0;
  for (const auto& item : object.items()) {
    if (count == 8) {
      names += ", ...";
      break;
    }
    if (count++ > 0) names += ", ";
    names += safe_excerpt(item.key(), 32);
  }
  return names;
}

}  // namespace

std::optional<std::string> token_defect(const AccessToken& token, SystemTime now) {
  const std::string_view value = token.token.reveal();
  if (value.empty()) return std::string("the access token is empty");
  if (value.find_first_not_of('=') == std::string_view::npos) {
    return std::string(
        "the access token is nothing but '='; a bearer token has letters, digits or - . _ ~ + / "
        "before any '=' (RFC 6750)");
  }
  if (const auto bad = first_bad_token_char(value); bad != std::string_view::npos) {
    return "the access token has " + describe_char(value[bad]) + " at byte " +
           std::to_string(bad + 1) + " of " + std::to_string(value.size()) +
           "; a bearer token is letters, digits and - . _ ~ + / with '=' only at the end (RFC "
           "6750), and anything else would be written into the Authorization header as it is";
  }
  if (token.expires_on <= now) {
    return "the token had already expired when it arrived: it expires at " +
           utc_text(token.expires_on) + " and this machine's clock reads " + utc_text(now) +
           "; check that this machine's clock and the endpoint's agree (clock skew is the usual "
           "cause)";
  }
  return std::nullopt;
}

bool same_resource(std::string_view a, std::string_view b) {
  return normalized_resource(a) == normalized_resource(b);
}

std::optional<long long> parse_seconds(std::string_view text) {
  text = trim(text, kAsciiWhitespace);
  if (text.empty()) return std::nullopt;
  long long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

std::optional<SystemTime> parse_expires_on(std::string_view raw) {
  const std::string_view trimmed = trim(raw, kAsciiWhitespace);
  if (trimmed.empty() || trimmed.size() > 64) return std::nullopt;
  if (std::all_of(trimmed.begin(), trimmed.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; })) {
    if (auto value = parse_seconds(trimmed)) return from_epoch_seconds(*value);
    return std::nullopt;
  }
  const std::string text(trimmed);
  if (auto when = parse_app_service_2017(text)) return when;
  if (auto when = parse_iso(text)) return when;
  if (auto when = parse_rfc1123(text)) return when;
  return std::nullopt;
}

AccessToken parse_token_response(std::string_view body, SystemTime now) {
  std::string_view content = trim(body, kAsciiWhitespace);
  // A UTF-8 byte order mark is not JSON but some servers send one.
  if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);
  if (content.empty()) {
    throw malformed("the body is empty; expected a JSON object with access_token");
  }
  if (content.front() == '<') {
    throw malformed(
        "the body is HTML or XML, not JSON: is something other than an identity endpoint (a "
        "proxy, a web server) answering on this address? Body: " +
        safe_excerpt(content, 120));
  }
  const auto json = nlohmann::json::parse(content, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    throw malformed("the body is not valid JSON: " + safe_excerpt(content, 120));
  }
  if (!json.is_object()) {
    throw malformed(std::string("the body is a JSON ") + json.type_name() +
                    ", not an object with access_token");
  }

  const auto token_it = json.find("access_token");
  if (token_it == json.end() || token_it->is_null()) {
    throw malformed("the response has no access_token (fields present: " + field_names(json) + ")");
  }
  if (!token_it->is_string()) {
    // Never print the value: whatever it is, it was meant to be the token.
    throw malformed(std::string("access_token is a JSON ") + token_it->type_name() +
                    ", not a string");
  }
  if (token_it->get_ref<const std::string&>().empty()) {
    throw malformed("access_token is an empty string");
  }

  AccessToken token;
  token.token = Secret(token_it->get<std::string>());
  if (auto type = optional_string(json, "token_type"); !type.empty()) token.token_type = type;
  token.resource = optional_string(json, "resource");
  token.client_id = optional_string(json, "client_id");

  // expires_in counts from when the request was sent, so it does not depend on the two
  // clocks agreeing; expires_on is used when it is the only one (App Service 2019 and 2017).
  // A field that is present but unreadable fails the response even when the other is fine:
  // an endpoint sending garbage is not one to trust with half a guess.
  const auto by_in = relative_field(json, "expires_in", now);
  const auto by_on = absolute_field(json, "expires_on");
  if (by_in) {
    token.expires_on = *by_in;
  } else if (by_on) {
    token.expires_on = *by_on;
  } else {
    throw malformed("the response has neither expires_in nor expires_on (fields present: " +
                    field_names(json) + ")");
  }
  token.refresh_on = relative_field(json, "refresh_in", now);
  if (auto defect = token_defect(token, now)) throw malformed(std::move(*defect));
  return token;
}

}  // namespace azkms
