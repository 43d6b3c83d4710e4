#include "url.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>

#include <memory>

#include "redaction.hpp"
#include "text.hpp"

namespace azkms {
namespace {

struct UrlDeleter {
  void operator()(CURLU* url) const noexcept { curl_url_cleanup(url); }
};
struct CurlStringDeleter {
  void operator()(char* text) const noexcept { curl_free(text); }
};
using UrlHandle = std::unique_ptr<CURLU, UrlDeleter>;
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

std::optional<std::string> part(CURLU* url, CURLUPart which) {
  char* raw = nullptr;
  if (curl_url_get(url, which, &raw, 0) != CURLUE_OK || raw == nullptr) return std::nullopt;
  CurlString owned(raw);
  return std::string(raw);
}

std::string ascii_lower(std::string text) {
  for (char& c : text) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return text;
}

}  // namespace

std::string UrlParts::without_query() const {
  std::string text = scheme + "://" + host;
  if (port) text += ":" + *port;
  return text + path;
}

std::optional<UrlParts> split_url(const std::string& url) {
  UrlHandle handle(curl_url());
  if (!handle || curl_url_set(handle.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return std::nullopt;
  }
  auto scheme = part(handle.get(), CURLUPART_SCHEME);
  auto host = part(handle.get(), CURLUPART_HOST);
  if (!scheme || scheme->empty() || !host || host->empty()) return std::nullopt;
  UrlParts parts;
  parts.scheme = ascii_lower(std::move(*scheme));
  parts.host = std::move(*host);
  parts.port = part(handle.get(), CURLUPART_PORT);
  parts.path = part(handle.get(), CURLUPART_PATH).value_or("");
  parts.query = part(handle.get(), CURLUPART_QUERY);
  parts.has_credentials = part(handle.get(), CURLUPART_USER).has_value() ||
                          part(handle.get(), CURLUPART_PASSWORD).has_value();
  parts.has_fragment = part(handle.get(), CURLUPART_FRAGMENT).has_value();
  return parts;
}

std::string url_for_messages(const std::string& url, std::size_t limit) {
  if (auto parts = split_url(url)) return safe_excerpt(parts->without_query(), limit);
  return safe_excerpt(std::string_view(url).substr(0, url.find('?')), limit);
}

bool is_loopback_host(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (iequals(host, "localhost")) return true;
  const std::string text(host);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

bool is_loopback_url(const std::string& url) {
  const auto parts = split_url(url);
  return parts && is_loopback_host(parts->host);
}

}  // namespace azkms
