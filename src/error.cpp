#include "azkms/error.hpp"

#include "redaction.hpp"

namespace azkms {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kConfiguration:
      return "configuration";
    case ErrorCode::kNoSource:
      return "no_source";
    case ErrorCode::kUnsupportedSelector:
      return "unsupported_selector";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kConnection:
      return "connection";
    case ErrorCode::kTls:
      return "tls";
    case ErrorCode::kRedirect:
      return "redirect";
    case ErrorCode::kHttpStatus:
      return "http_status";
    case ErrorCode::kResponseTooLarge:
      return "response_too_large";
    case ErrorCode::kMalformedResponse:
      return "malformed_response";
    case ErrorCode::kIdentityMismatch:
      return "identity_mismatch";
    case ErrorCode::kArcChallenge:
      return "arc_challenge";
    case ErrorCode::kKms:
      return "kms";
    case ErrorCode::kCrypt:
      return "crypt";
    case ErrorCode::kKeyVault:
      return "key_vault";
    case ErrorCode::kUnsupported:
      return "unsupported";
    case ErrorCode::kCallback:
      return "callback";
    case ErrorCode::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// The base keeps no copy of the message: the one what() returns is the redacted one.
Error::Error(ErrorCode code, std::string message)
    : std::runtime_error(std::string()), code_(code), detail_(safe_message(message)) {
  rebuild_message();
}

Error& Error::with_source(std::string source) {
  source_ = std::move(source);
  rebuild_message();
  return *this;
}

Error& Error::with_endpoint(std::string endpoint) {
  endpoint_ = std::move(endpoint);
  rebuild_message();
  return *this;
}

Error& Error::with_http_status(int status) {
  http_status_ = status;
  return *this;
}

Error& Error::with_attempts(int attempts) {
  attempts_ = attempts;
  rebuild_message();
  return *this;
}

Error& Error::with_retry_after(int seconds) {
  retry_after_seconds_ = seconds;
  return *this;
}

const char* Error::what() const noexcept { return message_.c_str(); }

// "<source> (<endpoint>): <detail> [after N attempts]". The detail is written by the layer
// that failed and already says what came back and what to do. Whatever layer wrote it, the
// message goes through the last redaction pass, with the secrets the thread knows by now.
void Error::rebuild_message() {
  message_.clear();
  if (!source_.empty()) message_ += source_;
  if (!endpoint_.empty()) {
    message_ += message_.empty() ? "" : " ";
    message_ += "(" + endpoint_ + ")";
  }
  if (!message_.empty()) message_ += ": ";
  message_ += detail_;
  if (attempts_ > 1) message_ += " [after " + std::to_string(attempts_) + " attempts]";
  message_ = safe_message(message_);
}

}  // namespace azkms
