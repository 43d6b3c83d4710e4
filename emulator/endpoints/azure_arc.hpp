// Azure Arc-enabled servers: IMDS's request, path and token shape, behind a challenge. The
// first request gets 401 with `WWW-Authenticate: Basic realm=<key file>`; the same request
// with `Authorization: Basic <file contents>` gets the token. Only the arc-* fault cases apply
// to the challenge step.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {

class AzureArc final : public EndpointBehaviour {
 public:
  AzureArc(const Options& options, EndpointHost& host);
  ~AzureArc() override;  // removes the key files still there

  [[nodiscard]] std::string token_path() const override;
  // Creates the key directory (Options::arc_key_directory, or one in `temp_dir`).
  void prepare(const std::string& temp_dir) override;
  std::optional<Grant> check(const httplib::Request& req, httplib::Response& res) override;
  [[nodiscard]] nlohmann::json token_body(const Grant& grant,
                                          const IssuedToken& issued) const override;
  [[nodiscard]] std::string request_credential(const httplib::Request& req) const override;
  [[nodiscard]] std::map<std::string, std::string> client_environment(
      const std::string& base_url) const override;

  // See Emulator::arc_key_directory() and Emulator::arc_keys_handed_out().
  [[nodiscard]] const std::string& key_directory() const { return key_directory_; }
  [[nodiscard]] std::vector<std::string> keys_handed_out() const;

 private:
  // A challenge: the key file it named (empty once the key was used).
  struct Challenge {
    std::string path;
    std::chrono::steady_clock::time_point issued;
  };

  bool authorized(const httplib::Request& req);
  void challenge(const httplib::Request& req, httplib::Response& res);
  void expire_challenges_locked();
  void forget_challenge_locked(std::string key);
  static void remove_key_file(Challenge& challenge);

  EndpointHost& host_;
  std::string temp_dir_;       // set by prepare()
  std::string key_directory_;  // set by prepare()

  mutable std::mutex mutex_;
  std::map<std::string, Challenge> challenges_;  // by key: outstanding challenges
  std::deque<std::string> challenge_order_;      // their keys, oldest first
  std::deque<std::string> keys_handed_out_;      // the latest keys, for tests
};

}  // namespace azkms::emulator::endpoints
