// Parsing identity endpoint responses: JSON to AccessToken, every expiry shape seen in the
// wild to one absolute time. Pure functions: no I/O, no clock reads except through `now`.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "azkms/clock.hpp"
#include "azkms/export.h"
#include "azkms/token.hpp"

namespace azkms {

// Parses a token response body. `now` is the time the request was sent (the MongoDB
// specification starts the expiry clock before the request). Rules:
// - the body must be a JSON object with a non-empty string `access_token`;
// - expiry from `expires_in` (number or numeric string) counted from `now`, or else from
//   `expires_on` (epoch number or string, or a date string); neither is an error, and so is
//   either one present but unreadable. A field holding an empty string counts as absent, as
//   mature clients read it. expires_in wins because it does not depend on the endpoint's
//   clock agreeing with ours;
// - `token_type`, `resource` and `client_id`, when present, must be strings;
// - `refresh_in` (number or numeric string), when present, sets refresh_on;
// - the token must pass token_defect() at `now`: an RFC 6750 token, not already expired;
// - an HTML or XML body is reported as such.
// Throws ErrorCode::kMalformedResponse with a message that never includes the token.
AZKMS_EXPORT AccessToken parse_token_response(std::string_view body, SystemTime now);

// Parses an `expires_on` value given as text: epoch seconds ("1586984735"),
// "MM/dd/yyyy HH:mm:ss +00:00", "M/d/yyyy h:mm:ss AM +00:00", RFC 3339
// ("2021-07-02T08:00:34Z", with fraction or offset), "2021-07-02 08:00:34Z", RFC 1123.
// nullopt when the text has none of these shapes.
AZKMS_EXPORT std::optional<SystemTime> parse_expires_on(std::string_view text);

// What makes `token` unusable, or nullopt when nothing does. The one check every token
// passes before anyone uses it, whoever produced it (an endpoint's response, a callback, the
// C API):
// - the value is an RFC 6750 b64token, 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
//   "/" ) *"=": it goes verbatim into "Authorization: Bearer <token>", where a CR or LF would
//   add a header of the sender's choosing;
// - the expiry lies after `now`: a token already expired when it arrives is refused, with the
//   expiry and the local clock named (clock skew is the usual cause).
// The description never includes the token or any part of it.
AZKMS_EXPORT std::optional<std::string> token_defect(const AccessToken& token, SystemTime now);

// True when two resource URIs name the same resource: scheme and host compared without case,
// one trailing slash ignored ("HTTPS://Vault.Azure.NET/" is "https://vault.azure.net"); the
// path and anything after it compared exactly.
AZKMS_EXPORT bool same_resource(std::string_view a, std::string_view b);

}  // namespace azkms
