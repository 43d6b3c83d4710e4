// Emulator: local stand-ins for every Azure identity endpoint (and Key Vault), each on its own
// loopback port, with the real endpoints' checks, response shapes and injectable faults.
// Used by the tests, the benchmarks, `azkms demo`, and people developing off Azure.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "token_ledger.hpp"

namespace azkms::emulator {

class CertificateAuthority;

enum class Endpoint : std::uint8_t {
  kImds,
  kAppService,      // 2019-08-01
  kAppService2017,  // 2017-09-01, Linux date format
  kAzureMl,         // 2017-09-01 wire
  kCloudShell,
  kAzureArc,
  kServiceFabric,  // HTTPS, self-signed certificate
  kWorkloadIdentity,
};

struct Identity {
  bool system_assigned = false;
  std::string client_id;
  std::string object_id;
  std::string resource_id;
};

struct Options {
  // Empty: one system-assigned identity and two user-assigned ones (see default_identities()).
  std::vector<Identity> identities;
  std::chrono::seconds token_lifetime{3600};
  // Added before every answer (benchmarks use 200 ms).
  std::chrono::milliseconds response_delay{0};
  std::string host = "127.0.0.1";
  // Secrets the endpoints demand; random when empty.
  std::string identity_header;
  std::string msi_secret;
  // Azure Arc: where the emulator writes its challenge key files (a temp dir when empty).
  std::string arc_key_directory;

  // Workload identity: the tenant in the token path (a fixed GUID when empty).
  std::string tenant_id;
  // Azure ML: the identity served when a request names none (DEFAULT_IDENTITY_CLIENT_ID on the
  // platform). Empty: the system-assigned identity.
  std::string azure_ml_default_client_id;
  // App Service and Service Fabric: keep issued tokens on the platform's side and hand the same
  // one back for the same identity and resource, unless the request names it in
  // token_sha256_to_refresh (MSI v1 token revocation), as the platforms do. Off by default:
  // most tests count one issued token per request.
  bool platform_token_cache = false;
  // Fixed ports per endpoint; endpoints not listed (or 0) get a free port.
  std::map<Endpoint, int> ports;
  // One line per notable event ("App Service: token issued to client id ..."). Never secrets.
  // Called from the server threads, possibly several at once.
  std::function<void(std::string_view)> log;
};

std::vector<Identity> default_identities();

class Emulator {
 public:
  explicit Emulator(Options options = {});
  ~Emulator();  // stops
  Emulator(const Emulator&) = delete;
  Emulator& operator=(const Emulator&) = delete;

  // Binds every endpoint on a free port of options.host and serves in background threads.
  void start();
  void stop();

  [[nodiscard]] int port(Endpoint endpoint) const;
  // e.g. "http://127.0.0.1:40123" (https for Service Fabric)
  [[nodiscard]] std::string base_url(Endpoint endpoint) const;
  // The environment variables a client needs to target this endpoint as if it ran there,
  // e.g. IDENTITY_ENDPOINT + IDENTITY_HEADER for App Service; for IMDS,
  // AZURE_POD_IDENTITY_AUTHORITY_HOST; for Azure Arc also AZKMS_ARC_TOKEN_DIRECTORY (the
  // directory its key files are in, which azkms trusts only when told).
  // Service Fabric's also names its certificate's PEM file (AZKMS_SERVICE_FABRIC_CERT_FILE), for
  // clients that do not pin by thumbprint. Workload identity's authority is the plain-HTTP one
  // (azkms accepts plain http on loopback).
  [[nodiscard]] std::map<std::string, std::string> client_environment(Endpoint endpoint) const;
  // What an Azure SDK needs (what `azkms-emulator --print-env` prints): client_environment(),
  // with workload identity's AZURE_AUTHORITY_HOST on the HTTPS authority (real clients refuse
  // plain http), Azure ML's DEFAULT_IDENTITY_CLIENT_ID always set (as on the platform), and
  // NODE_EXTRA_CA_CERTS and SSL_CERT_FILE naming trust_bundle_file().
  [[nodiscard]] std::map<std::string, std::string> sdk_environment(Endpoint endpoint) const;
  // Workload identity over HTTPS, with a certificate from certificate_authority(), e.g.
  // "https://127.0.0.1:40125/". It serves the token endpoint and the discovery documents
  // (/{tenant}/v2.0/.well-known/openid-configuration, /common/discovery/instance), as the
  // plain-HTTP workload identity endpoint also does.
  [[nodiscard]] std::string workload_identity_authority() const;
  // The emulator's CA: it signs the HTTPS authority's certificate, and Key Vault's when given to
  // KeyVaultOptions::certificate_authority. Valid once started.
  [[nodiscard]] std::shared_ptr<const CertificateAuthority> certificate_authority() const;
  // PEM files (valid once started): the CA; the CA plus Service Fabric's self-signed
  // certificate (what a client of any endpoint trusts); Service Fabric's certificate alone.
  [[nodiscard]] std::string ca_file() const;
  [[nodiscard]] std::string trust_bundle_file() const;
  [[nodiscard]] std::string service_fabric_certificate_file() const;

