// Secret: a string that must never reach a log, an error message or a test report.
//
// Tokens, IDENTITY_HEADER, MSI_SECRET and Arc key contents live in this type. It has no
// implicit conversion to a string; streaming it (including through GoogleTest's printer)
// prints a redacted form. The only way to the bytes is the explicitly named reveal().
// The memory is wiped when the value is destroyed or overwritten.
#pragma once

#include <initializer_list>
#include <iosfwd>
#include <string>
#include <string_view>
#include "azkms/export.h"

namespace azkms {

class AZKMS_EXPORT Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) noexcept : value_(std::move(value)) {}
  Secret(const Secret&) = default;
  Secret(Secret&& other) noexcept;
  Secret& operator=(const Secret& other);
  Secret& operator=(Secret&& other) noexcept;
  ~Secret();

  // The secret bytes. Call only where they are sent on the wire or handed to the user who
  // explicitly asked for them.
  [[nodiscard]] const std::string& reveal() const noexcept { return value_; }
  [[nodiscard]] bool empty() const noexcept { return value_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return value_.size(); }

  // "[redacted: 1234 bytes]": safe for logs and errors.
  [[nodiscard]] std::string redacted() const;

  friend bool operator==(const Secret& a, const Secret& b) noexcept { return a.value_ == b.value_; }

 private:
  void wipe() noexcept;
  std::string value_;
};

AZKMS_EXPORT std::ostream& operator<<(std::ostream& os, const Secret& secret);

// `text` with each of `secrets` replaced by "[redacted]", in any form an endpoint may echo it
// in (raw, URL-encoded or -decoded, JSON-escaped) and any run of 8 or more of its characters,
// and with credential values, JSON Web Tokens and URL passwords redacted too. Values shorter
// than 4 bytes are ignored. The library's own messages need no call: every error and log line
// is redacted on its way out (see src/redaction.hpp).
AZKMS_EXPORT std::string redact(std::string text, std::initializer_list<std::string_view> secrets);

}  // namespace azkms
