// The identity endpoint emulator. Each endpoint is one cpp-httplib server on its own loopback
// port; a request goes through the same steps everywhere: count it, wait the configured delay,
// check it as the real endpoint does (400/401 with a JSON error), pick a fault (header first,
// then the injected queue), and answer in the endpoint's own token shape. What differs per
// endpoint (its route, check, token shape, secret and client environment) is in its own file
// under endpoints/; this file holds the servers, the shared request path and the public API.
#include "emulator.hpp"

#include <httplib.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <ostream>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>

#include "certificate.hpp"
#include "certificate_authority.hpp"
#include "connection_guard.hpp"
#include "encoding.hpp"
#include "endpoints/azure_arc.hpp"
#include "endpoints/common.hpp"
#include "endpoints/endpoint.hpp"
#include "endpoints/workload_identity.hpp"
#include "faults.hpp"
#include "http_faults.hpp"
#include "platform_token_cache.hpp"

namespace azkms::emulator {
namespace {

using json = nlohmann::json;
using endpoints::Clock;
using endpoints::EndpointBehaviour;
using endpoints::Grant;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr std::size_t kEndpointCount = kAllEndpoints.size();
constexpr std::string_view kDefaultTenant = "7f3c6b1e-4a2d-4e8f-9b0c-5d1a2e3f4a5b";

// An identity request is a URL and a few headers; workload identity's form body carries a
// service account token of a few KiB. Anything larger is refused (413) unread.
constexpr std::size_t kMaxRequestBody = 64 * 1024;

std::size_t index_of(Endpoint endpoint) { return static_cast<std::size_t>(endpoint); }

// The JSON error body for answers httplib makes itself, before any handler runs.
void set_http_error(httplib::Response& res) {
  switch (res.status) {
    case 400:
      set_json_error(res, 400, "invalid_request", "The request is not valid HTTP.");
      break;
    case 404:
      set_json_error(res, 404, "not_found", "This endpoint serves no such path.");
      break;
    case 413:
      set_json_error(res, 413, "request_too_large",
                     "The request body is larger than the " + std::to_string(kMaxRequestBody) +
                         " bytes an identity request may have.");
      break;
    case 414:
      set_json_error(res, 414, "uri_too_long", "The request URL is too long.");
      break;
    default:
      set_json_error(res, res.status, "http_error",
                     "The request failed with HTTP " + std::to_string(res.status) + ".");
  }
}

// Certificates: readable by anyone (a client may run as another user).
void write_public_file(const std::string& path, const std::string& contents) {
  endpoints::write_private_file(path, contents);
  fs::permissions(path,
                  fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                      fs::perms::others_read,
                  fs::perm_options::replace);
}

// Options with their defaults filled in; throws std::invalid_argument for invalid ones.
Options validated(Options options) {
  if (options.host != "127.0.0.1" && options.host != "::1") {
    throw std::invalid_argument("emulator: host must be 127.0.0.1 or ::1 (loopback only), not '" +
                                options.host + "'");
  }
  for (const auto& [endpoint, port] : options.ports) {
    if (port < 0 || port > 65535) {
      throw std::invalid_argument("emulator: invalid port for " + std::string(to_string(endpoint)));
    }
  }
  if (options.identities.empty()) options.identities = default_identities();
  std::set<std::string> client_ids;
  for (const auto& identity : options.identities) {
    if (identity.client_id.empty()) {
      throw std::invalid_argument("emulator: every identity needs a client id");
    }
    if (!client_ids.insert(identity.client_id).second) {
      throw std::invalid_argument("emulator: duplicate identity client id " + identity.client_id);
    }
  }
  if (!options.azure_ml_default_client_id.empty() &&
      client_ids.count(options.azure_ml_default_client_id) == 0) {
    throw std::invalid_argument("emulator: azure_ml_default_client_id names no identity");
  }
  if (options.token_lifetime.count() <= 0) {
    throw std::invalid_argument("emulator: token_lifetime must be positive");
  }
  if (options.identity_header.empty()) options.identity_header = random_hex(16);
  if (options.msi_secret.empty()) options.msi_secret = random_hex(16);
  if (options.tenant_id.empty()) options.tenant_id = std::string(kDefaultTenant);
  return options;
}

}  // namespace

std::vector<Identity> default_identities() {
  return {
      Identity{true, "5a1c0f8e-2b3d-4c6e-8f70-000000000001", "9e2d4b6a-1c3f-4a5b-8d7e-000000000001",
               ""},
      Identity{false, "5a1c0f8e-2b3d-4c6e-8f70-0000000000a1",
               "9e2d4b6a-1c3f-4a5b-8d7e-0000000000a1",
               "/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/azkms-emulator/"
               "providers/Microsoft.ManagedIdentity/userAssignedIdentities/azkms-app"},
      Identity{false, "5a1c0f8e-2b3d-4c6e-8f70-0000000000b2",
               "9e2d4b6a-1c3f-4a5b-8d7e-0000000000b2",
               "/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/azkms-emulator/"
               "providers/Microsoft.ManagedIdentity/userAssignedIdentities/azkms-batch"},
  };
}

std::string_view to_string(Endpoint endpoint) noexcept {
  switch (endpoint) {
    case Endpoint::kImds:
      return "imds";
    case Endpoint::kAppService:
      return "app-service";
    case Endpoint::kAppService2017:
      return "app-service-2017";
    case Endpoint::kAzureMl:
      return "azure-ml";
    case Endpoint::kCloudShell:
      return "cloud-shell";
    case Endpoint::kAzureArc:
      return "azure-arc";
    case Endpoint::kServiceFabric:
      return "service-fabric";
    case Endpoint::kWorkloadIdentity:
      return "workload-identity";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& os, Endpoint endpoint) { return os << to_string(endpoint); }

std::string_view display_name(Endpoint endpoint) noexcept {
  switch (endpoint) {
    case Endpoint::kImds:
      return "IMDS";
    case Endpoint::kAppService:
      return "App Service";
    case Endpoint::kAppService2017:
      return "App Service 2017";
    case Endpoint::kAzureMl:
      return "Azure ML";
    case Endpoint::kCloudShell:
      return "Cloud Shell";
    case Endpoint::kAzureArc:
      return "Azure Arc";
    case Endpoint::kServiceFabric:
      return "Service Fabric";
    case Endpoint::kWorkloadIdentity:
      return "Workload identity";
  }
  return "unknown";
}

std::optional<Endpoint> parse_endpoint(std::string_view name) noexcept {
  for (Endpoint endpoint : kAllEndpoints) {
    if (to_string(endpoint) == name) return endpoint;
  }
  return std::nullopt;
}

struct Emulator::Impl final : endpoints::EndpointHost {
  struct Running {
    std::unique_ptr<ConnectionGuard> guard;  // outlives the server's threads
    std::unique_ptr<httplib::Server> server;
    std::thread thread;
    int port = 0;
  };

  const Options options;  // first: the endpoints keep a reference to it
  TokenLedger ledger;
  PlatformTokenCache platform_cache;  // used when options.platform_token_cache
  std::array<std::atomic<std::uint64_t>, kEndpointCount> served{};
  std::array<std::atomic<std::uint64_t>, kEndpointCount> issued{};
  std::array<FaultQueue, kEndpointCount> faults;
  std::atomic<std::int64_t> delay_ms{0};
  std::atomic<std::int64_t> lifetime_s{3600};
  StopSignal stop_signal;

  // Each endpoint's own behaviour, in the order of Endpoint; Azure Arc and workload identity
  // also by type, for the accessors that report their state.
  std::array<std::unique_ptr<EndpointBehaviour>, kEndpointCount> behaviours;
  endpoints::AzureArc* arc = nullptr;
  endpoints::WorkloadIdentity* workload = nullptr;

  mutable std::mutex lifecycle_mutex;
  bool started = false;
  std::array<Running, kEndpointCount> servers;
  Certificate sf_certificate;
  // The emulator's CA (also Key Vault's, see certificate_authority()) and the files clients are
  // given: the CA alone, the CA plus Service Fabric's self-signed certificate (what a client of
  // any endpoint trusts), and Service Fabric's certificate alone.
  std::shared_ptr<const CertificateAuthority> ca;
  std::string ca_file;
  std::string trust_bundle_file;
  std::string sf_certificate_file;
  // Workload identity's HTTPS authority (real clients refuse a plain-HTTP one): the same token
  // endpoint as the plain-HTTP server, plus the discovery documents, with a certificate from `ca`.
  Running authority;
  std::string authority_cert_file;
  std::string authority_key_file;
  std::string temp_dir;  // created by start(), removed by the destructor

  mutable std::mutex echo_mutex;
  std::vector<std::string> echoed;  // every secret an echo case sent back

  explicit Impl(Options opts) : options(validated(std::move(opts))) {
    auto arc_endpoint = std::make_unique<endpoints::AzureArc>(options, *this);
    auto workload_endpoint = std::make_unique<endpoints::WorkloadIdentity>(options, *this);
    arc = arc_endpoint.get();
    workload = workload_endpoint.get();
    behaviours = {endpoints::make_imds(options),
                  endpoints::make_app_service(options),
                  endpoints::make_app_service_2017(options),
                  endpoints::make_azure_ml(options),
                  endpoints::make_cloud_shell(options),
                  std::move(arc_endpoint),
                  endpoints::make_service_fabric(options, *this),
                  std::move(workload_endpoint)};
    for (Endpoint endpoint : kAllEndpoints) {
      if (behaviour(endpoint).endpoint() != endpoint) {
        throw std::logic_error("emulator: endpoints out of order at " +
                               std::string(to_string(endpoint)));
      }
    }
    delay_ms = options.response_delay.count();
    lifetime_s = options.token_lifetime.count();
  }

  ~Impl() {
    stop();
    std::error_code ec;
    if (!temp_dir.empty()) fs::remove_all(temp_dir, ec);
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  EndpointBehaviour& behaviour(Endpoint endpoint) const { return *behaviours[index_of(endpoint)]; }

  void log(const std::string& line) const {
    if (options.log) options.log(line);
  }

  // ---- lifecycle ----------------------------------------------------------------------

  // Once per emulator: the temporary directory, and each endpoint's files in it.
  void prepare_files() {
    if (!temp_dir.empty()) return;
    std::string pattern = (fs::temp_directory_path() / "azkms-emulator-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("emulator: cannot create a temporary directory");
    }
    temp_dir = pattern;
    for (const auto& endpoint : behaviours) endpoint->prepare(temp_dir);
  }

  void start() {
    std::lock_guard lock(lifecycle_mutex);
    if (started) return;
    prepare_files();
    if (sf_certificate.sha1_thumbprint.empty()) {
      CertificateOptions cert_options;
      cert_options.common_name = "127.0.0.1";
      cert_options.ip_addresses = {"127.0.0.1", "::1"};
      sf_certificate = make_self_signed_certificate(cert_options);
    }
    prepare_tls_files();
    stop_signal.reset();
    try {
      for (Endpoint endpoint : kAllEndpoints) launch(endpoint);
      launch_authority();
    } catch (...) {
      shutdown_servers();
      throw;
    }
    started = true;
  }

  // Once per emulator: the CA, the authority's certificate, and the PEM files clients trust.
  void prepare_tls_files() {
    if (ca) return;
    auto authority_ca = std::make_shared<CertificateAuthority>("azkms emulator CA");
    PemCertificate leaf = authority_ca->issue_server_certificate(
        "azkms emulator workload identity authority", {"localhost"}, {"127.0.0.1", "::1"});
    authority_cert_file = temp_dir + "/authority-certificate.pem";
    authority_key_file = temp_dir + "/authority-key.pem";
    endpoints::write_private_file(authority_cert_file, leaf.certificate_pem);
    endpoints::write_private_file(authority_key_file, leaf.private_key_pem);
    OPENSSL_cleanse(leaf.private_key_pem.data(), leaf.private_key_pem.size());
    ca_file = temp_dir + "/ca.pem";
    write_public_file(ca_file, authority_ca->certificate_pem());
    sf_certificate_file = temp_dir + "/service-fabric-certificate.pem";
    write_public_file(sf_certificate_file, sf_certificate.certificate_pem);
    trust_bundle_file = temp_dir + "/trust-bundle.pem";
    write_public_file(trust_bundle_file,
                      authority_ca->certificate_pem() + sf_certificate.certificate_pem);
    ca = std::move(authority_ca);
  }

  void launch(Endpoint endpoint) {
    std::unique_ptr<httplib::Server> server;
    if (behaviour(endpoint).serves_self_signed_https()) {
      server = std::make_unique<httplib::SSLServer>(sf_certificate.x509.get(),
                                                    sf_certificate.private_key.get());
    } else {
      server = std::make_unique<httplib::Server>();
    }
    auto fixed = options.ports.find(endpoint);
    const int port = fixed != options.ports.end() ? fixed->second : 0;
    serve(endpoint, servers[index_of(endpoint)], std::move(server), port, false);
    log(std::string(display_name(endpoint)) + ": listening on " + base_url_locked(endpoint));
  }

  void launch_authority() {
    serve(Endpoint::kWorkloadIdentity, authority,
          std::make_unique<httplib::SSLServer>(authority_cert_file.c_str(),
                                               authority_key_file.c_str()),
          0, true);
    log("Workload identity: HTTPS authority on " + authority_url());
  }
  // Sets up `server` for `endpoint` (the HTTPS authority when `is_authority`), binds it (to
  // `port`, or a free port when 0) and serves in a new thread.
  void serve(Endpoint endpoint, Running& running, std::unique_ptr<httplib::Server> fresh, int port,
             bool is_authority) {
    running.server = std::move(fresh);
    httplib::Server& server = *running.server;
    if (!server.is_valid()) {
      throw std::runtime_error("emulator: cannot set up the " +
                               std::string(display_name(endpoint)) + " server");
    }
    // Short idle and write timeouts: stop() waits for the worker threads, and a worker holds
    // an idle keep-alive connection for this long.
    server.set_keep_alive_timeout(1);
    // Without it, Nagle plus delayed ACKs stall a reused connection by ~40 ms now and then.
    server.set_tcp_nodelay(true);
    server.set_write_timeout(2, 0);
    server.set_read_timeout(5, 0);
    ServerLimits limits;
    limits.max_body_bytes = kMaxRequestBody;
    running.guard = std::make_unique<ConnectionGuard>(limits);
    running.guard->install(server, set_http_error);
    add_routes(endpoint, server, *running.guard, is_authority);

    if (port != 0) {
      if (!server.bind_to_port(options.host, port)) {
        throw std::runtime_error("emulator: cannot listen on " + options.host + ":" +
                                 std::to_string(port) + " for " +
                                 std::string(display_name(endpoint)) + std::string(kPortInUseHint));
      }
      running.port = port;
    } else {
      running.port = server.bind_to_any_port(options.host);
      if (running.port <= 0) {
        throw std::runtime_error("emulator: cannot bind a port on " + options.host);
      }
    }
    running.guard->watch(running.port);
    running.thread = std::thread([&server] { server.listen_after_bind(); });
    // stop() is a no-op until the accept loop runs; do not return before it does.
    while (!server.is_running()) std::this_thread::sleep_for(1ms);
  }

  void shutdown_servers() {
    stop_signal.trigger();
    std::vector<Running*> all;
    for (auto& running : servers) all.push_back(&running);
    all.push_back(&authority);
    for (Running* running : all) {
      if (running->server) running->server->stop();
      // A client still sending its request must not keep stop() waiting.
      if (running->guard) running->guard->release_waiting();
    }
    for (Running* running : all) {
      if (running->thread.joinable()) running->thread.join();
      running->server.reset();
      running->guard.reset();
      running->port = 0;
    }
  }

  void stop() {
    std::lock_guard lock(lifecycle_mutex);
    if (!started) return;
    shutdown_servers();
    started = false;
  }

  // ---- addresses ----------------------------------------------------------------------

  std::string base_url_locked(Endpoint endpoint) const {
    const int port = servers[index_of(endpoint)].port;
    const std::string host = options.host == "::1" ? "[::1]" : options.host;
    const char* scheme = behaviour(endpoint).serves_self_signed_https() ? "https" : "http";
    return std::string(scheme) + "://" + host + ":" + std::to_string(port);
  }

  std::string host_for_url() const { return options.host == "::1" ? "[::1]" : options.host; }

  // e.g. "https://127.0.0.1:40125" (no trailing slash); ports do not change while serving.
  std::string authority_url() const override {
    return "https://" + host_for_url() + ":" + std::to_string(authority.port);
  }

  std::string base_url(Endpoint endpoint) const {
    std::lock_guard lock(lifecycle_mutex);
    if (!started) throw std::logic_error("emulator: not started");
    return base_url_locked(endpoint);
  }

  std::string token_url(Endpoint endpoint) const {
    return base_url(endpoint) + behaviour(endpoint).token_path();
  }

  // Ports do not change while serving, so handlers read them without the lifecycle lock
  // (which stop() holds while it waits for the handlers).
  std::string base_url_unlocked(Endpoint endpoint) const override {
    return base_url_locked(endpoint);
  }

  // Set by start(), before any server runs.
  const std::string& service_fabric_thumbprint_unlocked() const override {
    return sf_certificate.sha1_thumbprint;
  }
  const std::string& service_fabric_certificate_file_unlocked() const override {
    return sf_certificate_file;
  }

  // ---- routing ------------------------------------------------------------------------

  void add_routes(Endpoint endpoint, httplib::Server& server, ConnectionGuard& guard,
                  bool is_authority) {
    server.set_pre_routing_handler([this, endpoint](const httplib::Request&, httplib::Response&) {
      served[index_of(endpoint)].fetch_add(1, std::memory_order_relaxed);
      return httplib::Server::HandlerResponse::Unhandled;
    });
    auto handler = [this, endpoint, &guard](const httplib::Request& req, httplib::Response& res) {
      guard.request_arrived(req);
      handle(endpoint, req, res);
    };
    auto not_allowed = [this, endpoint, &guard](const httplib::Request& req,
                                                httplib::Response& res) {
      guard.request_arrived(req);
      log(std::string(display_name(endpoint)) + ": 405 for " + req.method);
      set_json_error(res, 405, "method_not_allowed",
                     "The token endpoint does not support " + req.method);
    };
    EndpointBehaviour& own = behaviour(endpoint);
    const std::string path = own.route();
    if (own.token_by_post()) {
      server.Post(path, handler);
      server.Get(path, not_allowed);
    } else {
      server.Get(path, handler);
      server.Post(path, not_allowed);
    }
    server.Put(path, not_allowed);
    server.Patch(path, not_allowed);
    server.Delete(path, not_allowed);
    own.add_routes(server, guard, is_authority);
    // Where the `redirect` fault points: a valid token, so a client that follows redirects
    // visibly succeeds where it should have failed.
    server.Get("/redirect-target", [this, endpoint, &guard](const httplib::Request& req,
                                                            httplib::Response& res) {
      guard.request_arrived(req);
      log(std::string(display_name(endpoint)) + ": redirect target requested");
      const Identity* identity = behaviour(endpoint).default_identity();
      const auto* resource = endpoints::param(endpoints::query_params(req), "resource");
      respond(endpoint, Grant{identity, resource ? *resource : "https://vault.azure.net"}, res,
              false);
    });
  }

  // ---- the common request path --------------------------------------------------------

  void handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const auto delay = std::chrono::milliseconds(delay_ms.load(std::memory_order_relaxed));
    if (delay.count() > 0 && !stop_signal.sleep_for(delay)) {
      set_json_error(res, 503, "unavailable", "The emulator is stopping");
      return;
    }
    std::optional<Grant> grant = behaviour(endpoint).check(req, res);
    if (!grant) return;
    if (behaviour(endpoint).platform_keeps_tokens()) {
      const auto params = endpoints::query_params(req);
      if (auto hash = params.find("token_sha256_to_refresh"); hash != params.end()) {
        grant->token_sha256_to_refresh = hash->second;
      }
    }

    std::string fault;
    if (!pick_fault(endpoint, req, res, false, fault)) return;
    if (!fault.empty()) {
      log(std::string(display_name(endpoint)) + ": fault '" + fault + "'");
      TransportFaultContext context{&stop_signal, base_url_unlocked(endpoint) + "/redirect-target"};
      if (apply_transport_fault(fault, req, res, context)) return;
      if (fault == "wrong-identity") {
        respond(
            endpoint,
            Grant{endpoints::other_identity(options.identities, grant->identity), grant->resource},
            res, true);
        return;
      }
      if (auto echo = parse_echo_fault(fault)) {
        respond_echo(endpoint, *grant, *echo, req, res);
        return;
      }
      if (fault == "drivers-default") {
        const std::string token = issue(endpoint, *grant->identity, grant->resource, 70s);
        json body = {{"access_token", token},
                     {"expires_in", "70"},
                     {"token_type", "Bearer"},
                     {"resource", grant->resource}};
        res.status = 200;
        res.set_content(body.dump(), "application/json");
        return;
      }
    }
    respond(endpoint, *grant, res, false);
  }

  // Header case first, then the injected queue. `challenge`: the Azure Arc challenge step,
  // where only the arc-* cases apply. False when the response is already written (400 for an
  // unknown case).
  bool pick_fault(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                  bool challenge, std::string& fault) override {
    fault.clear();
    const std::string header(kTestParamsHeader);
    if (req.has_header(header)) {
      auto name = test_params_case(req.get_header_value(header));
      if (name) {
        const FaultCase* known = find_fault_case(*name);
        if (known == nullptr || (known->arc_challenge && endpoint != Endpoint::kAzureArc)) {
          set_json_error(res, 400, "invalid_request", "Unknown test case '" + *name + "'");
          return false;
        }
        if (known->arc_challenge == challenge) fault = *name;
        return true;
      }
    }
    auto injected = faults[index_of(endpoint)].take([challenge](std::string_view name) {
      const FaultCase* known = find_fault_case(name);
      return known != nullptr && known->arc_challenge == challenge;
    });
    if (injected) fault = *injected;
    return true;
  }

  std::string issue(Endpoint endpoint, const Identity& identity, const std::string& resource,
                    std::chrono::seconds lifetime, TokenShape shape = TokenShape::kJwtLike) {
    std::string token = ledger.issue(identity.client_id, resource, lifetime, shape);
    issued[index_of(endpoint)].fetch_add(1, std::memory_order_relaxed);
    log(std::string(display_name(endpoint)) + ": token issued to client id " + identity.client_id +
        " for " + resource);
    return token;
  }

  // An echo case: the request's own secret (or, with `token`, the token of the answer, then an
  // opaque one) sent back in one position of an answer.
  void respond_echo(Endpoint endpoint, const Grant& grant, const EchoFault& echo,
                    const httplib::Request& req, httplib::Response& res) {
    const std::chrono::seconds lifetime(lifetime_s.load(std::memory_order_relaxed));
    EchoAnswer answer;
    answer.token = issue(endpoint, *grant.identity, grant.resource, lifetime,
                         echo.token ? TokenShape::kOpaque : TokenShape::kJwtLike);
    std::string secret = echo.token ? answer.token : behaviour(endpoint).request_credential(req);
    if (secret.empty()) secret = answer.token;
    {
      std::lock_guard lock(echo_mutex);
      echoed.push_back(secret);
    }
    answer.echo = echo_form(secret, echo.form);
    answer.client_id = grant.identity->client_id;
    answer.resource = grant.resource;
    answer.redirect_target = "/redirect-target";
    apply_echo_fault(echo, answer, res);
  }

  // A token (from the platform's cache where the endpoint keeps one), in the endpoint's own
  // shape.
  void respond(Endpoint endpoint, const Grant& grant, httplib::Response& res,
               bool force_client_id) {
    std::chrono::seconds lifetime(lifetime_s.load(std::memory_order_relaxed));
    const auto now = Clock::now();
    auto expires = now + lifetime;
    std::string token;
    if (options.platform_token_cache && behaviour(endpoint).platform_keeps_tokens()) {
      bool reused = false;
      const auto entry = platform_cache.get(
          std::string(display_name(endpoint)), grant.identity->client_id, grant.resource,
          grant.token_sha256_to_refresh,
          [&] {
            return PlatformTokenCache::Entry{
                issue(endpoint, *grant.identity, grant.resource, lifetime), expires};
          },
          reused);
      if (reused) {
        log(std::string(display_name(endpoint)) + ": cached token handed back to client id " +
            grant.identity->client_id + " for " + grant.resource);
      }
      token = entry.token;
      expires = std::chrono::time_point_cast<Clock::duration>(entry.expires);
      lifetime = std::chrono::duration_cast<std::chrono::seconds>(expires - now);
    } else {
      token = issue(endpoint, *grant.identity, grant.resource, lifetime);
    }
    json body = behaviour(endpoint).token_body(
        grant, endpoints::IssuedToken{std::move(token), lifetime, now, expires});
    if (force_client_id) body["client_id"] = grant.identity->client_id;
    res.status = 200;
    res.set_content(body.dump(), "application/json");
  }

  // ---- client environments ------------------------------------------------------------

  std::map<std::string, std::string> client_environment(Endpoint endpoint) const {
    return behaviour(endpoint).client_environment(base_url(endpoint));
  }

  std::map<std::string, std::string> sdk_environment(Endpoint endpoint) const {
    std::map<std::string, std::string> env = client_environment(endpoint);
    {
      std::lock_guard lock(lifecycle_mutex);
      behaviour(endpoint).add_sdk_environment(env);
    }
    env["NODE_EXTRA_CA_CERTS"] = trust_bundle_file;
    env["SSL_CERT_FILE"] = trust_bundle_file;
    return env;
  }
};

Emulator::Emulator(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Emulator::~Emulator() = default;

void Emulator::start() { impl_->start(); }
void Emulator::stop() { impl_->stop(); }

int Emulator::port(Endpoint endpoint) const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  if (!impl_->started) throw std::logic_error("emulator: not started");
  return impl_->servers[index_of(endpoint)].port;
}

std::string Emulator::base_url(Endpoint endpoint) const { return impl_->base_url(endpoint); }

std::string Emulator::token_url(Endpoint endpoint) const { return impl_->token_url(endpoint); }

std::map<std::string, std::string> Emulator::client_environment(Endpoint endpoint) const {
  return impl_->client_environment(endpoint);
}

std::map<std::string, std::string> Emulator::sdk_environment(Endpoint endpoint) const {
  return impl_->sdk_environment(endpoint);
}

std::string Emulator::workload_identity_authority() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  if (!impl_->started) throw std::logic_error("emulator: not started");
  return impl_->authority_url() + "/";
}

std::shared_ptr<const CertificateAuthority> Emulator::certificate_authority() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  if (!impl_->started) throw std::logic_error("emulator: not started");
  return impl_->ca;
}

