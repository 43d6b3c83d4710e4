// Emulator: local stand-ins for every Azure identity endpoint (and Key Vault), each on its own
// loopback port, with the real endpoints' checks, response shapes and injectable faults.
// Used by the tests, the benchmarks, `azkms demo`, and people developing off Azure.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "token_ledger.hpp"

namespace azkms::emulator {

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
  // AZURE_POD_IDENTITY_AUTHORITY_HOST.
  [[nodiscard]] std::map<std::string, std::string> client_environment(Endpoint endpoint) const;

  // Faults: the next `times` requests to `endpoint` behave as `fault_case` (same names as the
  // X-MongoDB-HTTP-TestParams header: empty-json, bad-json, 404, 500, slow, giant, 410, 429,
  // reset, ...).
  void inject(Endpoint endpoint, std::string fault_case, int times = 1);
  void clear_faults();
  void set_response_delay(std::chrono::milliseconds delay);

  [[nodiscard]] std::uint64_t requests_served(Endpoint endpoint) const;
  [[nodiscard]] TokenLedger& ledger();
  [[nodiscard]] const Options& options() const;

  // Service Fabric's certificate: SHA-1 thumbprint (40 hex digits) and PEM.
  [[nodiscard]] std::string service_fabric_thumbprint() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string_view to_string(Endpoint endpoint) noexcept;

}  // namespace azkms::emulator
