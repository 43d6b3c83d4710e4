// KeyVaultServer: a local Azure Key Vault serving the two operations MongoDB client-side
// encryption uses, `wrapkey` and `unwrapkey` with RSA-OAEP-256, on real RSA-2048 keys, and
// `GET /keys/{name}[/{version}]` (the public JWK), which Azure SDK clients fetch first.
//
// It behaves like the service where a client can tell the difference:
// - HTTPS only, with a certificate signed by a CA generated at construction. Clients trust it
//   through ca_file() / ca_pem() given explicitly (CURLOPT_CAINFO, SSL_CTX_load_verify_locations),
//   never by turning verification off. The certificate names IP 127.0.0.1 and DNS localhost.
// - Named keys with versions (32 hex digits); a request without a version uses the latest.
// - 401 with Key Vault's `WWW-Authenticate` challenge unless the bearer token was issued by the
//   emulator's own identity endpoints (the TokenLedger) for https://vault.azure.net and is
//   still valid; 403 when that token's identity is not granted on the key; 404 KeyNotFound;
//   400 BadParameter for a missing or unknown api-version (checked after authentication; known:
//   2016-10-01, 7.0 to 7.6 and their previews, dated versions from 2025 such as 2025-07-01),
//   another algorithm, bad base64url or a value that does not decrypt. Errors have the service's
//   shape: {"error":{"code","message"}}.
// - Faults injected per request (`X-MongoDB-HTTP-TestParams: case=<name>`, the drivers'
//   convention) or programmatically (inject()); see kKeyVaultFaultCases below.
//
// Binds loopback only. Never logs or echoes a token or key material. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "token_ledger.hpp"

namespace azkms::emulator {

class CertificateAuthority;

struct KeyVaultOptions {
  // A loopback address ("127.0.0.1", any 127.x.y.z, "::1" or "localhost", which means
  // 127.0.0.1); anything else is refused. libmongocrypt 1.7.2 rejects a keyVaultEndpoint whose
  // host has no dot, hence the IPv4 default.
  std::string host = "127.0.0.1";
  // 0: a free port chosen at the first start(); later starts reuse the same port.
  int port = 0;
  // Added before every answer.
  std::chrono::milliseconds response_delay{0};
  // Where the CA certificate (key-vault-ca.pem) is written; a fresh temporary directory, removed
  // on destruction, when empty.
  std::string cert_directory;
  // Tenant named in the 401 challenge (authorization="https://login.microsoftonline.com/<id>").
  // Pass the identity emulator's tenant (Options::tenant_id) to keep the two consistent.
  std::string tenant_id = "7f3c6b1e-4a2d-4e8f-9b0c-5d1a2e3f4a5b";
  // true: every identity may use a key until restrict() says otherwise. false: keys start
  // with nobody granted; grant() adds identities.
  bool grant_all_by_default = true;
  // The CA that signs the server certificate (the identity emulator's, so that one trust file
  // serves both: Emulator::certificate_authority()). A new one when null.
  std::shared_ptr<const CertificateAuthority> certificate_authority;
  // Keys created at construction (one version each).
  std::vector<std::string> keys;
  // One line per event (listening, each operation's outcome and identity, faults, refusals);
  // never a token or key material. Nothing is logged when empty.
  std::function<void(std::string_view)> log;
};

// Fault cases, accepted by inject() and the X-MongoDB-HTTP-TestParams header. The names and,
// for the transport cases, the behaviour are those of the identity endpoints (faults.hpp,
// http_faults.hpp); error statuses answer with Key Vault's error shape.
//   "400".."599"  that status with {"error":{"code","message"}}; "429" adds Retry-After: 1;
//                 "401" adds the challenge even for a valid token (a client should drop its
//                 cached token and retry once with a fresh one); "403" is Forbidden.
//   "truncated"   200 with a wrapkey-shaped answer cut in the middle (Content-Length matches);
//   "bad-value"   200 with a "value" that is not base64url;
//   "empty-json", "bad-json", "html", "xml"   200 with that body;
//   "slow"        200, then a never-ending JSON array, one element a second (outlasts any
//                 client deadline; stop() still returns promptly);
//   "giant"       200 with a 24 MiB JSON body;
//   "reset"       part of the body, then a TCP reset;
//   "close"       the connection closed without any response;
//   "redirect"    302 to another path of the emulator (a client must not follow it).
inline constexpr std::string_view kKeyVaultFaultCases[] = {
    "truncated", "bad-value", "empty-json", "bad-json", "html",    "xml",
    "slow",      "giant",     "reset",      "close",    "redirect"};

class KeyVaultServer {
 public:
  static constexpr std::string_view kResource = "https://vault.azure.net";

