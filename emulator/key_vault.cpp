#include "key_vault.hpp"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "certificate_authority.hpp"
#include "connection_guard.hpp"
#include "encoding.hpp"
#include "faults.hpp"
#include "http_faults.hpp"
#include "text.hpp"
#include "url.hpp"

namespace azkms::emulator {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kJson = "application/json; charset=utf-8";
constexpr const char* kCaFileName = "key-vault-ca.pem";
// A wrapkey or unwrapkey body is {"alg": ..., "value": <a few hundred base64url characters>}.
constexpr std::size_t kMaxRequestBody = 64 * 1024;
// The newest data-plane version, named when refusing another one as the service does.
constexpr std::string_view kLatestApiVersion = "2025-07-01";

// Key Vault's data-plane versions: 2016-10-01, 7.0 to 7.6 (libmongocrypt 1.7.2 sends 7.1; their
// previews are 7.x-preview[.n]), and the dated versions that followed 7.6 (2025-07-01, what
// @azure/keyvault-keys 4.10 sends, and its successors and previews).
bool known_api_version(const std::string& version) {
  static const std::regex kKnown(
      R"(2016-10-01|7\.[0-6](-preview(\.[0-9]+)?)?|20(2[5-9]|[3-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(-preview)?)");
  return std::regex_match(version, kKnown);
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// Key Vault object names: 1-127 characters, letters, digits and dashes.
bool valid_key_name(std::string_view name) {
  if (name.empty() || name.size() > 127) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

// The address to bind, or std::invalid_argument: the emulator never listens beyond loopback.
std::string loopback_host(const std::string& host) {
  if (host == "localhost") return "127.0.0.1";
  // An address as bind() takes it: no brackets, no other spelling of localhost.
  const bool address = host.find_first_of("[]") == std::string::npos && !iequals(host, "localhost");
  if (address && is_loopback_host(host)) return host;
  throw std::invalid_argument("key vault emulator: refusing to listen on '" + host +
                              "': only loopback addresses (127.0.0.0/8, ::1, localhost)");
}

std::string error_body(std::string_view code, std::string_view message,
                       std::string_view inner_code = {}) {
  json error = {{"code", code}, {"message", message}};
  if (!inner_code.empty()) error["innererror"] = {{"code", inner_code}};
  return json{{"error", std::move(error)}}.dump();
}

std::string_view error_code_for_status(int status) {
  switch (status) {
    case 400:
      return "BadParameter";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 405:
      return "MethodNotAllowed";
    case 408:
      return "RequestTimeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "RequestEntityTooLarge";
    case 429:
      return "Throttled";
    case 500:
      return "InternalServerError";
    case 502:
      return "BadGateway";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "GatewayTimeout";
    default:
      return "Error";
  }
}

// "503" -> 503; anything that is not a status from 400 to 599 -> nullopt.
std::optional<int> fault_status(std::string_view fault_case) {
  if (fault_case.size() != 3) return std::nullopt;
  int status = 0;
  auto [end, ec] =
      std::from_chars(fault_case.data(), fault_case.data() + fault_case.size(), status);
  if (ec != std::errc{} || end != fault_case.data() + fault_case.size()) return std::nullopt;
  if (status < 400 || status > 599) return std::nullopt;
  return status;
}

// RSA-OAEP with SHA-256 as both the OAEP digest and the MGF1 digest: Key Vault's RSA-OAEP-256.
std::optional<std::string> rsa_oaep_256(EVP_PKEY* key, bool encrypt, std::string_view input) {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter> ctx(EVP_PKEY_CTX_new(key, nullptr));
  auto in = reinterpret_cast<const unsigned char*>(input.data());
  std::size_t out_length = 0;
  bool ok = ctx &&
            (encrypt ? EVP_PKEY_encrypt_init(ctx.get()) : EVP_PKEY_decrypt_init(ctx.get())) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) == 1 &&
            EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) == 1 &&
            (encrypt ? EVP_PKEY_encrypt(ctx.get(), nullptr, &out_length, in, input.size())
                     : EVP_PKEY_decrypt(ctx.get(), nullptr, &out_length, in, input.size())) == 1;
  std::string out;
  if (ok) {
    out.resize(out_length);
    auto out_bytes = reinterpret_cast<unsigned char*>(out.data());
    ok = (encrypt ? EVP_PKEY_encrypt(ctx.get(), out_bytes, &out_length, in, input.size())
                  : EVP_PKEY_decrypt(ctx.get(), out_bytes, &out_length, in, input.size())) == 1;
  }
  // The error queue is per thread; leave nothing behind for the next request on this worker.
  ERR_clear_error();
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    return std::nullopt;
  }
  out.resize(out_length);
  return out;
}

