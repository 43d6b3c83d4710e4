// Parsing identity endpoint responses: JSON to AccessToken, every expiry shape seen in the
// wild to one absolute time. Pure functions: no I/O, no clock reads except through `now`.
#pragma once

#include <optional>
#include <string_view>

#include "azkms/clock.hpp"
#include "azkms/token.hpp"

namespace azkms {

// Parses a token response body. `now` is the time the request was sent (the MongoDB
// specification starts the expiry clock before the request). Rules:
// - the body must be a JSON object with a non-empty string `access_token`;
// - expiry from `expires_in` (number or numeric string) counted from `now`, or else from
//   `expires_on` (epoch number or string, or a date string); neither is an error, and so is
//   either one present but unreadable. expires_in wins because it does not depend on the
//   endpoint's clock agreeing with ours;
// - `token_type`, `resource` and `client_id`, when present, must be strings;
// - `refresh_in` (number or numeric string), when present, sets refresh_on;
// - an HTML or XML body is reported as such.
// Throws ErrorCode::kMalformedResponse with a message that never includes the token.
AccessToken parse_token_response(std::string_view body, SystemTime now);

// Parses an `expires_on` value given as text: epoch seconds ("1586984735"),
// "MM/dd/yyyy HH:mm:ss +00:00", "M/d/yyyy h:mm:ss AM +00:00", RFC 3339
// ("2021-07-02T08:00:34Z", with fraction or offset), "2021-07-02 08:00:34Z", RFC 1123.
// nullopt when the text has none of these shapes.
std::optional<SystemTime> parse_expires_on(std::string_view text);

// Seconds given as a number or a numeric string ("3599"); nullopt otherwise or if negative.
std::optional<long long> parse_seconds(std::string_view text);

}  // namespace azkms