  // Generates the CA, the server certificate and the option's keys, and writes ca_file().
  // `ledger` must outlive the server.
  explicit KeyVaultServer(const TokenLedger& ledger, KeyVaultOptions options = {});
  ~KeyVaultServer();  // stops, removes a temporary cert directory
  KeyVaultServer(const KeyVaultServer&) = delete;
  KeyVaultServer& operator=(const KeyVaultServer&) = delete;

  // Binds (see KeyVaultOptions::port) and serves in background threads. Idempotent.
  void start();
  // Stops accepting, ends slow answers and delays early, and joins the server thread. Idle
  // keep-alive connections are dropped within about a second. Idempotent.
  void stop();
  [[nodiscard]] bool running() const;

  // Valid after the first start().
  [[nodiscard]] int port() const;
  // "127.0.0.1:<port>": the masterKey's keyVaultEndpoint.
  [[nodiscard]] std::string endpoint() const;
  // "https://127.0.0.1:<port>"
  [[nodiscard]] std::string url() const;
  // The CA certificate (PEM) clients must trust, and the file holding it.
  [[nodiscard]] const std::string& ca_pem() const;
  [[nodiscard]] const std::string& ca_file() const;

  // Keys. Names follow Key Vault's rule: 1 to 127 of [0-9A-Za-z-]. create_key on an existing
  // name adds a version, as the service does. Each returns the new version (32 hex digits).
  std::string create_key(const std::string& name);
  std::string rotate_key(const std::string& name);  // std::out_of_range when unknown
  [[nodiscard]] bool has_key(const std::string& name) const;
  [[nodiscard]] std::string latest_version(const std::string& name) const;
  [[nodiscard]] std::vector<std::string> versions(const std::string& name) const;  // oldest first
  // The public half of a key version (latest when `version` is empty) as a PEM
  // SubjectPublicKeyInfo, as Key Vault publishes it (GET /keys/{name}/{version}): lets a test
  // wrap independently of the emulator. std::out_of_range when unknown.
  [[nodiscard]] std::string public_key_pem(const std::string& name,
                                           const std::string& version = {}) const;
  // "https://<endpoint>/keys/<name>/<version>", the `kid` Key Vault answers with.
  [[nodiscard]] std::string key_id(const std::string& name, const std::string& version) const;

  // Access. restrict(): only these identities (client ids) may use the key from now on.
  // grant(): adds one to a restricted key (a no-op on an unrestricted key: everyone already
  // is). unrestrict(): everyone. Each throws std::out_of_range for an unknown key.
  void restrict(const std::string& name, std::set<std::string> client_ids);
  void grant(const std::string& name, const std::string& client_id);
  void unrestrict(const std::string& name);
  [[nodiscard]] bool granted(const std::string& name, const std::string& client_id) const;

  // Faults: the next `times` (>= 1) requests, after those already queued, behave as
  // `fault_case`. std::invalid_argument for a name not described above or times < 1.
  void inject(const std::string& fault_case, int times = 1);
  void clear_faults();
  void set_response_delay(std::chrono::milliseconds delay);

  // Every request answered (faults included); successful operations; 401 and 403 answers.
  [[nodiscard]] std::uint64_t requests_served() const;
  [[nodiscard]] std::uint64_t wrap_count() const;
  [[nodiscard]] std::uint64_t unwrap_count() const;
  [[nodiscard]] std::uint64_t unauthorized_count() const;
  [[nodiscard]] std::uint64_t forbidden_count() const;
  void reset_counters();

  [[nodiscard]] const KeyVaultOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True for the names inject() accepts.
bool is_key_vault_fault_case(std::string_view fault_case);

}  // namespace azkms::emulator