std::shared_ptr<EVP_PKEY> generate_rsa_key() {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  if (key == nullptr) throw std::runtime_error("key vault emulator: RSA key generation failed");
  return std::shared_ptr<EVP_PKEY>(key, PkeyDeleter{});
}

void write_file_atomically(const std::filesystem::path& path, const std::string& content) {
  std::filesystem::path temporary = path;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) throw std::runtime_error("key vault emulator: cannot write " + temporary.string());
  }
  std::filesystem::rename(temporary, path);
}

// The public half of an RSA key as Key Vault's JWK: kty, n and e (base64url, big-endian, no
// leading zeros), and the operations the service allows on an RSA key.
json public_jwk(EVP_PKEY* key) {
  const auto component = [key](const char* name) {
    BIGNUM* value = nullptr;
    if (EVP_PKEY_get_bn_param(key, name, &value) != 1) {
      throw std::runtime_error("key vault emulator: cannot read the RSA key");
    }
    std::string bytes(static_cast<std::size_t>(BN_num_bytes(value)), '\0');
    BN_bn2bin(value, reinterpret_cast<unsigned char*>(bytes.data()));
    BN_free(value);
    return base64url_encode(bytes);
  };
  return {{"kty", "RSA"},
          {"key_ops", {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}},
          {"n", component(OSSL_PKEY_PARAM_RSA_N)},
          {"e", component(OSSL_PKEY_PARAM_RSA_E)}};
}

enum class Operation { kWrap, kUnwrap };

}  // namespace

bool is_key_vault_fault_case(std::string_view fault_case) {
  return fault_status(fault_case).has_value() ||
         std::find(std::begin(kKeyVaultFaultCases), std::end(kKeyVaultFaultCases), fault_case) !=
             std::end(kKeyVaultFaultCases);
}

struct KeyVaultServer::Impl {
  struct Key {
    // (version id, key), oldest first; the last is the one used when no version is named.
    std::vector<std::pair<std::string, std::shared_ptr<EVP_PKEY>>> versions;
    std::optional<std::set<std::string>> allowed;  // nullopt: every identity
    std::map<std::string, std::int64_t> created;   // by version: seconds since the epoch
  };

