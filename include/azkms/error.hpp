// Error: the one exception type azkms throws. It carries a code a program can branch on and a
// message a person can act on (what was tried, what came back, what to do next). Messages
// never contain secrets: the constructor (and every with_*) passes the message through the
// library's redaction (known secrets and credentials removed, control characters replaced,
// length bounded), whichever layer wrote it.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include "azkms/export.h"

namespace azkms {

// The values are those of the C API's azkms_error_code_t (azkms.h), and as stable: a value is
// never reused or renumbered; a new code takes the next value, in both enums and in the table
// that pairs them (src/kms/c_api.cpp, checked at compile time).
enum class ErrorCode {
  kConfiguration = 1,        // bad option, environment variable or config file
  kNoSource = 2,             // no hosting environment detected and none named
  kUnsupportedSelector = 3,  // the source cannot honour the identity selector (checked before I/O)
  kTimeout = 4,              // the caller's deadline or the per-attempt timeout ran out
  kConnection = 5,           // refused, reset, DNS, or any transport failure other than TLS
  kTls = 6,                  // certificate verification or pinning failed
  kRedirect = 7,          // an identity endpoint answered with a redirect, which is never followed
  kHttpStatus = 8,        // the endpoint answered with a non-success status (after retries)
  kResponseTooLarge = 9,  // body over the size cap
  kMalformedResponse = 10,  // not JSON, HTML/XML, missing or mistyped fields, unparseable expiry
  kIdentityMismatch = 11,   // the response names another identity than the one requested
  kArcChallenge = 12,       // Azure Arc challenge header or key file refused
  kKms = 13,                // Key Vault / libmongocrypt KMS exchange failed
  kCrypt = 14,              // libmongocrypt reported an error
  kKeyVault = 15,           // data key store (file or MongoDB collection) failed
  kUnsupported = 16,        // feature not available with the libraries at hand
  kCallback = 17,           // a user-supplied token callback failed
  kCancelled = 18,          // abandoned because its owner stopped it (a TokenCache being destroyed)
};

// Stable lower-case name, e.g. "http_status". Programs and the CLI's --json output use it.
AZKMS_EXPORT std::string_view to_string(ErrorCode code) noexcept;

class AZKMS_EXPORT Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message);

  [[nodiscard]] ErrorCode code() const noexcept { return code_; }

  // Context attached by the layer that saw it; empty / 0 when not applicable.
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] int http_status() const noexcept { return http_status_; }
  [[nodiscard]] int attempts() const noexcept { return attempts_; }
  // Seconds the endpoint asked us to wait (Retry-After), -1 when absent.
  [[nodiscard]] int retry_after_seconds() const noexcept { return retry_after_seconds_; }

  Error& with_source(std::string source);
  Error& with_endpoint(std::string endpoint);
  Error& with_http_status(int status);
  Error& with_attempts(int attempts);
  Error& with_retry_after(int seconds);

  [[nodiscard]] const char* what() const noexcept override;

 private:
  void rebuild_message();

  ErrorCode code_;
  std::string detail_;
  std::string source_;
  std::string endpoint_;
  int http_status_ = 0;
  int attempts_ = 0;
  int retry_after_seconds_ = -1;
  std::string message_;
};

}  // namespace azkms
