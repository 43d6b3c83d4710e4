// HTTP as plain values. Sources build an HttpRequest; a test can compare it field by field
// without a socket, and the real client (libcurl) sends it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include "azkms/export.h"

namespace azkms {

struct AZKMS_EXPORT HttpHeader {
  std::string name;
  std::string value;
  // True for headers carrying a secret (X-IDENTITY-HEADER, secret, Authorization...):
  // describe() and logs show them redacted.
  bool sensitive = false;

  // Written out (not defaulted) so that the header compiles as C++17.
  friend bool operator==(const HttpHeader& a, const HttpHeader& b) {
    return a.name == b.name && a.value == b.value && a.sensitive == b.sensitive;
  }
  friend bool operator!=(const HttpHeader& a, const HttpHeader& b) { return !(a == b); }
};

struct AZKMS_EXPORT HttpRequest {
  std::string method = "GET";
  std::string url;  // absolute, query already percent-encoded
  std::vector<HttpHeader> headers;
  std::string body;

  // Value of the first header with that name (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
  // "GET http://127.0.0.1/..." plus headers, sensitive values redacted. Safe to log.
  [[nodiscard]] std::string describe() const;
};

struct AZKMS_EXPORT HttpResponse {
  int status = 0;
  std::vector<HttpHeader> headers;  // names as received
  std::string body;

  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

// Lets one thread stop the exchanges another is running: once cancel() is called, an exchange
// that observes it is abandoned within about a second (ErrorCode::kCancelled), and none
// starts. A TokenCache cancels its refresher's renewal this way when it is destroyed.
class AZKMS_EXPORT Cancellation {
 public:
  void cancel() noexcept { cancelled_.store(true, std::memory_order_release); }
  [[nodiscard]] bool cancelled() const noexcept {
    return cancelled_.load(std::memory_order_acquire);
  }

 private:
  std::atomic<bool> cancelled_{false};
};

// While it lives (and no inner scope replaces it), every exchange the calling thread runs through
// the libcurl client, and the retry loop's waits between attempts, also observe `cancellation`. For
// code that cannot reach the HttpOptions: a TokenCache calls TokenSource::fetch(), which builds its
// own.
class AZKMS_EXPORT ScopedCancellation {
 public:
  explicit ScopedCancellation(std::shared_ptr<const Cancellation> cancellation);
  ~ScopedCancellation();
  ScopedCancellation(const ScopedCancellation&) = delete;
  ScopedCancellation& operator=(const ScopedCancellation&) = delete;

  // True when the calling thread's innermost scope has been cancelled.
  [[nodiscard]] static bool requested() noexcept;

 private:
  std::shared_ptr<const Cancellation> cancellation_;
  const Cancellation* outer_;
};

struct AZKMS_EXPORT HttpOptions {
  // Budget for this one exchange (connect + send + full response). The caller computes it
  // from its own deadline and the per-attempt timeout.
  std::chrono::milliseconds timeout{10'000};
  // Budget for establishing the connection alone, when shorter than `timeout`; zero: `timeout`.
  // IMDS reached by fallback is probed this way, so that a machine off Azure finds out in a
  // second that nothing is there.
  std::chrono::milliseconds connect_timeout{0};
  // Responses larger than this are refused as soon as the size is known (Content-Length) or
  // exceeded while streaming.
  std::size_t max_response_bytes = 1u << 20;
  // Service Fabric: the server certificate's SHA-1 thumbprint, 40 hex digits. When set, the
  // certificate is accepted if and only if its thumbprint matches (the cluster's certificate
  // is self-signed, so chain verification is replaced by the pin, never simply turned off).
  std::optional<std::string> pinned_sha1_thumbprint;
  // Extra trust anchors (PEM file) in addition to the system store, for the local Key Vault
  // emulator or an identity endpoint (SourceContext::ca_file, SSL_CERT_FILE). Verification
  // stays on. azkms reads the file itself: anything but a regular file of at most 4 MiB (a
  // FIFO, a device, a directory) is ErrorCode::kConfiguration, never a blocked exchange.
  std::string ca_file;
  // When set and cancelled, the exchange is abandoned (see Cancellation).
  std::shared_ptr<const Cancellation> cancellation;
};

// Counters a client may keep; the libcurl client does (tests use them to show reuse).
struct AZKMS_EXPORT HttpClientStats {
  std::uint64_t requests = 0;            // send() calls that reached the network
  std::uint64_t connections_opened = 0;  // new TCP connections (the rest were reused)
};

// Thrown errors: ErrorCode::kTimeout, kConnection, kTls, kRedirect, kResponseTooLarge (also
// for headers over the limits), kMalformedResponse (an answer that is not HTTP at all),
// kCancelled, and kConfiguration for a request that cannot be sent as given (bad URL, scheme
// other than http/https, a header value with a line break, a malformed pin, a pin on plain
// http).
// Any HTTP status other than a redirect is a response, not an error: policy belongs to the
// caller. Implementations must be safe to call from many threads at once.
class AZKMS_EXPORT HttpClient {
 public:
  virtual ~HttpClient() = default;
  virtual HttpResponse send(const HttpRequest& request, const HttpOptions& options) = 0;
  [[nodiscard]] virtual HttpClientStats stats() const { return {}; }
};

// libcurl-backed client: never follows redirects, bypasses proxies for loopback and
// link-local hosts, verifies TLS always (or checks the pin), TLS 1.2 at least.
// Each client keeps its own idle connections (a pool of libcurl handles), so connections are
// reused across the requests of one client: create one and share it, or use
// default_http_client(). Destroying a client closes its idle connections. A child process
// created by fork() never uses a connection or handle of its parent: the child's first
// exchange opens a new connection.
AZKMS_EXPORT std::shared_ptr<HttpClient> make_curl_http_client();

// One libcurl client for the whole process, created on first use and never destroyed (so
// that threads still running at exit never see it disappear).
AZKMS_EXPORT std::shared_ptr<HttpClient> default_http_client();

}  // namespace azkms
