// URLs and hosts, read by libcurl's URL parser (not part of the public API).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace azkms {

// A URL split by libcurl's parser (curl_url). nullopt members when absent.
struct UrlParts {
  std::string scheme;  // lower case
  std::string host;    // IPv6 literals keep their brackets, as libcurl returns them
  std::optional<std::string> port;
  std::string path;
  std::optional<std::string> query;
  bool has_credentials = false;  // user or password
  bool has_fragment = false;

  // scheme://host[:port]/path: no credentials, no query, no fragment (not yet made safe to
  // show: the caller passes it through safe_excerpt()).
  [[nodiscard]] std::string without_query() const;
};

// nullopt unless `url` is absolute (an explicit scheme, no guessing) with a non-empty host.
[[nodiscard]] std::optional<UrlParts> split_url(const std::string& url);

// The URL as a message may show it: scheme://host[:port]/path (no credentials, query or
// fragment), redacted, printable and cut to `limit` bytes (safe_excerpt). When libcurl cannot
// parse it, what comes before any query.
[[nodiscard]] std::string url_for_messages(const std::string& url, std::size_t limit = 200);

// True for "localhost" and for the loopback addresses: 127.0.0.0/8, ::1 and IPv4-mapped
// ::ffff:127.x.y.z, bracketed or not. By address, as the resolver would read it, not by
// spelling: "127.0.0.1.example.com" is not loopback.
[[nodiscard]] bool is_loopback_host(std::string_view host);

// True when `url` is absolute and its host is loopback (is_loopback_host).
[[nodiscard]] bool is_loopback_url(const std::string& url);

}  // namespace azkms
