// The identity endpoint emulator. Each endpoint is one cpp-httplib server on its own loopback
// port; a request goes through the same steps everywhere: count it, wait the configured delay,
// check it as the real endpoint does (400/401 with a JSON error), pick a fault (header first,
// then the injected queue), and answer in the endpoint's own token shape.
#include "emulator.hpp"

#include <fcntl.h>
#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ostream>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <ctime>
#include <deque>
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
#include "faults.hpp"
#include "http_faults.hpp"
#include "platform_token_cache.hpp"

namespace azkms::emulator {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::system_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr std::size_t kEndpointCount = kAllEndpoints.size();
constexpr std::string_view kDefaultTenant = "7f3c6b1e-4a2d-4e8f-9b0c-5d1a2e3f4a5b";
constexpr std::string_view kJwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

// An identity request is a URL and a few headers; workload identity's form body carries a
// service account token of a few KiB. Anything larger is refused (413) unread.
constexpr std::size_t kMaxRequestBody = 64 * 1024;
// Azure Arc: a challenge's key file is removed once its key is used; a challenge (its key, and
// its file if still there) lasts this long, and no more than this many are kept at once (the
// oldest goes first): clients that never answer cannot fill the key directory.
constexpr auto kArcChallengeLifetime = 60s;
constexpr std::size_t kMaxArcChallenges = 64;
// How many of the latest Arc keys arc_keys_handed_out() reports.
constexpr std::size_t kArcKeysRemembered = 4096;

std::size_t index_of(Endpoint endpoint) { return static_cast<std::size_t>(endpoint); }

std::int64_t epoch(Clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count();
}

// App Service 2017 on Linux: "MM/dd/yyyy HH:mm:ss +00:00".
std::string format_2017(Clock::time_point time) {
  const std::time_t seconds = Clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[64];
  const std::size_t length =
      std::strftime(buffer, sizeof(buffer), "%m/%d/%Y %H:%M:%S +00:00", &utc);
  return std::string(buffer, length);
}

// Query parameters of the URL only (httplib merges form bodies into req.params).
httplib::Params query_params(const httplib::Request& req) {
  httplib::Params params;
  const auto question = req.target.find('?');
  if (question != std::string::npos) {
    httplib::detail::parse_query_text(req.target.substr(question + 1), params);
  }
  return params;
}

httplib::Params form_params(const httplib::Request& req) {
  httplib::Params params;
  httplib::detail::parse_query_text(req.body, params);
  return params;
}

const std::string* param(const httplib::Params& params, const std::string& name) {
  auto it = params.find(name);
  return it == params.end() ? nullptr : &it->second;
}

// True when the parameters name any identity selector, under any endpoint's spelling: the
// endpoints that serve only one identity refuse them all rather than ignore them.
bool names_a_selector(const httplib::Params& params) {
  for (const char* selector :
       {"client_id", "object_id", "msi_res_id", "clientid", "principal_id", "mi_res_id"}) {
    if (param(params, selector) != nullptr) return true;
  }
  return false;
}

bool is_form(const httplib::Request& req) {
  return req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0;
}

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

struct Selector {
  const char* name;
  std::string Identity::*member;
};

struct Grant {
  const Identity* identity = nullptr;
  std::string resource;
  // The request's token_sha256_to_refresh (App Service, Service Fabric), if any.
  std::string token_sha256_to_refresh{};
};

std::string path_for(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::kImds:
    case Endpoint::kAzureArc:
    case Endpoint::kServiceFabric:
      return "/metadata/identity/oauth2/token";
    case Endpoint::kAppService:
    case Endpoint::kAppService2017:
    case Endpoint::kAzureMl:
      return "/msi/token";
    case Endpoint::kCloudShell:
      return "/oauth2/token";
    case Endpoint::kWorkloadIdentity:
      return "/oauth2/v2.0/token";  // after /{tenant}
  }
  return "/";
}

// The route (a regex) of the token endpoint. IMDS also takes the path with a trailing slash:
// @azure/identity appends one when AZURE_POD_IDENTITY_AUTHORITY_HOST is set, and the service
// answers it.
std::string route_for(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::kImds:
      return path_for(endpoint) + "/?";
    case Endpoint::kWorkloadIdentity:
      return R"(/([^/]+)/oauth2/v2\.0/token)";
    default:
      return path_for(endpoint);
  }
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

struct Emulator::Impl {
  struct Running {
    std::unique_ptr<ConnectionGuard> guard;  // outlives the server's threads
    std::unique_ptr<httplib::Server> server;
    std::thread thread;
    int port = 0;
  };

  // An Azure Arc challenge: the key file it named (empty once the key was used).
  struct ArcChallenge {
    std::string path;
    std::chrono::steady_clock::time_point issued;
  };

  Options options;
  TokenLedger ledger;
  PlatformTokenCache platform_cache;  // used when options.platform_token_cache
  mutable std::mutex claims_mutex;
  std::vector<std::string> claims_received;  // workload identity's `claims` form fields
  std::array<std::atomic<std::uint64_t>, kEndpointCount> served{};
  std::array<std::atomic<std::uint64_t>, kEndpointCount> issued{};
  std::array<FaultQueue, kEndpointCount> faults;
  std::atomic<std::int64_t> delay_ms{0};
  std::atomic<std::int64_t> lifetime_s{3600};
  StopSignal stop_signal;

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
  std::string arc_dir;
  std::string federated_token;
  std::string federated_token_file;

