// The Key Vault exchange as libmongocrypt sees it: raw HTTP/1.1 bytes both ways. CryptSession
// reads libmongocrypt's request into an HttpRequest (sent with the project's HttpClient) and
// hands back a response rebuilt from what libcurl parsed. Internal to the library; in its own
// unit so that the fuzzer can reach it (fuzz/kms_exchange_fuzzer.cpp).
#pragma once

#include <string>
#include <string_view>

#include "azkms/http.hpp"

namespace azkms {

// libmongocrypt's request bytes as an HttpRequest to https://<endpoint><target>. Host,
// Content-Length and Connection are left to libcurl, which derives them from the URL and body
// (and keeps the connection for reuse); Authorization is marked sensitive. Throws kKms for
// bytes that are not such a request: no header end, no request line, a target that is not a
// path (it would change the host the URL names), a malformed header line, or a control
// character in the request line or a header (it would end up on the wire as another header).
HttpRequest parse_kms_request(std::string_view bytes, const std::string& endpoint);

// The response as libmongocrypt's HTTP parser expects it: status line, Content-Type,
// Content-Length and the body.
std::string kms_response_bytes(const HttpResponse& response);

// The Key Vault error code of an error body ({"error": {"code": "Forbidden", ...}}), stable
// and short (at most 64 characters, control characters escaped); empty when there is none.
std::string key_vault_error_code(const std::string& body);

// The claims challenge of a 401 (`WWW-Authenticate: Bearer ..., claims="<base64 JSON>"`, as
// Key Vault sends under Continuous Access Evaluation): the decoded JSON object, at most 8 KiB;
// empty when there is none or it is not base64 of a JSON object.
std::string claims_challenge(const HttpResponse& response);

}  // namespace azkms
