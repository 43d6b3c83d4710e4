// Workload identity (Entra ID's token endpoint, as AKS pods reach it): POST
// /{tenant}/oauth2/v2.0/token with a client assertion, the federated token the emulator
// writes. Served on plain HTTP and on the HTTPS authority, each with the discovery documents
// MSAL-based clients fetch first.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {

class WorkloadIdentity final : public EndpointBehaviour {
 public:
  WorkloadIdentity(const Options& options, const EndpointHost& host);

  [[nodiscard]] std::string token_path() const override;
  [[nodiscard]] std::string route() const override;
  [[nodiscard]] bool token_by_post() const override { return true; }
  // Writes the federated token file.
  void prepare(const std::string& temp_dir) override;
  // The discovery documents.
  void add_routes(httplib::Server& server, ConnectionGuard& guard, bool is_authority) override;
  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override;
  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override;
  // The client assertion.
  [[nodiscard]] std::string request_credential(const httplib::Request& req) const override;
  // The plain-HTTP authority (azkms accepts plain http on loopback).
  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override;
  // The HTTPS authority: real clients refuse a plain-HTTP one.
  void add_sdk_environment(std::map<std::string, std::string>& env) const override;

  // See Emulator::federated_token() and Emulator::claims_received().
  [[nodiscard]] const std::string& federated_token() const { return federated_token_; }
  [[nodiscard]] std::vector<std::string> claims_received() const;

 private:
  // The server's own base URL: the HTTPS authority's or the plain-HTTP endpoint's.
  [[nodiscard]] std::string discovery_base(bool is_authority) const;
  void openid_configuration(const httplib::Request& req, httplib::Response& res,
                            const std::string& base) const;
  void instance_discovery(const httplib::Request& req, httplib::Response& res,
                          const std::string& base) const;

  const EndpointHost& host_;
  std::string federated_token_;       // set by prepare()
  std::string federated_token_file_;  // set by prepare()

  mutable std::mutex claims_mutex_;
  std::vector<std::string> claims_received_;  // the `claims` form fields, in order
};

}  // namespace azkms::emulator::endpoints
