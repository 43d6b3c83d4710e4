#include <algorithm>
#include <cctype>

#include "azkms/http.hpp"
#include "text.hpp"

namespace azkms {
namespace {

std::optional<std::string> find_header(const std::vector<HttpHeader>& headers,
                                       std::string_view name) {
  for (const auto& header : headers) {
    if (iequals(header.name, name)) return header.value;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> HttpRequest::header(std::string_view name) const {
  return find_header(headers, name);
}

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  return find_header(headers, name);
}

std::string HttpRequest::describe() const {
  std::string text = method + " " + url;
  for (const auto& header : headers) {
    text += "\n" + header.name + ": " + (header.sensitive ? "[redacted]" : header.value);
  }
  if (!body.empty()) text += "\n\n[body: " + std::to_string(body.size()) + " bytes]";
  return text;
}

}  // namespace azkms
