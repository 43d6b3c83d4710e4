// Redaction: the one place where text becomes fit to leave the library.
//
// Every message that leaves azkms passes through here, whatever layer wrote it: Error's
// constructor and log() apply safe_message() to the whole message, and every piece of
// untrusted text (a response body, a header, a field of a token response, a path a challenge
// names, an environment variable) enters a message through safe_excerpt(). Both do the same
// three steps, always in this order:
//  1. redact, on the raw text: every secret the calling thread is working with (registered
//     in a RedactionScope, in any of the forms an endpoint may echo it in: raw, URL-encoded,
//     URL-decoded, JSON-escaped), any run of 8 or more characters of one (an echo cut short),
//     the values of credential fields (access_token, client_secret, ...), JSON Web Tokens and
//     the user:password of URLs;
//  2. replace control characters and non-ASCII bytes (no terminal escape sequence, no forged
//     line);
//  3. bound the length.
// Redacting first means that neither a cut nor an escape can split a secret so that it no
// longer matches; escaping and cutting never bring back what was redacted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace azkms {

// The pieces of a set of secrets that redaction looks for: every 8-byte window of every form
// of each secret (so that an echo cut short still matches), and the forms too short for a
// window, matched whole. The memory holding them is wiped when the set goes away.
class SecretPieces {
 public:
  SecretPieces() = default;
  SecretPieces(const SecretPieces&) = delete;
  SecretPieces& operator=(const SecretPieces&) = delete;
  ~SecretPieces();

  // Values shorter than 4 bytes are ignored: they would redact ordinary words.
  void add(std::string_view secret);
  // Sets marks[i] for every byte of `text` that belongs to one of the secrets.
  void mark(std::string_view text, std::vector<bool>& marks) const;

 private:
  std::vector<std::uint64_t> windows_;    // sorted
  std::vector<std::string> short_forms_;  // 4 to 7 bytes
};

// The secrets the calling thread is working with while the scope lives (a fetch: the headers
// it sends, the Arc key, the client assertion, the token that came back). Scopes nest, and
// every scope of the thread applies. A scope lives on the stack of the thread that made it.
class RedactionScope {
 public:
  RedactionScope();
  ~RedactionScope();
  RedactionScope(const RedactionScope&) = delete;
  RedactionScope& operator=(const RedactionScope&) = delete;

  void add(std::string_view secret) { pieces_.add(secret); }
  [[nodiscard]] const SecretPieces& pieces() const noexcept { return pieces_; }
  [[nodiscard]] const RedactionScope* outer() const noexcept { return outer_; }

 private:
  SecretPieces pieces_;
  RedactionScope* outer_;
};

// Adds `secret` to the innermost scope of the calling thread (nothing when there is none): for
// a secret met deep in a fetch, such as the key file an Arc challenge names.
void redact_from_now_on(std::string_view secret);

// Adds to the innermost scope of the calling thread the credentials a response body carries:
// the values of its credential fields (decoded when the body is JSON, and as written) and the
// JSON Web Tokens in it. Whatever is later said about the body, in whatever piece (its error
// code alone, the shape of one field, an excerpt), then leaves them out, wherever in the body
// the endpoint echoed them.
void redact_credentials_of(std::string_view body);

// `text` with every secret and credential replaced by "[redacted]" (step 1 above); `also`
// names secrets beyond the calling thread's scopes. Printable text stays as it is.
std::string redacted(std::string_view text, std::initializer_list<std::string_view> also = {});

// Untrusted text a message may quote: redacted, then control characters and non-ASCII bytes
// replaced (line breaks and tabs by a space, the rest by '?'), then trimmed and cut to
// `limit` bytes ("..." marks a cut). The one helper for any text from the network, a file or
// the environment.
std::string safe_excerpt(std::string_view text, std::size_t limit = 200);

// The last pass of every whole message (Error, log lines): the same steps, bounded to
// kMaxMessageBytes.
inline constexpr std::size_t kMaxMessageBytes = 4096;
std::string safe_message(std::string_view message);

}  // namespace azkms
