#include "kms/named_provider_bridge.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>

#include "azkms/error.hpp"
#include "sha256.hpp"

namespace azkms {
namespace {

constexpr std::string_view kTokenPathSuffix = "/oauth2/v2.0/token";
// Any tenant will do: the request never leaves the process. A fixed one keeps it recognisable.
constexpr std::string_view kPlaceholderTenant = "azkms-named-provider";

Error refused(std::string_view why) {
  return Error(ErrorCode::kKms,
               "libmongocrypt asked for a token at the named-provider "
               "placeholder endpoint, but " +
                   std::string(why) + "; the request was not sent anywhere")
      .with_endpoint("https://" + std::string(NamedProviderBridge::kPlaceholderHost));
}

// 16 random bytes as 32 hex digits: safe in a form body without encoding.
std::string random_secret() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw Error(ErrorCode::kCrypt, "cannot make a random placeholder secret (RAND_bytes failed)");
  }
  std::array<char, 2 * 16 + 1> text{};
  if (OPENSSL_buf2hexstr_ex(text.data(), text.size(), nullptr, bytes.data(), bytes.size(), '\0') !=
      1) {
    throw Error(ErrorCode::kCrypt, "cannot encode a placeholder secret");
  }
  return std::string(text.data());
}

// The value of `name` in an application/x-www-form-urlencoded body; nullopt when absent.
std::optional<std::string_view> form_value(std::string_view body, std::string_view name) {
  while (!body.empty()) {
    const auto amp = body.find('&');
    const std::string_view pair = body.substr(0, amp);
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    body.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace

NamedProviderBridge::NamedProviderBridge(std::vector<std::string> names)
    : names_(std::move(names)) {
  for (const auto& provider : names_) {
    // The client id names the provider only for whoever reads a libmongocrypt trace; the
    // secret is what identifies the request.
    placeholders_.push_back(
        {provider, "azkms-" + provider.substr(provider.find(':') + 1), random_secret()});
  }
}

bool NamedProviderBridge::serves(std::string_view provider) const {
  return std::find(names_.begin(), names_.end(), provider) != names_.end();
}

void NamedProviderBridge::append_placeholders(bson_t* kms_providers) const {
  for (const auto& placeholder : placeholders_) {
    bson_t entry;
    bson_append_document_begin(kms_providers, placeholder.provider.c_str(),
                               static_cast<int>(placeholder.provider.size()), &entry);
    BSON_APPEND_UTF8(&entry, "tenantId", std::string(kPlaceholderTenant).c_str());
    BSON_APPEND_UTF8(&entry, "clientId", placeholder.client_id.c_str());
    BSON_APPEND_UTF8(&entry, "clientSecret", placeholder.secret.c_str());
    BSON_APPEND_UTF8(&entry, "identityPlatformEndpoint", std::string(kPlaceholderHost).c_str());
    bson_append_document_end(kms_providers, &entry);
  }
}

bool NamedProviderBridge::is_placeholder_endpoint(std::string_view endpoint) noexcept {
  if (!endpoint.starts_with(kPlaceholderHost)) return false;
  const std::string_view rest = endpoint.substr(kPlaceholderHost.size());
  return rest.empty() || rest.starts_with(':');
}

const std::string& NamedProviderBridge::provider_of(const HttpRequest& request) const {
  if (request.method != "POST") throw refused("the method was not POST");
  const std::string_view url = request.url;
  const std::string_view path = url.substr(0, url.find('?'));
  if (!path.ends_with(kTokenPathSuffix)) throw refused("the path was not a token path");
  if (form_value(request.body, "grant_type") != "client_credentials") {
    throw refused("the grant was not client_credentials");
  }
  const auto secret = form_value(request.body, "client_secret");
  if (!secret) throw refused("it carried no client secret");
  for (const auto& placeholder : placeholders_) {
    if (*secret == placeholder.secret) return placeholder.provider;
  }
  throw refused("its client secret is not one this session made");
}

HttpResponse NamedProviderBridge::answer(const std::string& provider, const AccessToken& token,
                                         SystemTime now) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  // libmongocrypt keeps the token until expires_in - 5 s; announce at least a few seconds more
  // than that, so that the answer is usable for the request that asked for it.
  const auto remaining = duration_cast<seconds>(token.expires_on - now);
  const auto announced = std::clamp(remaining, seconds{10}, kMaxAnnouncedLifetime);
  const nlohmann::json body = {{"token_type", "Bearer"},
                               {"expires_in", announced.count()},
                               {"access_token", token.token.reveal()}};
  remember(provider, sha256(token.token.reveal()));
  return HttpResponse{200, {{"Content-Type", "application/json", false}}, body.dump()};
}

void NamedProviderBridge::remember(const std::string& provider, std::string token_digest) {
  std::lock_guard lock(mutex_);
  auto& recent = recent_digests_[provider];
  if (std::find(recent.begin(), recent.end(), token_digest) != recent.end()) return;
  if (recent.size() == kRememberedTokens) recent.erase(recent.begin());
  recent.push_back(std::move(token_digest));
}

std::optional<std::string> NamedProviderBridge::provider_of_token(std::string_view bearer) const {
  const std::string key = sha256(bearer);
  std::lock_guard lock(mutex_);
  for (const auto& [provider, recent] : recent_digests_) {
    if (std::find(recent.begin(), recent.end(), key) != recent.end()) return provider;
  }
  return std::nullopt;
}

}  // namespace azkms