  // Faults: the next `times` requests to `endpoint` behave as `fault_case` (same names as the
  // X-MongoDB-HTTP-TestParams header: empty-json, bad-json, 404, 500, slow, giant, 410, 429,
  // reset, ...).
  void inject(Endpoint endpoint, std::string fault_case, int times = 1);
  void clear_faults();
  void set_response_delay(std::chrono::milliseconds delay);

  [[nodiscard]] std::uint64_t requests_served(Endpoint endpoint) const;
  [[nodiscard]] TokenLedger& ledger();
  [[nodiscard]] const Options& options() const;

  // Service Fabric's certificate: SHA-1 thumbprint (40 uppercase hex digits) and PEM.
  [[nodiscard]] std::string service_fabric_thumbprint() const;
  [[nodiscard]] std::string service_fabric_certificate_pem() const;

  // The token endpoint's full URL (without query), e.g. http://127.0.0.1:40123/msi/token.
  [[nodiscard]] std::string token_url(Endpoint endpoint) const;
  // Tokens issued by one endpoint (the ledger counts all of them).
  [[nodiscard]] std::uint64_t tokens_issued(Endpoint endpoint) const;
  // The `claims` form fields workload identity's token endpoint received, in order.
  [[nodiscard]] std::vector<std::string> claims_received() const;
  // Lifetime of the tokens issued from now on.
  void set_token_lifetime(std::chrono::seconds lifetime);
  // Where the Azure Arc endpoint writes its challenge key files. A file lives until its key is
  // used, for a minute at most, and at most 64 challenges are kept (the oldest goes first).
  [[nodiscard]] std::string arc_key_directory() const;
  // The keys of the latest 4096 Arc challenges, used or not (their files may be gone): what a
  // test checks never leaks.
  [[nodiscard]] std::vector<std::string> arc_keys_handed_out() const;
  // The workload identity federated token (the client assertion the endpoint accepts).
  [[nodiscard]] std::string federated_token() const;
  // Every secret the echo-* fault cases sent back so far (as they were, before any encoding):
  // what a test for leaks looks for.
  [[nodiscard]] std::vector<std::string> echoed_secrets() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

inline constexpr std::array<Endpoint, 8> kAllEndpoints = {
    Endpoint::kImds,          Endpoint::kAppService,      Endpoint::kAppService2017,
    Endpoint::kAzureMl,       Endpoint::kCloudShell,      Endpoint::kAzureArc,
    Endpoint::kServiceFabric, Endpoint::kWorkloadIdentity};

// Command-line name, the same as the library's source names: "imds", "app-service",
// "app-service-2017", "azure-ml", "cloud-shell", "azure-arc", "service-fabric",
// "workload-identity".
std::string_view to_string(Endpoint endpoint) noexcept;
// Prints the endpoint's name (also what GoogleTest shows for parameterised tests).
std::ostream& operator<<(std::ostream& os, Endpoint endpoint);
// "IMDS", "App Service", ...
std::string_view display_name(Endpoint endpoint) noexcept;
std::optional<Endpoint> parse_endpoint(std::string_view name) noexcept;

}  // namespace azkms::emulator