  Impl(const TokenLedger& ledger_in, KeyVaultOptions options_in)
      : ledger(ledger_in),
        options(std::move(options_in)),
        host(loopback_host(options.host)),
        ca(options.certificate_authority ? options.certificate_authority
                                         : std::make_shared<const CertificateAuthority>()),
        response_delay_ms(options.response_delay.count()) {
    if (options.port < 0 || options.port > 65535) {
      throw std::invalid_argument("key vault emulator: port out of range");
    }
    port = options.port;
    std::vector<std::string> ips = {"127.0.0.1", "::1"};
    if (std::find(ips.begin(), ips.end(), host) == ips.end()) ips.push_back(host);
    PemCertificate server =
        ca->issue_server_certificate("azkms key vault emulator", {"localhost"}, ips);
    BioPtr cert_bio(BIO_new_mem_buf(server.certificate_pem.data(),
                                    static_cast<int>(server.certificate_pem.size())));
    BioPtr key_bio(BIO_new_mem_buf(server.private_key_pem.data(),
                                   static_cast<int>(server.private_key_pem.size())));
    if (cert_bio) server_cert.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    if (key_bio) {
      server_key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    }
    OPENSSL_cleanse(server.private_key_pem.data(), server.private_key_pem.size());
    if (!server_cert || !server_key) {
      throw std::runtime_error("key vault emulator: cannot load the generated certificate");
    }

    namespace fs = std::filesystem;
    if (options.cert_directory.empty()) {
      std::string pattern = (fs::temp_directory_path() / "azkms-key-vault-XXXXXX").string();
      if (mkdtemp(pattern.data()) == nullptr) {
        throw std::runtime_error("key vault emulator: cannot create a temporary directory");
      }
      cert_directory = pattern;
      owns_cert_directory = true;
    } else {
      cert_directory = options.cert_directory;
      fs::create_directories(cert_directory);
    }
    ca_file = (fs::path(cert_directory) / kCaFileName).string();
    write_file_atomically(ca_file, ca->certificate_pem());
  }

  ~Impl() {
    if (owns_cert_directory) {
      std::error_code ignored;
      std::filesystem::remove_all(cert_directory, ignored);
    }
  }

  std::string endpoint() const {
    std::string authority = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return authority + ":" + std::to_string(port);
  }

  std::string key_id(const std::string& name, const std::string& version) const {
    return "https://" + endpoint() + "/keys/" + name + "/" + version;
  }

  void log(const std::string& line) const {
    if (options.log) options.log("Key Vault: " + line);
  }

  static void set_json(httplib::Response& res, int status, const std::string& body) {
    res.status = status;
    res.set_content(body, kJson);
  }

  void set_error(httplib::Response& res, int status, std::string_view message,
                 std::string_view inner_code = {}) const {
    set_json(res, status, error_body(error_code_for_status(status), message, inner_code));
    if (status == 401) {
      res.set_header("WWW-Authenticate",
                     "Bearer authorization=\"https://login.microsoftonline.com/" +
                         options.tenant_id + "\", resource=\"" + std::string(kResource) + "\"");
    }
    if (status == 429) res.set_header("Retry-After", "1");
  }

  // Every request passes here: count, delay, then either a fault or the real answer.
  template <class Answer>
  void serve(const httplib::Request& req, httplib::Response& res, Answer&& answer) {
    if (guard) guard->request_arrived(req);
    ++requests_served;
    auto delay = std::chrono::milliseconds(response_delay_ms.load());
    if (delay > 0ms && !stop_signal.sleep_for(delay)) {
      set_error(res, 503, "The key vault emulator is stopping.");
      return;
    }

    // The header first, then the injected queue, as the identity endpoints do.
    std::optional<std::string> fault_case;
    const std::string header(kTestParamsHeader);
    if (req.has_header(header)) {
      fault_case = test_params_case(req.get_header_value(header));
      if (fault_case && !is_key_vault_fault_case(*fault_case)) {
        set_error(res, 400, "Unknown X-MongoDB-HTTP-TestParams case '" + *fault_case + "'.");
        log("400 unknown test case '" + *fault_case + "'");
        return;
      }
    }
    if (!fault_case) fault_case = faults.take([](std::string_view) { return true; });
    if (fault_case) {
      log(req.method + " " + req.path + ": fault '" + *fault_case + "'");
      apply_fault(*fault_case, req, res);
    } else {
      answer();
    }
    if (res.status == 401) ++unauthorized;
    if (res.status == 403) ++forbidden;
  }

