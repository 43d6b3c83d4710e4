// azkms-emulator: every Azure identity endpoint on loopback, for local development and tests.
// Runs until SIGINT or SIGTERM.
#include <fcntl.h>
#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <csignal>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>

#include "azkms/version.h"
#include "emulator.hpp"
#include "faults.hpp"
#include "key_vault.hpp"

namespace {

// Exit codes: 0 (stopped by a signal, or --help, --version, --list-faults), 1 a runtime
// failure (a port in use), 2 a usage error.
constexpr int kExitUsage = 2;
// Bounds of the numeric options, checked while parsing, before any arithmetic.
constexpr long long kLongestTokenLifetimeSeconds = 366LL * 24 * 3600;
constexpr long long kLongestDelayMs = 600'000;

using azkms::emulator::Emulator;
using azkms::emulator::Endpoint;
using azkms::emulator::KeyVaultServer;

// "imds=8080" -> (imds, 8080); nullopt for an unknown name, a port outside 0 to 65535 or
// anything after the digits.
std::optional<std::pair<Endpoint, int>> parse_port_option(const std::string& entry) {
  const auto equals = entry.find('=');
  if (equals == std::string::npos) return std::nullopt;
  const auto endpoint = azkms::emulator::parse_endpoint(entry.substr(0, equals));
  const std::string_view digits = std::string_view(entry).substr(equals + 1);
  int port = -1;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (!endpoint || digits.empty() || error != std::errc() || end != digits.data() + digits.size() ||
      port < 0 || port > 65535) {
    return std::nullopt;
  }
  return std::pair{*endpoint, port};
}

std::string timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%H:%M:%S", &utc);
  return buffer;
}

// Single quotes keep the shell from expanding anything in a value.
std::string shell_quote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// What an Azure SDK needs (Emulator::sdk_environment), and where Key Vault is.
void print_env(const Emulator& emulator, Endpoint endpoint, const KeyVaultServer* vault) {
  std::cout << "# " << azkms::emulator::display_name(endpoint) << " (--source "
            << azkms::emulator::to_string(endpoint) << ")\n";
  for (const auto& [name, value] : emulator.sdk_environment(endpoint)) {
    std::cout << "export " << name << "=" << shell_quote(value) << "\n";
  }
  if (vault != nullptr) {
    const std::string& key = vault->options().keys.front();
    std::cout << "export AZKMS_KEY_VAULT_URL=" << shell_quote(vault->url()) << "\n"
              << "export AZKMS_KEY_VAULT_KEY_ID="
              << shell_quote(vault->key_id(key, vault->latest_version(key))) << "\n";
  }
}

nlohmann::json describe(const Emulator& emulator, const KeyVaultServer* vault) {
  nlohmann::json endpoints = nlohmann::json::object();
  for (Endpoint endpoint : azkms::emulator::kAllEndpoints) {
    endpoints[std::string(azkms::emulator::to_string(endpoint))] = {
        {"port", emulator.port(endpoint)},
        {"base_url", emulator.base_url(endpoint)},
        {"token_url", emulator.token_url(endpoint)}};
  }
  nlohmann::json identities = nlohmann::json::array();
  for (const auto& identity : emulator.options().identities) {
    identities.push_back({{"system_assigned", identity.system_assigned},
                          {"client_id", identity.client_id},
                          {"object_id", identity.object_id},
                          {"resource_id", identity.resource_id}});
  }
  nlohmann::json out = {
      {"endpoints", endpoints},
      {"identities", identities},
      {"service_fabric_thumbprint", emulator.service_fabric_thumbprint()},
      {"service_fabric_certificate_file", emulator.service_fabric_certificate_file()},
      {"workload_identity_authority", emulator.workload_identity_authority()},
      {"ca_file", emulator.ca_file()},
      {"trust_bundle_file", emulator.trust_bundle_file()},
      {"arc_key_directory", emulator.arc_key_directory()},
      {"tenant_id", emulator.options().tenant_id}};
  if (vault != nullptr) {
    out["key_vault"] = {{"endpoint", vault->endpoint()},
                        {"url", vault->url()},
                        {"ca_file", vault->ca_file()},
                        {"keys", vault->options().keys}};
  }
  return out;
}

// One line for people: where Key Vault is, how to trust it, which key to wrap with.
std::string describe_key_vault(const KeyVaultServer& vault) {
  std::string keys;
  for (const auto& name : vault.options().keys) keys += (keys.empty() ? "" : ", ") + name;
  return vault.url() + " (keyVaultEndpoint " + vault.endpoint() + ", keys: " + keys + ", CA file " +
         vault.ca_file() + ")";
}