  mutable std::mutex echo_mutex;
  std::vector<std::string> echoed;  // every secret an echo case sent back

  std::mutex arc_mutex;
  std::map<std::string, ArcChallenge> arc_challenges;  // by key: outstanding challenges
  std::deque<std::string> arc_challenge_order;         // their keys, oldest first
  std::deque<std::string> arc_keys_handed_out;         // the latest keys, for tests

  explicit Impl(Options opts) : options(std::move(opts)) {
    if (options.host != "127.0.0.1" && options.host != "::1") {
      throw std::invalid_argument("emulator: host must be 127.0.0.1 or ::1 (loopback only), not '" +
                                  options.host + "'");
    }
    for (const auto& [endpoint, port] : options.ports) {
      if (port < 0 || port > 65535) {
        throw std::invalid_argument("emulator: invalid port for " +
                                    std::string(to_string(endpoint)));
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
    delay_ms = options.response_delay.count();
    lifetime_s = options.token_lifetime.count();
  }

  ~Impl() {
    stop();
    std::error_code ec;
    for (const auto& [key, challenge] : arc_challenges) fs::remove(challenge.path, ec);
    if (!temp_dir.empty()) fs::remove_all(temp_dir, ec);
  }

  void log(const std::string& line) const {
    if (options.log) options.log(line);
  }

  // ---- lifecycle ----------------------------------------------------------------------

  void prepare_files() {
    if (!temp_dir.empty()) return;
    std::string pattern = (fs::temp_directory_path() / "azkms-emulator-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("emulator: cannot create a temporary directory");
    }
    temp_dir = pattern;
    arc_dir =
        options.arc_key_directory.empty() ? temp_dir + "/arc-tokens" : options.arc_key_directory;
    fs::create_directories(arc_dir);
    if (options.arc_key_directory.empty()) {
      fs::permissions(arc_dir, fs::perms::owner_all, fs::perm_options::replace);
    }
    fs::create_directories(temp_dir + "/elsewhere");

    // A service account token as AKS projects it: a JWT for api://AzureADTokenExchange. The
    // signature is random: the endpoint compares the whole string.
    const auto now = epoch(Clock::now());
    const json header = {{"alg", "RS256"}, {"kid", "azkms-emulator"}, {"typ", "JWT"}};
    const json payload = {{"aud", json::array({"api://AzureADTokenExchange"})},
                          {"iss", "https://oidc.azkms-emulator.invalid/"},
                          {"sub", "system:serviceaccount:default:azkms"},
                          {"iat", now},
                          {"nbf", now},
                          {"exp", now + 86400}};
    federated_token = base64url_encode(header.dump()) + "." + base64url_encode(payload.dump()) +
                      "." + base64url_encode(random_hex(64));
    federated_token_file = temp_dir + "/federated-token";
    write_private_file(federated_token_file, federated_token);
  }

  static void write_private_file(const std::string& path, const std::string& contents) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("emulator: cannot write " + path);
    std::size_t written = 0;
    while (written < contents.size()) {
      const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
      if (n <= 0) {
        ::close(fd);
        throw std::runtime_error("emulator: cannot write " + path);
      }
      written += static_cast<std::size_t>(n);
    }
    ::close(fd);
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
    write_private_file(authority_cert_file, leaf.certificate_pem);
    write_private_file(authority_key_file, leaf.private_key_pem);
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

  // Certificates: readable by anyone (a client may run as another user).
  static void write_public_file(const std::string& path, const std::string& contents) {
    write_private_file(path, contents);
    fs::permissions(path,
                    fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                        fs::perms::others_read,
                    fs::perm_options::replace);
  }

  void launch(Endpoint endpoint) {
    std::unique_ptr<httplib::Server> server;
    if (endpoint == Endpoint::kServiceFabric) {
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
        throw std::runtime_error("emulator: cannot bind " + options.host + ":" +
                                 std::to_string(port) + " for " +
                                 std::string(display_name(endpoint)));
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
    const char* scheme = endpoint == Endpoint::kServiceFabric ? "https" : "http";
    return std::string(scheme) + "://" + host + ":" + std::to_string(port);
  }

  std::string host_for_url() const { return options.host == "::1" ? "[::1]" : options.host; }

  // e.g. "https://127.0.0.1:40125" (no trailing slash); ports do not change while serving.
  std::string authority_url() const {
    return "https://" + host_for_url() + ":" + std::to_string(authority.port);
  }

  std::string base_url(Endpoint endpoint) const {
    std::lock_guard lock(lifecycle_mutex);
    if (!started) throw std::logic_error("emulator: not started");
    return base_url_locked(endpoint);
  }

  std::string token_url(Endpoint endpoint) const {
    if (endpoint == Endpoint::kWorkloadIdentity) {
      return base_url(endpoint) + "/" + options.tenant_id + path_for(endpoint);
    }
    return base_url(endpoint) + path_for(endpoint);
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
    const bool post = endpoint == Endpoint::kCloudShell || endpoint == Endpoint::kWorkloadIdentity;
    const std::string path = route_for(endpoint);
    if (post) {
      server.Post(path, handler);
      server.Get(path, not_allowed);
    } else {
      server.Get(path, handler);
      server.Post(path, not_allowed);
    }
    server.Put(path, not_allowed);
    server.Patch(path, not_allowed);
    server.Delete(path, not_allowed);
    if (endpoint == Endpoint::kWorkloadIdentity) add_discovery_routes(server, guard, is_authority);
    // Where the `redirect` fault points: a valid token, so a client that follows redirects
    // visibly succeeds where it should have failed.
    server.Get("/redirect-target", [this, endpoint, &guard](const httplib::Request& req,
                                                            httplib::Response& res) {
      guard.request_arrived(req);
      log(std::string(display_name(endpoint)) + ": redirect target requested");
      const Identity* identity = default_identity(endpoint);
      const auto* resource = param(query_params(req), "resource");
      respond(endpoint, Grant{identity, resource ? *resource : "https://vault.azure.net"}, res,
              false);
    });
  }

  // ---- workload identity discovery ----------------------------------------------------

  // What MSAL-based clients fetch before the token request: the tenant's OpenID configuration
  // (/{tenant}/v2.0/.well-known/openid-configuration) and the instance discovery that leads to
  // it (/common/discovery/instance). Their URLs name the server that was asked.
  void add_discovery_routes(httplib::Server& server, ConnectionGuard& guard, bool is_authority) {
    server.Get(R"(/([^/]+)(/v2\.0)?/\.well-known/openid-configuration)",
               [this, &guard, is_authority](const httplib::Request& req, httplib::Response& res) {
                 guard.request_arrived(req);
                 openid_configuration(req, res, discovery_base(is_authority));
               });
    server.Get(R"(/[^/]+/discovery/instance)",
               [this, &guard, is_authority](const httplib::Request& req, httplib::Response& res) {
                 guard.request_arrived(req);
                 instance_discovery(req, res, discovery_base(is_authority));
               });
  }

  std::string discovery_base(bool is_authority) const {
    return is_authority ? authority_url() : base_url_unlocked(Endpoint::kWorkloadIdentity);
  }

  void openid_configuration(const httplib::Request& req, httplib::Response& res,
                            const std::string& base) {
    constexpr Endpoint kSelf = Endpoint::kWorkloadIdentity;
    const std::string tenant = req.matches[1].str();
    if (tenant != options.tenant_id) {
      reject(kSelf, res, 400, "invalid_tenant", "AADSTS90002: Tenant '" + tenant + "' not found.");
      return;
    }
    const std::string root = base + "/" + tenant;
    const json body = {
        {"issuer", root + "/v2.0"},
        {"authorization_endpoint", root + "/oauth2/v2.0/authorize"},
        {"token_endpoint", root + "/oauth2/v2.0/token"},
        {"device_authorization_endpoint", root + "/oauth2/v2.0/devicecode"},
        {"end_session_endpoint", root + "/oauth2/v2.0/logout"},
        {"jwks_uri", root + "/discovery/v2.0/keys"},
        {"token_endpoint_auth_methods_supported",
         {"client_secret_post", "private_key_jwt", "client_secret_basic"}},
        {"response_types_supported", {"code", "id_token", "code id_token", "id_token token"}},
        {"response_modes_supported", {"query", "fragment", "form_post"}},
        {"scopes_supported", {"openid", "profile", "email", "offline_access"}},
        {"subject_types_supported", {"pairwise"}},
        {"id_token_signing_alg_values_supported", {"RS256"}},
        {"request_uri_parameter_supported", false},
        {"tenant_region_scope", "NA"},
        {"cloud_instance_name", "microsoftonline.com"},
        {"cloud_graph_host_name", "graph.windows.net"},
        {"msgraph_host", "graph.microsoft.com"}};
    log("Workload identity: OpenID configuration served");
    res.status = 200;
    res.set_content(body.dump(), "application/json");
  }

  // Answers for this server's own authority only; anything else is an unknown instance, as
  // Entra ID answers for a host that is not a Microsoft cloud.
  void instance_discovery(const httplib::Request& req, httplib::Response& res,
                          const std::string& base) {
    constexpr Endpoint kSelf = Endpoint::kWorkloadIdentity;
    const auto params = query_params(req);
    const std::string* version = param(params, "api-version");
    if (version == nullptr || *version != "1.1") {
      reject(kSelf, res, 400, "invalid_request",
             "AADSTS900561: The api-version must be 1.1 for instance discovery.");
      return;
    }
    const std::string* endpoint = param(params, "authorization_endpoint");
    const std::string prefix = base + "/";
    if (endpoint == nullptr || endpoint->rfind(prefix, 0) != 0) {
      reject(kSelf, res, 400, "invalid_instance", "AADSTS50049: Unknown or invalid instance.");
      return;
    }
    const std::string tenant =
        endpoint->substr(prefix.size(), endpoint->find('/', prefix.size()) - prefix.size());
    const std::string host = base.substr(base.find("://") + 3);
    const json body = {
        {"tenant_discovery_endpoint",
         base + "/" + tenant + "/v2.0/.well-known/openid-configuration"},
        {"api-version", "1.1"},
        {"metadata",
         {{{"preferred_network", host}, {"preferred_cache", host}, {"aliases", {host}}}}}};
    log("Workload identity: instance discovery served");
    res.status = 200;
    res.set_content(body.dump(), "application/json");
  }

  // ---- the common request path --------------------------------------------------------

  void handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    const auto delay = std::chrono::milliseconds(delay_ms.load(std::memory_order_relaxed));
    if (delay.count() > 0 && !stop_signal.sleep_for(delay)) {
      set_json_error(res, 503, "unavailable", "The emulator is stopping");
      return;
    }
    std::optional<Grant> grant;
    switch (endpoint) {
      case Endpoint::kImds:
        grant = check_imds(req, res);
        break;
      case Endpoint::kAppService:
        grant = check_app_service(req, res);
        break;
      case Endpoint::kAppService2017:
        grant = check_2017(endpoint, req, res);
        break;
      case Endpoint::kAzureMl:
        grant = check_2017(endpoint, req, res);
        break;
      case Endpoint::kCloudShell:
        grant = check_cloud_shell(req, res);
        break;
      case Endpoint::kAzureArc:
        grant = check_arc(req, res);
        break;
      case Endpoint::kServiceFabric:
        grant = check_service_fabric(req, res);
        break;
      case Endpoint::kWorkloadIdentity:
        grant = check_workload(req, res);
        break;
    }
    if (!grant) return;
    if (endpoint == Endpoint::kAppService || endpoint == Endpoint::kServiceFabric) {
      const auto params = query_params(req);
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
        respond(endpoint, Grant{other_identity(grant->identity), grant->resource}, res, true);
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

  // Ports do not change while serving, so handlers read them without the lifecycle lock
  // (which stop() holds while it waits for the handlers).
  std::string base_url_unlocked(Endpoint endpoint) const { return base_url_locked(endpoint); }

  // Header case first, then the injected queue. `challenge`: the Azure Arc challenge step,
  // where only the arc-* cases apply. False when the response is already written (400 for an
  // unknown case).
  bool pick_fault(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                  bool challenge, std::string& fault) {
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
    std::string secret = echo.token ? answer.token : request_credential(endpoint, req);
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

  // The secret a request carries, as the endpoint received it; empty when it carries none.
  static std::string request_credential(Endpoint endpoint, const httplib::Request& req) {
    switch (endpoint) {
      case Endpoint::kAppService:
        return req.get_header_value("X-IDENTITY-HEADER");
      case Endpoint::kAppService2017:
      case Endpoint::kAzureMl:
        return req.get_header_value("secret");
      case Endpoint::kServiceFabric:
        return req.get_header_value("Secret");
      case Endpoint::kAzureArc: {
        const std::string authorization = req.get_header_value("Authorization");
        return authorization.rfind("Basic ", 0) == 0 ? authorization.substr(6) : std::string();
      }
      case Endpoint::kWorkloadIdentity: {
        const auto form = form_params(req);
        const std::string* assertion = param(form, "client_assertion");
        return assertion == nullptr ? std::string() : *assertion;
      }
      default:
        return {};
    }
  }

  // The endpoint's own token shape.
  void respond(Endpoint endpoint, const Grant& grant, httplib::Response& res,
               bool force_client_id) {
    std::chrono::seconds lifetime(lifetime_s.load(std::memory_order_relaxed));
    const auto now = Clock::now();
    auto expires = now + lifetime;
    std::string token;
    if (options.platform_token_cache &&
        (endpoint == Endpoint::kAppService || endpoint == Endpoint::kServiceFabric)) {
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
    const std::string lifetime_text = std::to_string(lifetime.count());
    json body;
    switch (endpoint) {
      case Endpoint::kImds:
      case Endpoint::kAzureArc:
        body = {{"access_token", token},           {"client_id", grant.identity->client_id},
                {"expires_in", lifetime_text},     {"expires_on", std::to_string(epoch(expires))},
                {"ext_expires_in", lifetime_text}, {"not_before", std::to_string(epoch(now))},
                {"resource", grant.resource},      {"token_type", "Bearer"}};
        // A current Arc agent names the user-assigned identity it answered for by every id
        // (clients accept its token only then); the system-assigned answer stays as IMDS's.
        if (endpoint == Endpoint::kAzureArc && !grant.identity->system_assigned) {
          body["object_id"] = grant.identity->object_id;
          body["msi_res_id"] = grant.identity->resource_id;
        }
        break;
      case Endpoint::kAppService:
        body = {{"access_token", token},
                {"expires_on", std::to_string(epoch(expires))},
                {"resource", grant.resource},
                {"token_type", "Bearer"},
                {"client_id", grant.identity->client_id}};
        break;
      case Endpoint::kAppService2017:
        body = {{"access_token", token},
                {"expires_on", format_2017(expires)},
                {"resource", grant.resource},
                {"token_type", "Bearer"}};
        break;
      case Endpoint::kAzureMl:
        body = {{"access_token", token},
                {"expires_in", lifetime.count()},
                {"expires_on", std::to_string(epoch(expires))},
                {"resource", grant.resource},
                {"token_type", "Bearer"}};
        break;
      case Endpoint::kCloudShell:
        body = {{"access_token", token},
                {"refresh_token", ""},
                {"expires_in", lifetime.count()},
                {"expires_on", std::to_string(epoch(expires))},
                {"not_before", std::to_string(epoch(now))},
                {"resource", grant.resource},
                {"token_type", "Bearer"}};
        break;
      case Endpoint::kServiceFabric:
        body = {{"token_type", "Bearer"},
                {"access_token", token},
                {"expires_on", epoch(expires)},
                {"resource", grant.resource}};
        break;
      case Endpoint::kWorkloadIdentity:
        body = {{"token_type", "Bearer"},
                {"expires_in", lifetime.count()},
                {"ext_expires_in", lifetime.count()},
                {"access_token", token}};
        break;
    }
    if (force_client_id) body["client_id"] = grant.identity->client_id;
    res.status = 200;
    res.set_content(body.dump(), "application/json");
  }

  // ---- identities ---------------------------------------------------------------------

  const Identity* system_identity() const {
    for (const auto& identity : options.identities) {
      if (identity.system_assigned) return &identity;
    }
    return nullptr;
  }

  const Identity* find_identity(std::string Identity::*member, const std::string& value) const {
    if (value.empty()) return nullptr;
    for (const auto& identity : options.identities) {
      if (identity.*member == value) return &identity;
    }
    return nullptr;
  }

  // The identity an endpoint serves when the request names none.
  const Identity* default_identity(Endpoint endpoint) const {
    if (endpoint == Endpoint::kAzureMl && !options.azure_ml_default_client_id.empty()) {
      return find_identity(&Identity::client_id, options.azure_ml_default_client_id);
    }
    if (const Identity* system = system_identity()) return system;
    return &options.identities.front();
  }

  const Identity* other_identity(const Identity* identity) const {
    for (const auto& candidate : options.identities) {
      if (&candidate != identity) return &candidate;
    }
    return identity;
  }

  // Mutually exclusive selectors. With none: the system-assigned identity, or (as on a VM)
  // the only user-assigned identity when there is no system-assigned one.
  std::optional<const Identity*> select(Endpoint endpoint, const httplib::Params& params,
                                        std::initializer_list<Selector> selectors,
                                        httplib::Response& res) const {
    std::vector<std::pair<const Selector*, const std::string*>> given;
    for (const Selector& selector : selectors) {
      if (const std::string* value = param(params, selector.name))
        given.emplace_back(&selector, value);
    }
    const std::string name(display_name(endpoint));
    if (given.size() > 1) {
      std::string names;
      for (const auto& [selector, value] : given) {
        names += (names.empty() ? "" : ", ") + std::string(selector->name);
      }
      log(name + ": 400 more than one identity selector");
      set_json_error(res, 400, "invalid_request",
                     "Multiple values specified for identity: " + names + ". Use only one.");
      return std::nullopt;
    }
    if (given.size() == 1) {
      const Identity* identity = find_identity(given[0].first->member, *given[0].second);
      if (identity == nullptr) {
        log(name + ": 400 identity not found (" + given[0].first->name + ")");
        set_json_error(res, 400, "invalid_request", "Identity not found");
        return std::nullopt;
      }
      return identity;
    }
    if (endpoint == Endpoint::kAzureMl && !options.azure_ml_default_client_id.empty()) {
      return default_identity(endpoint);
    }
    if (const Identity* system = system_identity()) return system;
    if (options.identities.size() == 1) return &options.identities.front();
    log(name + ": 400 no system-assigned identity and no selector");
    set_json_error(res, 400, "invalid_request",
                   "Identity not found: no system-assigned identity; name a user-assigned one");
    return std::nullopt;
  }

  // ---- per-endpoint checks ------------------------------------------------------------

  bool reject(Endpoint endpoint, httplib::Response& res, int status, const std::string& error,
              const std::string& description) const {
    log(std::string(display_name(endpoint)) + ": " + std::to_string(status) + " " + description);
    set_json_error(res, status, error, description);
    return false;
  }

  bool check_api_version(Endpoint endpoint, const httplib::Params& params,
                         std::initializer_list<std::string_view> versions,
                         httplib::Response& res) const {
    const std::string* version = param(params, "api-version");
    if (version == nullptr) {
      return reject(endpoint, res, 400, "invalid_request",
                    "Required query variable 'api-version' is missing");
    }
    for (std::string_view accepted : versions) {
      if (*version == accepted) return true;
    }
    return reject(endpoint, res, 400, "invalid_request",
                  "Invalid, missing or unsupported api-version '" + *version + "'");
  }

  bool check_resource(Endpoint endpoint, const httplib::Params& params, std::string& resource,
                      httplib::Response& res) const {
    const std::string* value = param(params, "resource");
    if (value == nullptr || value->empty()) {
      return reject(endpoint, res, 400, "invalid_request",
                    "Required query variable 'resource' is missing");
    }
    resource = *value;
    return true;
  }

  bool check_metadata_header(Endpoint endpoint, const httplib::Request& req,
                             httplib::Response& res) const {
    if (req.get_header_value("Metadata") != "true") {
      return reject(endpoint, res, 400, "invalid_request",
                    "Required metadata header not specified (bad_request_102)");
    }
    return true;
  }

  bool check_secret_header(Endpoint endpoint, const httplib::Request& req, const char* header,
                           const std::string& expected, httplib::Response& res) const {
    if (!req.has_header(header) || req.get_header_value(header) != expected) {
      return reject(endpoint, res, 401, "unauthorized",
                    std::string("The ") + header + " header is missing or does not match");
    }
    return true;
  }

  std::optional<Grant> check_imds(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kImds;
    // IMDS refuses anything that went through a proxy (an SSRF guard).
    if (req.has_header("X-Forwarded-For")) {
      reject(kSelf, res, 400, "invalid_request", "Request contained X-Forwarded-For header");
      return std::nullopt;
    }
    const auto params = query_params(req);
    Grant grant;
    if (!check_metadata_header(kSelf, req, res) ||
        !check_api_version(kSelf, params, {"2018-02-01"}, res) ||
        !check_resource(kSelf, params, grant.resource, res)) {
      return std::nullopt;
    }
    auto identity = select(kSelf, params,
                           {{"client_id", &Identity::client_id},
                            {"object_id", &Identity::object_id},
                            {"msi_res_id", &Identity::resource_id}},
                           res);
    if (!identity) return std::nullopt;
    grant.identity = *identity;
    return grant;
  }

  std::optional<Grant> check_app_service(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kAppService;
    const auto params = query_params(req);
    Grant grant;
    if (!check_secret_header(kSelf, req, "X-IDENTITY-HEADER", options.identity_header, res) ||
        !check_api_version(kSelf, params, {"2019-08-01"}, res) ||
        !check_resource(kSelf, params, grant.resource, res)) {
      return std::nullopt;
    }
    auto identity = select(kSelf, params,
                           {{"client_id", &Identity::client_id},
                            {"principal_id", &Identity::object_id},
                            {"object_id", &Identity::object_id},
                            {"mi_res_id", &Identity::resource_id}},
                           res);
    if (!identity) return std::nullopt;
    grant.identity = *identity;
    return grant;
  }

  // App Service 2017-09-01 and Azure ML: only `clientid` selects; any other parameter is
  // ignored, so a client sending `client_id` silently gets the default identity.
  std::optional<Grant> check_2017(Endpoint endpoint, const httplib::Request& req,
                                  httplib::Response& res) {
    const auto params = query_params(req);
    Grant grant;
    if (!check_secret_header(endpoint, req, "secret", options.msi_secret, res) ||
        !check_api_version(endpoint, params, {"2017-09-01"}, res) ||
        !check_resource(endpoint, params, grant.resource, res)) {
      return std::nullopt;
    }
    auto identity = select(endpoint, params, {{"clientid", &Identity::client_id}}, res);
    if (!identity) return std::nullopt;
    grant.identity = *identity;
    return grant;
  }

  std::optional<Grant> check_cloud_shell(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kCloudShell;
    if (!check_metadata_header(kSelf, req, res)) return std::nullopt;
    if (!is_form(req)) {
      reject(kSelf, res, 400, "invalid_request",
             "The body must be application/x-www-form-urlencoded");
      return std::nullopt;
    }
    const auto form = form_params(req);
    const auto query = query_params(req);
    Grant grant;
    if (!check_resource(kSelf, form, grant.resource, res)) return std::nullopt;
    if (names_a_selector(form) || names_a_selector(query)) {
      reject(kSelf, res, 400, "invalid_request",
             "Cloud Shell supports only the system-assigned identity");
      return std::nullopt;
    }
    grant.identity = default_identity(kSelf);
    return grant;
  }

  std::optional<Grant> check_service_fabric(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kServiceFabric;
    const auto params = query_params(req);
    Grant grant;
    if (!check_secret_header(kSelf, req, "Secret", options.identity_header, res) ||
        !check_api_version(kSelf, params, {"2019-07-01-preview"}, res) ||
        !check_resource(kSelf, params, grant.resource, res)) {
      return std::nullopt;
    }
    if (names_a_selector(params)) {
      reject(kSelf, res, 400, "invalid_request",
             "Service Fabric selects the identity by cluster configuration, not per request");
      return std::nullopt;
    }
    grant.identity = default_identity(kSelf);
    return grant;
  }

  std::optional<Grant> check_arc(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kAzureArc;
    const auto params = query_params(req);
    Grant grant;
    if (!check_metadata_header(kSelf, req, res) ||
        !check_api_version(kSelf, params, {"2019-11-01", "2020-06-01"}, res) ||
        !check_resource(kSelf, params, grant.resource, res)) {
      return std::nullopt;
    }
    if (!arc_authorized(req)) {
      arc_challenge(req, res);
      return std::nullopt;
    }
    auto identity = select(kSelf, params,
                           {{"client_id", &Identity::client_id},
                            {"object_id", &Identity::object_id},
                            {"msi_res_id", &Identity::resource_id}},
                           res);
    if (!identity) return std::nullopt;
    grant.identity = *identity;
    return grant;
  }

  // True when the request answers an outstanding challenge. The key file has served its
  // purpose and is removed; the key stays good until the challenge expires, so that a client
  // resending its answer (libcurl does, when a reused connection drops) is still served.
  bool arc_authorized(const httplib::Request& req) {
    const std::string authorization = req.get_header_value("Authorization");
    constexpr std::string_view kBasic = "Basic ";
    if (authorization.rfind(kBasic, 0) != 0) return false;
    std::lock_guard lock(arc_mutex);
    expire_arc_challenges_locked();
    const auto it = arc_challenges.find(authorization.substr(kBasic.size()));
    if (it == arc_challenges.end()) return false;
    remove_key_file(it->second);
    return true;
  }

  void arc_challenge(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kAzureArc;
    std::string fault;
    if (!pick_fault(kSelf, req, res, true, fault)) return;
    set_json_error(res, 401, "unauthorized",
                   "Read the key file named in WWW-Authenticate and send its contents as "
                   "Authorization: Basic <key>");
    if (fault == "arc-no-realm") {
      log("Azure Arc: 401 challenge without WWW-Authenticate (fault)");
      return;
    }
    std::string key = random_hex(32);
    std::string directory = arc_dir;
    std::string file_name = random_hex(8) + ".key";
    if (fault == "arc-outside-dir") directory = temp_dir + "/elsewhere";
    if (fault == "arc-not-key") file_name = random_hex(8) + ".txt";
    if (fault == "arc-big-key") key = random_hex(4096);  // 8192 bytes
    const std::string path = directory + "/" + file_name;
    {
      std::lock_guard lock(arc_mutex);
      expire_arc_challenges_locked();
      while (arc_challenges.size() >= kMaxArcChallenges) {
        forget_arc_challenge_locked(arc_challenge_order.front());
      }
      write_private_file(path, key);
      // Even the faulty files hold a valid key: a client that reads one anyway gets a token,
      // which is how a test sees that it did.
      arc_challenges[key] = ArcChallenge{path, std::chrono::steady_clock::now()};
      arc_challenge_order.push_back(key);
      arc_keys_handed_out.push_back(key);
      if (arc_keys_handed_out.size() > kArcKeysRemembered) arc_keys_handed_out.pop_front();
    }
    res.set_header("WWW-Authenticate",
                   fault == "arc-bad-realm" ? std::string("Basic realm") : "Basic realm=" + path);
    log("Azure Arc: 401 challenge, key file " + path +
        (fault.empty() ? "" : " (fault " + fault + ")"));
  }

  // Removes the challenges older than their lifetime, with their key files.
  void expire_arc_challenges_locked() {
    const auto now = std::chrono::steady_clock::now();
    while (!arc_challenge_order.empty() &&
           now - arc_challenges.at(arc_challenge_order.front()).issued > kArcChallengeLifetime) {
      forget_arc_challenge_locked(arc_challenge_order.front());
    }
  }

  static void remove_key_file(ArcChallenge& challenge) {
    if (challenge.path.empty()) return;
    std::error_code ec;
    fs::remove(challenge.path, ec);
    challenge.path.clear();
  }

  void forget_arc_challenge_locked(std::string key) {  // a copy: it may name a deque element
    const auto it = arc_challenges.find(key);
    if (it == arc_challenges.end()) return;
    remove_key_file(it->second);
    arc_challenges.erase(it);
    arc_challenge_order.erase(
        std::find(arc_challenge_order.begin(), arc_challenge_order.end(), key));
  }

  std::optional<Grant> check_workload(const httplib::Request& req, httplib::Response& res) {
    constexpr Endpoint kSelf = Endpoint::kWorkloadIdentity;
    const std::string tenant = req.matches.size() > 1 ? req.matches[1].str() : "";
    if (tenant != options.tenant_id) {
      reject(kSelf, res, 400, "invalid_request", "AADSTS90002: Tenant '" + tenant + "' not found.");
      return std::nullopt;
    }
    if (!is_form(req)) {
      reject(kSelf, res, 400, "invalid_request",
             "AADSTS900144: The request body must be application/x-www-form-urlencoded.");
      return std::nullopt;
    }
    const auto form = form_params(req);
    if (const std::string* claims = param(form, "claims")) {
      std::lock_guard lock(claims_mutex);
      claims_received.push_back(*claims);
    }
    const std::string* grant_type = param(form, "grant_type");
    if (grant_type == nullptr || *grant_type != "client_credentials") {
      reject(kSelf, res, 400, "unsupported_grant_type",
             "AADSTS70003: grant_type must be client_credentials.");
      return std::nullopt;
    }
    const std::string* assertion_type = param(form, "client_assertion_type");
    if (assertion_type == nullptr || *assertion_type != kJwtBearer) {
      reject(kSelf, res, 400, "invalid_request",
             "AADSTS900144: client_assertion_type must be " + std::string(kJwtBearer) + ".");
      return std::nullopt;
    }
    const std::string* client_id = param(form, "client_id");
    const Identity* identity =
        client_id == nullptr ? nullptr : find_identity(&Identity::client_id, *client_id);
    if (identity == nullptr) {
      reject(kSelf, res, 400, "unauthorized_client",
             "AADSTS700016: Application with the given client_id was not found in the "
             "directory.");
      return std::nullopt;
    }
    const std::string* assertion = param(form, "client_assertion");
    if (assertion == nullptr || *assertion != federated_token) {
      reject(kSelf, res, 401, "invalid_client",
             "AADSTS700213: No matching federated identity record found for the presented "
             "assertion.");
      return std::nullopt;
    }
    const std::string* scope = param(form, "scope");
    constexpr std::string_view kDefault = "/.default";
    if (scope == nullptr || scope->size() <= kDefault.size() ||
        scope->compare(scope->size() - kDefault.size(), kDefault.size(), kDefault) != 0) {
      reject(kSelf, res, 400, "invalid_scope",
             "AADSTS1002012: The scope must be <resource>/.default for client credentials.");
      return std::nullopt;
    }
    return Grant{identity, scope->substr(0, scope->size() - kDefault.size())};
  }

  // ---- client environments ------------------------------------------------------------

  std::map<std::string, std::string> client_environment(Endpoint endpoint) const {
    const std::string base = base_url(endpoint);
    switch (endpoint) {
      case Endpoint::kImds:
        return {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", base}};
      case Endpoint::kAppService:
        return {{"IDENTITY_ENDPOINT", token_url(endpoint)},
                {"IDENTITY_HEADER", options.identity_header}};
      case Endpoint::kAppService2017:
        return {{"MSI_ENDPOINT", token_url(endpoint)}, {"MSI_SECRET", options.msi_secret}};
      case Endpoint::kAzureMl: {
        std::map<std::string, std::string> env = {{"MSI_ENDPOINT", token_url(endpoint)},
                                                  {"MSI_SECRET", options.msi_secret}};
        if (!options.azure_ml_default_client_id.empty()) {
          env["DEFAULT_IDENTITY_CLIENT_ID"] = options.azure_ml_default_client_id;
        }
        return env;
      }
      case Endpoint::kCloudShell:
        return {{"MSI_ENDPOINT", token_url(endpoint)}};
      case Endpoint::kAzureArc:
        // The last variable is azkms's development override: the client accepts key files
        // only from /var/opt/azcmagent/tokens otherwise, and the emulator cannot write there.
        return {{"IDENTITY_ENDPOINT", token_url(endpoint)},
                {"IMDS_ENDPOINT", base},
                {"AZKMS_ARC_TOKEN_DIRECTORY", arc_dir}};
      case Endpoint::kServiceFabric:
        return {{"IDENTITY_ENDPOINT", token_url(endpoint)},
                {"IDENTITY_HEADER", options.identity_header},
                {"IDENTITY_SERVER_THUMBPRINT", sf_certificate.sha1_thumbprint},
                {"AZKMS_SERVICE_FABRIC_CERT_FILE", sf_certificate_file}};
      case Endpoint::kWorkloadIdentity: {
        const Identity* identity = nullptr;
        for (const auto& candidate : options.identities) {
          if (!candidate.system_assigned) {
            identity = &candidate;
            break;
          }
        }
        if (identity == nullptr) identity = &options.identities.front();
        return {{"AZURE_AUTHORITY_HOST", base + "/"},
                {"AZURE_CLIENT_ID", identity->client_id},
                {"AZURE_TENANT_ID", options.tenant_id},
                {"AZURE_FEDERATED_TOKEN_FILE", federated_token_file}};
      }
    }
    return {};
  }

  std::map<std::string, std::string> sdk_environment(Endpoint endpoint) const {
    std::map<std::string, std::string> env = client_environment(endpoint);
    if (endpoint == Endpoint::kWorkloadIdentity) {
      std::lock_guard lock(lifecycle_mutex);
      env["AZURE_AUTHORITY_HOST"] = authority_url() + "/";
    }
    if (endpoint == Endpoint::kAzureMl) {
      // Azure ML always sets it; MSAL-based clients send it as the identity when none is named.
      env.try_emplace("DEFAULT_IDENTITY_CLIENT_ID", default_identity(endpoint)->client_id);
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
  std::lock_guard lock(impl_->claims_mutex);
  return impl_->claims_received;
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
  return impl_->arc_dir;
}

std::vector<std::string> Emulator::arc_keys_handed_out() const {
  std::lock_guard lock(impl_->arc_mutex);
  return {impl_->arc_keys_handed_out.begin(), impl_->arc_keys_handed_out.end()};
}

std::string Emulator::federated_token() const {
  std::lock_guard lock(impl_->lifecycle_mutex);
  return impl_->federated_token;
}

std::vector<std::string> Emulator::echoed_secrets() const {
  std::lock_guard lock(impl_->echo_mutex);
  return impl_->echoed;
}

}  // namespace azkms::emulator