  void apply_fault(const std::string& fault_case, const httplib::Request& req,
                   httplib::Response& res) {
    if (auto status = fault_status(fault_case)) {
      set_error(res, *status, "Fault injected by the key vault emulator: HTTP " + fault_case + ".",
                *status == 403 ? "ForbiddenByPolicy" : "");
      return;
    }
    const std::string kid = key_id("injected", std::string(32, '0'));
    if (fault_case == "truncated") {
      std::string whole = json{{"kid", kid}, {"value", std::string(342, 'A')}}.dump();
      set_json(res, 200, whole.substr(0, whole.size() / 2));
    } else if (fault_case == "bad-value") {
      set_json(res, 200, json{{"kid", kid}, {"value", "not*base64url!"}}.dump());
    } else {
      // Shared with the identity endpoints: malformed bodies, slow, giant, reset, close...
      TransportFaultContext context{&stop_signal, "https://" + endpoint() + "/redirect-target"};
      apply_transport_fault(fault_case, req, res, context);
    }
  }

  // The bearer check every key route makes first, as the service does: 401 with the challenge
  // unless the token was issued by this emulator's identity endpoints for Key Vault and is
  // still valid.
  std::optional<IssuedToken> authenticate(const httplib::Request& req, httplib::Response& res) {
    const std::string authorization = req.get_header_value("Authorization");
    const std::size_t space = authorization.find(' ');
    if (authorization.empty() || space == std::string::npos ||
        !iequals(std::string_view(authorization).substr(0, space), "Bearer")) {
      set_error(res, 401, "AKV10000: Request is missing a Bearer or PoP token.");
      return std::nullopt;
    }
    std::string_view token = std::string_view(authorization).substr(space + 1);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    std::optional<IssuedToken> issued = ledger.lookup(std::string(token));
    if (!issued) {
      set_error(res, 401,
                "The bearer token was not issued by this emulator's identity endpoints or has "
                "expired.");
      return std::nullopt;
    }
    if (issued->resource != kResource && issued->resource != std::string(kResource) + "/") {
      set_error(res, 401,
                "The bearer token was issued for '" + issued->resource + "', not for " +
                    std::string(kResource) + ".");
      return std::nullopt;
    }
    return issued;
  }

  // After authentication: an unknown version is Key Vault's BadParameter, in its words.
  bool check_api_version(const httplib::Request& req, httplib::Response& res) const {
    if (!req.has_param("api-version")) {
      set_error(res, 400, "The 'api-version' query parameter is required.");
      return false;
    }
    const std::string api_version = req.get_param_value("api-version");
    if (!known_api_version(api_version)) {
      set_error(res, 400,
                "The specified version (" + api_version +
                    ") is not recognized. Consider using the latest supported version (" +
                    std::string(kLatestApiVersion) + ").");
      return false;
    }
    return true;
  }

  struct KeyVersion {
    std::string version;
    std::shared_ptr<EVP_PKEY> key;
    std::int64_t created = 0;
  };

  // The key version a request names (the latest when `requested_version` is empty), or the
  // answer written to `res`: 400 for an invalid name, 404 KeyNotFound, 403 when `client_id` is
  // not granted the key (`permission` names what was refused).
  std::optional<KeyVersion> find_key(httplib::Response& res, const std::string& name,
                                     const std::string& requested_version,
                                     const std::string& client_id, const char* permission) {
    if (!valid_key_name(name)) {
      set_error(res, 400, "The key name '" + name + "' is not a valid Key Vault name.");
      return std::nullopt;
    }
    std::optional<KeyVersion> found;
    bool allowed = false;
    {
      std::lock_guard lock(keys_mutex);
      auto it = keys.find(name);
      if (it != keys.end()) {
        auto& versions = it->second.versions;
        auto match = requested_version.empty()
                         ? std::prev(versions.end())
                         : std::find_if(versions.begin(), versions.end(), [&](const auto& v) {
                             return v.first == requested_version;
                           });
        if (match != versions.end()) {
          found = KeyVersion{match->first, match->second, it->second.created[match->first]};
          const auto& list = it->second.allowed;
          allowed = !list || list->count(client_id) > 0;
        }
      }
    }
    if (!found) {
      std::string id = requested_version.empty() ? name : name + "/" + requested_version;
      set_json(res, 404,
               error_body("KeyNotFound",
                          "A key with (name/id) " + id + " was not found in this key vault."));
      return std::nullopt;
    }
    if (!allowed) {
      set_error(res, 403,
                "The identity with client id '" + client_id + "' does not have " + permission +
                    " permission on key '" + name + "'.",
                "ForbiddenByPolicy");
      return std::nullopt;
    }
    return found;
  }