// --print-env without --foreground: the parent prints what the serving child reports and exits,
// so that `eval "$(azkms-emulator --print-env app-service)"` returns while the emulator keeps
// serving in the background. Returns the parent's exit code, or -1 in the child.
int detach() {
  int fds[2];
  if (::pipe(fds) != 0) {
    std::cerr << "azkms-emulator: pipe failed\n";
    return 1;
  }
  std::cout.flush();
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::cerr << "azkms-emulator: fork failed\n";
    return 1;
  }
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[1]);
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      ::dup2(null_fd, STDIN_FILENO);
      ::close(null_fd);
    }
    return -1;
  }
  ::close(fds[1]);
  std::string output;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::read(fds[0], buffer, sizeof(buffer))) > 0) {
    output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  std::cout << output;
  return output.empty() ? 1 : 0;  // the child said why on stderr
}

// After the child has printed: release the caller's stdout (ends the parent's read) and stderr.
void release_terminal() {
  std::cout.flush();
  const int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd < 0) return;
  ::dup2(null_fd, STDOUT_FILENO);
  ::dup2(null_fd, STDERR_FILENO);
  ::close(null_fd);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "azkms-emulator: local stand-ins for the Azure managed identity endpoints (IMDS, App "
      "Service, App Service 2017, Azure ML, Cloud Shell, Azure Arc, Service Fabric, workload "
      "identity), each on its own loopback port. Runs until interrupted."};
  app.set_version_flag("--version", "azkms-emulator " AZKMS_VERSION_STRING);
  std::string host = "127.0.0.1";
  long long lifetime_seconds = 3600;
  long long delay_ms = 0;
  std::string print_env_for;
  bool json_output = false;
  bool quiet = false;
  bool list_faults = false;
  bool foreground = false;
  std::string log_file;
  std::vector<std::string> port_options;
  std::string identity_header;
  std::string msi_secret;
  std::string arc_key_directory;
  std::string ml_default_client_id;

  app.add_option("--host", host, "Loopback address to bind: 127.0.0.1 or ::1")
      ->check(CLI::IsMember({"127.0.0.1", "::1"}));
  app.add_option("--token-lifetime", lifetime_seconds,
                 "Lifetime of issued tokens, 1 to 31622400 seconds (366 days)")
      ->capture_default_str()
      ->check(CLI::Range(1LL, kLongestTokenLifetimeSeconds));
  app.add_option("--delay-ms", delay_ms, "Delay before every answer, 0 to 600000 milliseconds")
      ->capture_default_str()
      ->check(CLI::Range(0LL, kLongestDelayMs));
  auto* print_env_option =
      app.add_option("--print-env", print_env_for,
                     "Print `export VAR=value` lines (secrets included) that make a client target "
                     "one endpoint (imds, app-service, app-service-2017, azure-ml, cloud-shell, "
                     "azure-arc, service-fabric, workload-identity) or all of them");
  app.add_flag("--json", json_output, "Print ports, URLs and identities as one JSON line")
      ->excludes(print_env_option);
  bool serve_key_vault = true;
  std::string key_name = "mongodb-key";
  app.add_flag("!--no-key-vault", serve_key_vault,
               "Do not serve the Key Vault emulator (HTTPS, wrapkey/unwrapkey)");
  app.add_option("--key-name", key_name, "Name of the RSA key the Key Vault emulator creates")
      ->capture_default_str();
  app.add_option("--port", port_options, "Fixed port for an endpoint, e.g. --port imds=8080")
      ->type_name("NAME=PORT");
  app.add_option("--identity-header", identity_header,
                 "IDENTITY_HEADER value App Service and Service Fabric demand (random if unset)");
  app.add_option("--msi-secret", msi_secret,
                 "MSI_SECRET value App Service 2017 and Azure ML demand (random if unset)");
  app.add_option("--arc-key-dir", arc_key_directory,
                 "Directory for Azure Arc challenge key files (a temporary one if unset)");
  app.add_option("--azure-ml-default-client-id", ml_default_client_id,
                 "Identity Azure ML serves when a request names none");
  app.add_flag("--quiet", quiet, "Do not log requests to stderr");
  app.add_flag("--foreground", foreground,
               "With --print-env: stay attached to the terminal instead of serving in the "
               "background");
  app.add_option("--log-file", log_file,
                 "Append the log to this file (in the background, the only log)");
  app.add_flag("--list-faults", list_faults,
               "List the fault cases (X-MongoDB-HTTP-TestParams: case=<name>) and exit");
  app.footer("Exit status: 0 when stopped by SIGINT or SIGTERM, 1 on failure, 2 on a usage error.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }

  if (list_faults) {
    for (const auto& fault : azkms::emulator::fault_cases()) {
      std::cout << fault.name << "\t" << fault.description << "\n";
    }
    return 0;
  }

  azkms::emulator::Options options;
  options.host = host;
  options.token_lifetime = std::chrono::seconds(lifetime_seconds);
  options.response_delay = std::chrono::milliseconds(delay_ms);
  options.identity_header = identity_header;
  options.msi_secret = msi_secret;
  options.arc_key_directory = arc_key_directory;
  options.azure_ml_default_client_id = ml_default_client_id;
  for (const auto& entry : port_options) {
    const auto parsed = parse_port_option(entry);
    if (!parsed) {
      std::cerr << "azkms-emulator: --port expects NAME=PORT (e.g. imds=8080, a port from 0 to "
                   "65535), got '"
                << entry << "'\n";
      return kExitUsage;
    }
    options.ports[parsed->first] = parsed->second;
  }
  const bool background = !print_env_for.empty() && !foreground;
  if (!log_file.empty()) {
    auto file = std::make_shared<std::ofstream>(log_file, std::ios::app);
    if (!*file) {
      std::cerr << "azkms-emulator: cannot open " << log_file << "\n";
      return kExitUsage;
    }
    auto mutex = std::make_shared<std::mutex>();
    options.log = [file, mutex](std::string_view line) {
      std::lock_guard lock(*mutex);
      *file << timestamp() << " " << line << std::endl;
    };
  } else if (!quiet && !background) {
    options.log = [](std::string_view line) { std::cerr << timestamp() << " " << line << "\n"; };
  }

  std::optional<Endpoint> env_endpoint;
  if (!print_env_for.empty() && print_env_for != "all") {
    env_endpoint = azkms::emulator::parse_endpoint(print_env_for);
    if (!env_endpoint) {
      std::cerr << "azkms-emulator: --print-env expects an endpoint name or 'all', got '"
                << print_env_for << "'\n";
      return kExitUsage;
    }
  }

  if (background) {
    const int parent = detach();
    if (parent >= 0) return parent;
  }

  // The server threads inherit this mask, so only sigwait() below sees the signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    Emulator emulator(options);
    emulator.start();
    // Key Vault shares the identity endpoints' ledger: it accepts exactly the tokens they issue.
    std::unique_ptr<KeyVaultServer> vault;
    if (serve_key_vault) {
      azkms::emulator::KeyVaultOptions vault_options;
      vault_options.host = host;
      vault_options.tenant_id = emulator.options().tenant_id;
      vault_options.keys = {key_name};
      vault_options.log = options.log;
      // One CA for the HTTPS authority and Key Vault: the trust bundle print-env names covers both.
      vault_options.certificate_authority = emulator.certificate_authority();
      vault = std::make_unique<KeyVaultServer>(emulator.ledger(), vault_options);
      vault->start();
    }
    if (json_output) {
      std::cout << describe(emulator, vault.get()).dump() << std::endl;
    } else if (print_env_for.empty()) {
      std::cout << "azkms-emulator listening on " << host << ":\n";
      for (Endpoint endpoint : azkms::emulator::kAllEndpoints) {
        std::cout << "  " << azkms::emulator::to_string(endpoint) << "\t"
                  << emulator.token_url(endpoint) << "\n";
      }
      if (vault) std::cout << "  key-vault\t" << describe_key_vault(*vault) << "\n";
      std::cout << "Use --print-env <endpoint|all> for the variables a client needs.\n";
    }
    if (vault && !json_output && !print_env_for.empty()) {
      std::cout << "# Key Vault: " << describe_key_vault(*vault) << "\n";
    }
    if (env_endpoint) {
      print_env(emulator, *env_endpoint, vault.get());
    } else if (print_env_for == "all") {
      for (Endpoint endpoint : azkms::emulator::kAllEndpoints) {
        print_env(emulator, endpoint, vault.get());
      }
    }
    if (background) {
      std::cout << "export AZKMS_EMULATOR_PID=" << ::getpid() << "\n"
                << "# serving in the background; stop it with: kill $AZKMS_EMULATOR_PID\n";
      release_terminal();
    }
    std::cout.flush();

    int received = 0;
    sigwait(&signals, &received);
    if (!quiet) std::cerr << timestamp() << " stopping (signal " << received << ")\n";
    if (vault) vault->stop();
    emulator.stop();
  } catch (const std::exception& e) {
    std::cerr << "azkms-emulator: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
