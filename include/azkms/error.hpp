// Error: the one exception type azkms throws. It carries a code a program can branch on and a
// message a person can act on (what was tried, what came back, what to do next). Messages
// never contain secrets: the constructor (and every with_*) passes the message through the
// library's redaction (known secrets and credentials removed, control characters replaced,
// length bounded), whichever layer wrote it.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace azkms {

enum class ErrorCode {
  kConfiguration,        // bad option, environment variable or config file
  kNoSource,             // no hosting environment detected and none named
  kUnsupportedSelector,  // the source cannot honour the identity selector (checked before I/O)
  kTimeout,              // the caller's deadline or the per-attempt timeout ran out
  kConnection,           // refused, reset, DNS, or any transport failure other than TLS
  kTls,                  // certificate verification or pinning failed
  kRedirect,             // an identity endpoint answered with a redirect, which is never followed
  kHttpStatus,           // the endpoint answered with a non-success status (after retries)
  kResponseTooLarge,     // body over the size cap
  kMalformedResponse,    // not JSON, HTML/XML, missing or mistyped fields, unparseable expiry
  kIdentityMismatch,     // the response names another identity than the one requested
  kArcChallenge,         // Azure Arc challenge header or key file refused
  kKms,                  // Key Vault / libmongocrypt KMS exchange failed
  kCrypt,                // libmongocrypt reported an error
  kKeyVault,             // data key store (file or MongoDB collection) failed
  kUnsupported,          // feature not available with the libraries at hand
  kCallback,             // a user-supplied token callback failed
  kCancelled,            // abandoned because its owner stopped it (a TokenCache being destroyed)
};

// Stable lower-case name, e.g. "http_status". Programs and the CLI's --json output use it.
std::string_view to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
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