  // GET /keys/{name}[/{version}]: the key bundle with the public JWK, as the service answers.
  void handle_get_key(const httplib::Request& req, httplib::Response& res, const std::string& name,
                      const std::string& requested_version, std::string& client_id) {
    const std::optional<IssuedToken> issued = authenticate(req, res);
    if (!issued || !check_api_version(req, res)) return;
    client_id = issued->client_id;
    const std::optional<KeyVersion> found =
        find_key(res, name, requested_version, issued->client_id, "get");
    if (!found) return;
    json jwk = public_jwk(found->key.get());
    jwk["kid"] = key_id(name, found->version);
    const json body = {{"key", jwk},
                       {"attributes",
                        {{"enabled", true},
                         {"created", found->created},
                         {"updated", found->created},
                         {"recoveryLevel", "Recoverable+Purgeable"},
                         {"recoverableDays", 90},
                         {"exportable", false}}}};
    set_json(res, 200, body.dump());
  }

  // `client_id`: set to the caller's identity once its token is accepted (for the log).
  void handle_operation(const httplib::Request& req, httplib::Response& res, Operation operation,
                        const std::string& name, const std::string& requested_version,
                        std::string& client_id) {
    const char* operation_name = operation == Operation::kWrap ? "wrapKey" : "unwrapKey";

    const std::optional<IssuedToken> issued = authenticate(req, res);
    if (!issued || !check_api_version(req, res)) return;
    client_id = issued->client_id;

    const std::optional<KeyVersion> found =
        find_key(res, name, requested_version, issued->client_id, operation_name);
    if (!found) return;
    const std::shared_ptr<EVP_PKEY>& key = found->key;
    const std::string& version = found->version;

    const json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded() || !body.is_object()) {
      return set_error(res, 400, "The request body is not a JSON object.");
    }
    auto alg = body.find("alg");
    if (alg == body.end() || !alg->is_string()) {
      return set_error(res, 400, "The request body has no 'alg'.");
    }
    if (alg->get<std::string>() != "RSA-OAEP-256") {
      return set_error(res, 400,
                       "Invalid algorithm '" + alg->get<std::string>() +
                           "': this emulator implements RSA-OAEP-256 only.");
    }
    auto value = body.find("value");
    if (value == body.end() || !value->is_string()) {
      return set_error(res, 400, "The request body has no 'value'.");
    }
    std::optional<std::string> input = base64url_decode(value->get_ref<const std::string&>());
    if (!input || input->empty()) {
      return set_error(res, 400, "'value' is not a non-empty base64url string.");
    }
    std::optional<std::string> output =
        rsa_oaep_256(key.get(), operation == Operation::kWrap, *input);
    OPENSSL_cleanse(input->data(), input->size());
    if (!output) {
      return set_error(res, 400,
                       operation == Operation::kWrap
                           ? "The value is too long to be wrapped with RSA-OAEP-256 by this key."
                           : "The value could not be unwrapped with this key version.");
    }
    set_json(res, 200,
             json{{"kid", key_id(name, version)}, {"value", base64url_encode(*output)}}.dump());
    OPENSSL_cleanse(output->data(), output->size());
    ++(operation == Operation::kWrap ? wraps : unwraps);
  }

  void install_routes(httplib::SSLServer& server) {
    server.set_keep_alive_timeout(1);  // bounds how long stop() waits for an idle connection
    server.set_read_timeout(5, 0);
    server.set_write_timeout(5, 0);
    server.set_tcp_nodelay(true);
    ServerLimits limits;
    limits.max_body_bytes = kMaxRequestBody;
    guard = std::make_unique<ConnectionGuard>(limits);
    guard->install(server, [this](httplib::Response& res) {
      if (res.status == 413) {
        set_error(res, 413,
                  "The request body is larger than the " + std::to_string(kMaxRequestBody) +
                      " bytes a key operation may have.");
      } else {
        set_error(res, res.status,
                  "The request failed with HTTP " + std::to_string(res.status) + ".");
      }
    });
    server.set_exception_handler(
        [this](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          set_error(res, 500, "The key vault emulator failed to process the request.");
        });

    auto operation_route = [this](Operation operation, bool with_version) {
      return [this, operation, with_version](const httplib::Request& req, httplib::Response& res) {
        serve(req, res, [&] {
          const std::string name = req.matches[1].str();
          const std::string version = with_version ? req.matches[2].str() : std::string();
          std::string client_id;
          handle_operation(req, res, operation, name, version, client_id);
          if (!options.log) return;
          std::string line =
              std::string(operation == Operation::kWrap ? "wrapkey " : "unwrapkey ") + name + "/" +
              (version.empty() ? "(latest)" : version) + ": " + std::to_string(res.status);
          if (!client_id.empty()) line += " for client id " + client_id;
          if (res.status != 200) {
            const json error = json::parse(res.body, nullptr, false);
            if (error.is_object() && error.contains("error")) {
              line += ": " + error["error"].value("message", std::string());
            }
          }
          log(line);
        });
      };
    };
    server.Post(R"(/keys/([^/]+)/([^/]*)/wrapkey)", operation_route(Operation::kWrap, true));
    server.Post(R"(/keys/([^/]+)/([^/]*)/unwrapkey)", operation_route(Operation::kUnwrap, true));
    server.Post(R"(/keys/([^/]+)/wrapkey)", operation_route(Operation::kWrap, false));
    server.Post(R"(/keys/([^/]+)/unwrapkey)", operation_route(Operation::kUnwrap, false));

    auto get_key_route = [this](bool with_version) {
      return [this, with_version](const httplib::Request& req, httplib::Response& res) {
        serve(req, res, [&] {
          const std::string name = req.matches[1].str();
          const std::string version = with_version ? req.matches[2].str() : std::string();
          std::string client_id;
          handle_get_key(req, res, name, version, client_id);
          log("get key " + name + "/" + (version.empty() ? "(latest)" : version) + ": " +
              std::to_string(res.status) +
              (client_id.empty() ? std::string() : " for client id " + client_id));
        });
      };
    };
    server.Get(R"(/keys/([^/]+)/?)", get_key_route(false));
    server.Get(R"(/keys/([^/]+)/([0-9A-Za-z]+))", get_key_route(true));

    auto other = [this](const httplib::Request& req, httplib::Response& res) {
      serve(req, res, [&] {
        set_error(res, 404,
                  "This emulator serves only GET /keys/{name}[/{version}] and POST "
                  "/keys/{name}[/{version}]/wrapkey and /unwrapkey.");
      });
    };
    server.Get(".*", other);
    server.Post(".*", other);
    server.Put(".*", other);
    server.Patch(".*", other);
    server.Delete(".*", other);
  }

  bool configure_tls(SSL_CTX& ctx) {
    return SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) == 1 &&
           SSL_CTX_use_certificate(&ctx, server_cert.get()) == 1 &&
           SSL_CTX_use_PrivateKey(&ctx, server_key.get()) == 1 &&
           SSL_CTX_check_private_key(&ctx) == 1 &&
           (SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION), true);
  }

  void start() {
    std::lock_guard lifecycle(lifecycle_mutex);
    if (server) return;
    stop_signal.reset();
    auto fresh =
        std::make_unique<httplib::SSLServer>([this](SSL_CTX& ctx) { return configure_tls(ctx); });
    if (!fresh->is_valid()) {
      ERR_clear_error();
      throw std::runtime_error("key vault emulator: TLS setup failed");
    }
    install_routes(*fresh);
    const int wanted = port;
    const int bound = wanted == 0 ? fresh->bind_to_any_port(host)
                                  : (fresh->bind_to_port(host, wanted) ? wanted : -1);
    if (bound <= 0) {
      throw std::runtime_error("key vault emulator: cannot listen on " + host + ":" +
                               std::to_string(wanted) + std::string(kPortInUseHint));
    }
    port = bound;
    guard->watch(bound);
    auto finished = std::make_shared<std::atomic<bool>>(false);
    thread = std::thread([srv = fresh.get(), finished] {
      srv->listen_after_bind();
      finished->store(true);
    });
    // Server::stop() is a no-op until the accept loop runs: wait for it so stop() cannot race.
    while (!fresh->is_running() && !finished->load()) std::this_thread::sleep_for(1ms);
    server = std::move(fresh);
    log("listening on https://" + endpoint() + " (CA certificate " + ca_file + ")");
  }

  void stop() {
    std::lock_guard lifecycle(lifecycle_mutex);
    if (!server) return;
    stop_signal.trigger();
    server->stop();
    // A client still sending its request must not keep stop() waiting.
    guard->release_waiting();
    if (thread.joinable()) thread.join();
    server.reset();
    guard.reset();
  }

  const TokenLedger& ledger;
  const KeyVaultOptions options;
  const std::string host;
  std::shared_ptr<const CertificateAuthority> ca;
  X509Ptr server_cert;
  PkeyPtr server_key;
  std::string cert_directory;
  bool owns_cert_directory = false;
  std::string ca_file;

  mutable std::mutex keys_mutex;
  std::map<std::string, Key> keys;

  FaultQueue faults;
  std::atomic<std::int64_t> response_delay_ms;

  std::mutex lifecycle_mutex;
  std::unique_ptr<ConnectionGuard> guard;  // outlives the server's threads
  std::unique_ptr<httplib::SSLServer> server;
  std::thread thread;
  std::atomic<int> port{0};

  StopSignal stop_signal;

  std::atomic<std::uint64_t> requests_served{0};
  std::atomic<std::uint64_t> wraps{0};
  std::atomic<std::uint64_t> unwraps{0};
  std::atomic<std::uint64_t> unauthorized{0};
  std::atomic<std::uint64_t> forbidden{0};
};

