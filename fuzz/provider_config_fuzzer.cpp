// Fuzzes the KMS provider configuration file (KmsProviders::from_json): JSON written by people,
// so anything may be in it.
//
// Checks beyond "no crash, no sanitizer report":
// - from_json() returns a registry or throws azkms::Error with kConfiguration, nothing else;
// - every registered name is a valid Azure provider name ("azure" or "azure:<name>");
// - describing a provider and building the on-demand document work for every name and do no
//   I/O (the HTTP client given to the registry aborts if it is ever called: registering
//   must never fetch, the specification forbids eager filling).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "azkms/environment.hpp"
#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/kms_providers.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "provider_config_fuzzer: %s\n", what);
  std::abort();
}

class NoNetwork final : public azkms::HttpClient {
 public:
  azkms::HttpResponse send(const azkms::HttpRequest& /*request*/,
                           const azkms::HttpOptions& /*options*/) override {
    fail("the registry sent a request while only being configured");
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);

  azkms::KmsProvidersOptions options;
  options.environment = std::make_shared<azkms::MapEnvironment>();
  options.context.http = std::make_shared<NoNetwork>();
  options.callbacks.emplace("my-sdk", [](const azkms::TokenRequest&, azkms::Deadline) {
    azkms::AccessToken token;
    token.token = azkms::Secret("callback-token");
    return token;
  });

  try {
    auto providers = azkms::KmsProviders::from_json(json, std::move(options), "fuzz.json");
    const auto names = providers.names();
    if (names.empty()) fail("a configuration without providers was accepted");
    for (const auto& name : names) {
      if (!azkms::is_azure_provider_name(name)) fail("an invalid provider name was accepted");
      if (!providers.contains(name)) fail("names() lists a provider contains() denies");
      (void)providers.describe(name);
    }
    (void)providers.on_demand_document(names);
    if (providers.token_timeout().count() <= 0) fail("a non-positive token timeout");
  } catch (const azkms::Error& error) {
    if (error.code() != azkms::ErrorCode::kConfiguration) {
      std::fprintf(stderr, "error: %s\n", error.what());
      fail("a configuration error with a code other than configuration");
    }
  } catch (const std::exception& other) {
    std::fprintf(stderr, "unexpected exception: %s\n", other.what());
    fail("from_json threw something other than azkms::Error");
  }
  return 0;
}
