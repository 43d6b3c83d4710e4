// HTTP as plain values. Sources build an HttpRequest; a test can compare it field by field
// without a socket, and the real client (libcurl) sends it.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace azkms {

struct HttpHeader {
  std::string name;
  std::string value;
  // True for headers carrying a secret (X-IDENTITY-HEADER, secret, Authorization...):
  // describe() and logs show them redacted.
  bool sensitive = false;

  friend bool operator==(const HttpHeader&, const HttpHeader&) = default;
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;  // absolute, query already percent-encoded
  std::vector<HttpHeader> headers;
  std::string body;

  // Value of the first header with that name (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
  // "GET http://127.0.0.1/..." plus headers, sensitive values redacted. Safe to log.
  [[nodiscard]] std::string describe() const;
};

struct HttpResponse {
  int status = 0;
  std::vector<HttpHeader> headers;  // names as received
  std::string body;

  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

struct HttpOptions {
  // Budget for this one exchange (connect + send + full response). The caller computes it
  // from its own deadline and the per-attempt timeout.
  std::chrono::milliseconds timeout{10'000};
  // Responses larger than this are refused as soon as the size is known (Content-Length) or
  // exceeded while streaming.
  std::size_t max_response_bytes = 1u << 20;
  // Service Fabric: the server certificate's SHA-1 thumbprint, 40 hex digits. When set, the
  // certificate is accepted if and only if its thumbprint matches (the cluster's certificate
  // is self-signed, so chain verification is replaced by the pin, never simply turned off).
  std::optional<std::string> pinned_sha1_thumbprint;
  // Extra trust anchors (PEM file) in addition to the system store, for the local Key Vault
  // emulator. Verification stays on.
  std::string ca_file;
};

// Thrown errors: ErrorCode::kTimeout, kConnection, kTls, kRedirect, kResponseTooLarge.
// Any HTTP status is a response, not an error: policy belongs to the caller.
class HttpClient {
 public:
  virtual ~HttpClient() = default;
  virtual HttpResponse send(const HttpRequest& request, const HttpOptions& options) = 0;
};

// libcurl-backed client: reuses connections within the process, never follows redirects,
// bypasses proxies for loopback and link-local hosts, verifies TLS always.
std::shared_ptr<HttpClient> make_curl_http_client();

// Percent-encodes a query component (through libcurl).
std::string url_encode(std::string_view value);

}  // namespace azkms
