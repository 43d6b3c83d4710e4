// A Key Vault token through a TokenCache, from whatever Azure hosting environment this process
// runs in: says where the token came from and how long it lasts, never what it is.
//
//   token_from_cache [CLIENT_ID]
//
// Off Azure, run it against the emulator:
//   eval "$(azkms-emulator --print-env app-service)"; token_from_cache; kill $AZKMS_EMULATOR_PID
#include <azkms/version.h>
#include <azkms/cache.hpp>
#include <azkms/detect.hpp>
#include <azkms/error.hpp>

#include <chrono>
#include <iostream>

int main(int argc, char** argv) {
  using std::chrono::seconds;
  try {
    azkms::TokenCache cache;      // renews tokens in the background, ahead of expiry
    azkms::TokenRequest request;  // https://vault.azure.net, system-assigned identity
    if (argc > 1) request.identity = azkms::IdentitySelector::client_id(argv[1]);
    azkms::TokenHandle vault =
        cache.handle(azkms::make_source(azkms::ProcessEnvironment{}), request);

    const auto deadline = std::chrono::steady_clock::now() + seconds(10);
    const azkms::AccessToken& token = vault.get(deadline);  // the first call fetches
    const auto valid_for =
        std::chrono::duration_cast<seconds>(token.expires_on - std::chrono::system_clock::now());
    std::cout << "azkms " << AZKMS_VERSION_STRING << ": token for " << token.resource << " from "
              << token.source << ", " << token.token.redacted() << ", valid for "
              << valid_for.count() << " s\n";

    vault.get(deadline);  // served from memory
    std::cout << "two get() calls, " << vault.stats().upstream_requests
              << " request(s) to the identity endpoint\n";
    return 0;
  } catch (const azkms::Error& e) {
    std::cerr << "error [" << azkms::to_string(e.code()) << "]: " << e.what() << "\n";
    return 1;
  }
}