std::string Emulator::ca_file() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->ca_file;
}

std::string Emulator::trust_bundle_file() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->trust_bundle_file;
}

std::string Emulator::service_fabric_certificate_file() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->sf_certificate_file;
}

void Emulator::inject(Endpoint endpoint, std::string fault_case, int times) {
  const FaultCase* known = find_fault_case(fault_case);
  if (known == nullptr) {
    throw std::invalid_argument("emulator: unknown fault case '" + fault_case + "'");
  }
  if (known->arc_challenge && endpoint != Endpoint::kAzureArc) {
    throw std::invalid_argument("emulator: fault case '" + fault_case +
                                "' applies to Azure Arc only");
  }
  impl_->faults[index_of(endpoint)].push(std::move(fault_case), times);
}

void Emulator::clear_faults() {
  for (auto& queue : impl_->faults) queue.clear();
}

void Emulator::set_response_delay(std::chrono::milliseconds delay) {
  impl_->delay_ms.store(delay.count(), std::memory_order_relaxed);
}

void Emulator::set_token_lifetime(std::chrono::seconds lifetime) {
  if (lifetime.count() <= 0) throw std::invalid_argument("emulator: lifetime must be positive");
  impl_->lifetime_s.store(lifetime.count(), std::memory_order_relaxed);
}

std::uint64_t Emulator::requests_served(Endpoint endpoint) const {
  return impl_->served[index_of(endpoint)].load(std::memory_order_relaxed);
}

std::vector<std::string> Emulator::claims_received() const {
  return impl_->workload->claims_received();
}

std::uint64_t Emulator::tokens_issued(Endpoint endpoint) const {
  return impl_->issued[index_of(endpoint)].load(std::memory_order_relaxed);
}

TokenLedger& Emulator::ledger() { return impl_->ledger; }

const Options& Emulator::options() const { return impl_->options; }

std::string Emulator::service_fabric_thumbprint() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->sf_certificate.sha1_thumbprint;
}

std::string Emulator::service_fabric_certificate_pem() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->sf_certificate.certificate_pem;
}

std::string Emulator::arc_key_directory() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->arc->key_directory();
}

std::vector<std::string> Emulator::arc_keys_handed_out() const {
  return impl_->arc->keys_handed_out();
}

std::string Emulator::federated_token() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->workload->federated_token();
}

std::vector<std::string> Emulator::echoed_secrets() const {
  std::lock_guard lock(impl_->echo_mutex);
  return impl_->echoed;
}

}  // namespace azkms::emulator