KeyVaultServer::KeyVaultServer(const TokenLedger& ledger, KeyVaultOptions options)
    : impl_(std::make_unique<Impl>(ledger, std::move(options))) {
  for (const auto& name : impl_->options.keys) create_key(name);
}

KeyVaultServer::~KeyVaultServer() { impl_->stop(); }

void KeyVaultServer::start() { impl_->start(); }
void KeyVaultServer::stop() { impl_->stop(); }
bool KeyVaultServer::running() const {
  std::lock_guard lifecycle(impl_->lifecycle_mutex);
  return impl_->server != nullptr;
}

int KeyVaultServer::port() const { return impl_->port; }
std::string KeyVaultServer::endpoint() const { return impl_->endpoint(); }
std::string KeyVaultServer::url() const { return "https://" + impl_->endpoint(); }
const std::string& KeyVaultServer::ca_pem() const { return impl_->ca->certificate_pem(); }
const std::string& KeyVaultServer::ca_file() const { return impl_->ca_file; }

std::string KeyVaultServer::create_key(const std::string& name) {
  if (!valid_key_name(name)) {
    throw std::invalid_argument("key vault emulator: invalid key name '" + name +
                                "' (1-127 letters, digits, dashes)");
  }
  auto key = generate_rsa_key();
  std::string version = random_hex(16);
  std::lock_guard lock(impl_->keys_mutex);
  auto [it, inserted] = impl_->keys.try_emplace(name);
  if (inserted && !impl_->options.grant_all_by_default) {
    it->second.allowed = std::set<std::string>{};
  }
  it->second.versions.emplace_back(version, std::move(key));
  it->second.created[version] = std::chrono::duration_cast<std::chrono::seconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
  return version;
}

