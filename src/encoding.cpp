#include "encoding.hpp"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <climits>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

namespace azkms {
namespace {

struct CurlFree {
  void operator()(char* text) const noexcept { curl_free(text); }
};
using CurlString = std::unique_ptr<char, CurlFree>;

// libcurl and OpenSSL take int lengths, and libcurl reads up to a NUL when the length is 0:
// they get non-empty slices of at most this size (a multiple of 3, so that base64 slices
// join without padding in between).
constexpr std::size_t kSlice = std::size_t{3} << 20;

const unsigned char* bytes_of(std::string_view text) {
  return reinterpret_cast<const unsigned char*>(text.data());
}

void lower_hex_digits(std::string& text, std::size_t from, bool after_percent_only) {
  for (std::size_t i = from; i < text.size(); ++i) {
    if (after_percent_only && text[i] != '%') continue;
    const std::size_t end = after_percent_only ? std::min(i + 3, text.size()) : text.size();
    for (std::size_t j = after_percent_only ? i + 1 : i; j < end; ++j) {
      if (text[j] >= 'A' && text[j] <= 'F') text[j] = static_cast<char>(text[j] - 'A' + 'a');
    }
    if (!after_percent_only) return;
    i = end - 1;
  }
}

}  // namespace

std::string hex_encode(std::string_view bytes, HexCase letters) {
  std::string out;
  for (std::size_t pos = 0; pos < bytes.size(); pos += kSlice) {
    const auto part = bytes.substr(pos, kSlice);
    // Two digits a byte and the NUL OpenSSL writes after them; '\0': no separator.
    std::string digits(part.size() * 2 + 1, '\0');
    std::size_t length = 0;
    if (OPENSSL_buf2hexstr_ex(digits.data(), digits.size(), &length, bytes_of(part), part.size(),
                              '\0') != 1) {
      throw std::bad_alloc();
    }
    digits.resize(length > 0 ? length - 1 : 0);
    out += digits;
  }
  if (letters == HexCase::kLower) lower_hex_digits(out, 0, /*after_percent_only=*/false);
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (bytes > static_cast<std::size_t>(INT_MAX) ||
      RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  std::string hex = hex_encode(
      std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()), HexCase::kLower);
  OPENSSL_cleanse(raw.data(), raw.size());
  return hex;
}

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  for (std::size_t pos = 0; pos < bytes.size(); pos += kSlice) {
    const auto part = bytes.substr(pos, kSlice);
    std::string block(4 * ((part.size() + 2) / 3) + 1, '\0');
    const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(block.data()),
                                       bytes_of(part), static_cast<int>(part.size()));
    block.resize(static_cast<std::size_t>(length));
    out += block;
  }
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view in) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1 || in.size() > static_cast<std::size_t>(INT_MAX) - 3) return std::nullopt;
  std::string standard;
  standard.reserve(in.size() + 3);
  for (char c : in) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      standard.push_back(c);
    } else if (c == '-') {
      standard.push_back('+');
    } else if (c == '_') {
      standard.push_back('/');
    } else {
      return std::nullopt;
    }
  }
  const std::size_t padding = (4 - standard.size() % 4) % 4;
  standard.append(padding, '=');
  std::string out(standard.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes_of(standard),
                                static_cast<int>(standard.size()));
  if (n < 0 || static_cast<std::size_t>(n) < padding) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

// curl_easy_escape and curl_easy_unescape without a handle (libcurl ignores it since 7.82)
// touch no global state: making an error message may call them on any path, libcurl's own
// failures included.
std::string percent_encode(std::string_view text, HexCase letters) {
  std::string out;
  for (std::size_t pos = 0; pos < text.size(); pos += kSlice) {
    const auto part = text.substr(pos, kSlice);
    CurlString escaped(curl_easy_escape(nullptr, part.data(), static_cast<int>(part.size())));
    if (!escaped) throw std::bad_alloc();
    out += escaped.get();
  }
  if (letters == HexCase::kLower) lower_hex_digits(out, 0, /*after_percent_only=*/true);
  return out;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  // A slice must not cut a %XX in two: each ends before a '%' in its last two bytes.
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t size = std::min(kSlice, text.size() - pos);
    if (pos + size < text.size()) {
      const auto percent = text.substr(pos, size).rfind('%');
      if (percent != std::string_view::npos && percent + 3 > size) size = percent;
    }
    int length = 0;
    CurlString decoded(
        curl_easy_unescape(nullptr, text.data() + pos, static_cast<int>(size), &length));
    if (!decoded) throw std::bad_alloc();
    out.append(decoded.get(), static_cast<std::size_t>(length));
    pos += size;
  }
  return out;
}

}  // namespace azkms
