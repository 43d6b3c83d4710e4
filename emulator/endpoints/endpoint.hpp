// One emulated identity endpoint's own behaviour: its route, its request check, its token
// shape, the secret a request carries, and the environment a client needs. Emulator::Impl runs
// the steps every endpoint shares (count, delay, faults, issuing the token) and asks the
// endpoint for the rest. Adding an endpoint is one new file under emulator/endpoints/, one
// factory here and one line in Emulator::Impl's constructor.
#pragma once

#include <httplib.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "connection_guard.hpp"
#include "emulator.hpp"
#include "endpoints/common.hpp"

namespace azkms::emulator::endpoints {

// What a request that passed its endpoint's checks asks for.
struct Grant {
  const Identity* identity = nullptr;
  std::string resource;
  // The request's token_sha256_to_refresh (App Service, Service Fabric), if any.
  std::string token_sha256_to_refresh{};
};

// The token an answer carries, and its times.
struct IssuedToken {
  std::string token;
  std::chrono::seconds lifetime;
  Clock::time_point now;
  Clock::time_point expires;
};

// What an endpoint asks of the emulator that serves it (Emulator::Impl).
class EndpointHost {
 public:
  // Ports do not change while serving, so these take no lock (stop() holds the lifecycle lock
  // while it waits for the handlers).
  [[nodiscard]] virtual std::string base_url_unlocked(Endpoint endpoint) const = 0;
  // Workload identity's HTTPS authority, e.g. "https://127.0.0.1:40125" (no trailing slash).
  [[nodiscard]] virtual std::string authority_url() const = 0;
  // Service Fabric's self-signed certificate: its SHA-1 thumbprint and PEM file (set by start()).
  [[nodiscard]] virtual const std::string& service_fabric_thumbprint_unlocked() const = 0;
  [[nodiscard]] virtual const std::string& service_fabric_certificate_file_unlocked() const = 0;
  // The fault for this request: the X-MongoDB-HTTP-TestParams case first, then the injected
  // queue. `challenge`: Azure Arc's challenge step, where only the arc-* cases apply. False
  // when the response is already written (400 for an unknown case).
  virtual bool pick_fault(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                          bool challenge, std::string& fault) = 0;

 protected:
  ~EndpointHost() = default;
};

class EndpointBehaviour {
 public:
  EndpointBehaviour(Endpoint endpoint, const Options& options) : checks_(endpoint, options) {}
  virtual ~EndpointBehaviour() = default;
  EndpointBehaviour(const EndpointBehaviour&) = delete;
  EndpointBehaviour& operator=(const EndpointBehaviour&) = delete;

  [[nodiscard]] Endpoint endpoint() const { return checks_.endpoint(); }

  // The token endpoint's path on its server, e.g. "/msi/token".
  [[nodiscard]] virtual std::string token_path() const = 0;
  // The route (a regex) the server serves the token endpoint on: the path unless it varies.
  [[nodiscard]] virtual std::string route() const { return token_path(); }
  // Cloud Shell and workload identity take a form body by POST; the others take GET.
  [[nodiscard]] virtual bool token_by_post() const { return false; }
  // Service Fabric: HTTPS with its self-signed certificate; the others plain HTTP.
  [[nodiscard]] virtual bool serves_self_signed_https() const { return false; }
  // App Service and Service Fabric: with Options::platform_token_cache the platform keeps the
  // tokens it issued, and a request's token_sha256_to_refresh bypasses them.
  [[nodiscard]] virtual bool platform_keeps_tokens() const { return false; }

  // Once, in start(), before any server runs: the endpoint's files, in `temp_dir`.
  virtual void prepare(const std::string& /*temp_dir*/) {}
  // Routes besides the token endpoint (workload identity's discovery documents), on the
  // endpoint's server and, when `is_authority`, on the HTTPS authority.
  virtual void add_routes(httplib::Server& /*server*/, ConnectionGuard& /*guard*/,
                          bool /*is_authority*/) {}

  // The real endpoint's checks; nullopt when the answer (400, 401, a challenge) is written.
  virtual std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) = 0;
  // The 200 body, in the endpoint's own shape.
  [[nodiscard]] virtual nlohmann::json token_body(const Grant& grant,
                                                  const IssuedToken& issued) const = 0;
  // The secret a request carries, as the endpoint received it; empty when it carries none.
  [[nodiscard]] virtual std::string request_credential(const httplib::Request& /*req*/) const {
    return {};
  }
  // The identity the endpoint serves when the request names none.
  [[nodiscard]] virtual const Identity* default_identity() const {
    return system_or_first_identity(options().identities);
  }

  // The environment variables a client needs (see Emulator::client_environment()).
  [[nodiscard]] virtual std::map<std::string, std::string> client_environment(
      const std::string& base_url) const = 0;
  // What an Azure SDK needs besides (see Emulator::sdk_environment()). Called under the
  // emulator's lifecycle lock.
  virtual void add_sdk_environment(std::map<std::string, std::string>& /*env*/) const {}

 protected:
  [[nodiscard]] const Options& options() const { return checks_.options(); }
  [[nodiscard]] const RequestChecks& checks() const { return checks_; }
  [[nodiscard]] std::string token_url(const std::string& base_url) const {
    return base_url + token_path();
  }

 private:
  RequestChecks checks_;
};

// The endpoints without state of their own (Azure Arc and workload identity have headers).
std::unique_ptr<EndpointBehaviour> make_imds(const Options& options);
std::unique_ptr<EndpointBehaviour> make_app_service(const Options& options);
std::unique_ptr<EndpointBehaviour> make_app_service_2017(const Options& options);
std::unique_ptr<EndpointBehaviour> make_azure_ml(const Options& options);
std::unique_ptr<EndpointBehaviour> make_cloud_shell(const Options& options);
std::unique_ptr<EndpointBehaviour> make_service_fabric(const Options& options,
                                                       const EndpointHost& host);

}  // namespace azkms::emulator::endpoints