std::string KeyVaultServer::rotate_key(const std::string& name) {
  if (!has_key(name)) throw std::out_of_range("key vault emulator: no key named '" + name + "'");
  return create_key(name);
}

bool KeyVaultServer::has_key(const std::string& name) const {
  std::lock_guard lock(impl_->keys_mutex);
  return impl_->keys.count(name) > 0;
}

std::string KeyVaultServer::latest_version(const std::string& name) const {
  std::lock_guard lock(impl_->keys_mutex);
  return impl_->keys.at(name).versions.back().first;
}

std::vector<std::string> KeyVaultServer::versions(const std::string& name) const {
  std::lock_guard lock(impl_->keys_mutex);
  std::vector<std::string> ids;
  for (const auto& entry : impl_->keys.at(name).versions) ids.push_back(entry.first);
  return ids;
}

std::string KeyVaultServer::public_key_pem(const std::string& name,
                                           const std::string& version) const {
  std::shared_ptr<EVP_PKEY> key;
  {
    std::lock_guard lock(impl_->keys_mutex);
    const auto& versions = impl_->keys.at(name).versions;
    auto match = version.empty() ? std::prev(versions.end())
                                 : std::find_if(versions.begin(), versions.end(),
                                                [&](const auto& v) { return v.first == version; });
    if (match == versions.end()) {
      throw std::out_of_range("key vault emulator: no version '" + version + "' of '" + name + "'");
    }
    key = match->second;
  }
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) {
    throw std::runtime_error("key vault emulator: PEM_write_bio_PUBKEY failed");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string KeyVaultServer::key_id(const std::string& name, const std::string& version) const {
  return impl_->key_id(name, version);
}

void KeyVaultServer::restrict(const std::string& name, std::set<std::string> client_ids) {
  std::lock_guard lock(impl_->keys_mutex);
  impl_->keys.at(name).allowed = std::move(client_ids);
}

void KeyVaultServer::grant(const std::string& name, const std::string& client_id) {
  std::lock_guard lock(impl_->keys_mutex);
  auto& allowed = impl_->keys.at(name).allowed;
  if (allowed) allowed->insert(client_id);
}

void KeyVaultServer::unrestrict(const std::string& name) {
  std::lock_guard lock(impl_->keys_mutex);
  impl_->keys.at(name).allowed.reset();
}

bool KeyVaultServer::granted(const std::string& name, const std::string& client_id) const {
  std::lock_guard lock(impl_->keys_mutex);
  const auto& allowed = impl_->keys.at(name).allowed;
  return !allowed || allowed->count(client_id) > 0;
}

void KeyVaultServer::inject(const std::string& fault_case, int times) {
  if (!is_key_vault_fault_case(fault_case)) {
    throw std::invalid_argument("key vault emulator: unknown fault case '" + fault_case + "'");
  }
  impl_->faults.push(fault_case, times);
}

void KeyVaultServer::clear_faults() { impl_->faults.clear(); }

void KeyVaultServer::set_response_delay(std::chrono::milliseconds delay) {
  impl_->response_delay_ms = delay.count();
}

std::uint64_t KeyVaultServer::requests_served() const { return impl_->requests_served; }
std::uint64_t KeyVaultServer::wrap_count() const { return impl_->wraps; }
std::uint64_t KeyVaultServer::unwrap_count() const { return impl_->unwraps; }
std::uint64_t KeyVaultServer::unauthorized_count() const { return impl_->unauthorized; }
std::uint64_t KeyVaultServer::forbidden_count() const { return impl_->forbidden; }
void KeyVaultServer::reset_counters() {
  impl_->requests_served = 0;
  impl_->wraps = 0;
  impl_->unwraps = 0;
  impl_->unauthorized = 0;
  impl_->forbidden = 0;
}
const KeyVaultOptions& KeyVaultServer::options() const { return impl_->options; }

}  // namespace azkms::emulator
