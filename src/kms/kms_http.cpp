#include "kms/kms_http.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "azkms/error.hpp"
#include "azkms/token_response.hpp"
#include "encoding.hpp"
#include "redaction.hpp"

namespace azkms {
namespace {

Error malformed(const std::string& what) {
  return Error(ErrorCode::kKms, "libmongocrypt built a Key Vault request " + what);
}

// A control character other than horizontal tab (which HTTP allows in field values).
bool has_control(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return (byte < 0x20 && byte != '\t') || byte == 0x7f;
  });
}

bool is_token(std::string_view text) {
  return !text.empty() && std::none_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte <= 0x20 || byte >= 0x7f || c == ':';
  });
}

}  // namespace

HttpRequest parse_kms_request(std::string_view bytes, const std::string& endpoint) {
  const auto head_end = bytes.find("\r\n\r\n");
  if (head_end == std::string_view::npos) throw malformed("without a header end");
  std::string_view head = bytes.substr(0, head_end);
  HttpRequest request;
  request.body = std::string(bytes.substr(head_end + 4));

  auto next_line = [&head]() {
    const auto eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
    return line;
  };
  const std::string_view request_line = next_line();
  const auto space1 = request_line.find(' ');
  const auto space2 = request_line.rfind(' ');
  if (space1 == std::string_view::npos || space2 <= space1) {
    throw malformed("with no request line");
  }
  const std::string_view method = request_line.substr(0, space1);
  const std::string_view target = request_line.substr(space1 + 1, space2 - space1 - 1);
  if (!is_token(method) || has_control(request_line)) {
    throw malformed("with a control character in its request line");
  }
  if (!target.starts_with('/') || target.find(' ') != std::string_view::npos) {
    throw malformed("whose target is not a path");
  }
  request.method = std::string(method);
  request.url = "https://" + endpoint + std::string(target);

  while (!head.empty()) {
    const std::string_view line = next_line();
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
      throw malformed("with a malformed header line");
    }
    std::string name(line.substr(0, colon));
    std::string_view value = line.substr(colon + 1);
    if (has_control(value)) throw malformed("with a control character in header " + name);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "host" || lower == "content-length" || lower == "connection") continue;
    request.headers.push_back({name, std::string(value), lower == "authorization"});
  }
  return request;
}

std::string kms_response_bytes(const HttpResponse& response) {
  std::string bytes = "HTTP/1.1 " + std::to_string(response.status) + " OK\r\n";
  bytes += "Content-Type: application/json\r\n";
  bytes += "Content-Length: " + std::to_string(response.body.size()) + "\r\n\r\n";
  bytes += response.body;
  return bytes;
}

std::string key_vault_error_code(const std::string& body) {
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return {};
  auto error = json.find("error");
  if (error == json.end() || !error->is_object()) return {};
  auto code = error->find("code");
  if (code == error->end() || !code->is_string()) return {};
  return safe_excerpt(code->get<std::string>(), 64);
}

std::string claims_challenge(const HttpResponse& response) {
  constexpr std::size_t kMaxClaims = 8 * 1024;
  const std::string header = response.header("WWW-Authenticate").value_or("");
  constexpr std::string_view kKey = "claims=\"";
  const auto start = header.find(kKey);
  if (start == std::string::npos) return {};
  const auto end = header.find('"', start + kKey.size());
  if (end == std::string::npos) return {};
  std::string encoded = header.substr(start + kKey.size(), end - start - kKey.size());
  if (encoded.size() > 2 * kMaxClaims) return {};
  // Standard or URL-safe base64: read both as base64url.
  std::replace(encoded.begin(), encoded.end(), '+', '-');
  std::replace(encoded.begin(), encoded.end(), '/', '_');
  const auto decoded = base64url_decode(encoded);
  if (!decoded || decoded->size() > kMaxClaims) return {};
  const auto json = nlohmann::json::parse(*decoded, nullptr, /*allow_exceptions=*/false);
  return json.is_object() ? *decoded : std::string();
}

}  // namespace azkms
