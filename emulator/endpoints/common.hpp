// The checks and helpers several emulated identity endpoints share: reading query and form
// parameters, the api-version, resource, Metadata and secret-header checks, identity selection,
// and the JSON error every rejection answers with. One endpoint's own rules live in its file.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "emulator.hpp"

namespace azkms::emulator::endpoints {

using Clock = std::chrono::system_clock;

std::int64_t epoch(Clock::time_point time);

// Query parameters of the URL only (httplib merges form bodies into req.params).
httplib::Params query_params(const httplib::Request& req);
// The parameters of an application/x-www-form-urlencoded body.
httplib::Params form_params(const httplib::Request& req);
// The value of `name`; nullptr when absent.
const std::string* param(const httplib::Params& params, const std::string& name);
// True when the parameters name any identity selector, under any endpoint's spelling: the
// endpoints that serve only one identity refuse them all rather than ignore them.
bool names_a_selector(const httplib::Params& params);
bool is_form(const httplib::Request& req);

// Writes `contents` to a new file only its owner may read (key files, private keys, the
// federated token).
void write_private_file(const std::string& path, const std::string& contents);

// Identities. find_identity: nullptr for an empty value or when none has it.
const Identity* find_identity(const std::vector<Identity>& identities,
                              std::string Identity::*member, const std::string& value);
const Identity* system_identity(const std::vector<Identity>& identities);
// The system-assigned identity, else the first one.
const Identity* system_or_first_identity(const std::vector<Identity>& identities);
// Another identity than `identity` (itself when it is the only one): the wrong-identity fault.
const Identity* other_identity(const std::vector<Identity>& identities, const Identity* identity);

// An identity selector: its query parameter and the identity field it names.
struct Selector {
  const char* name;
  std::string Identity::*member;
};

// The checks, each for one endpoint: a failed check logs "<Endpoint>: <status> <description>",
// writes the JSON error and returns false (or nullopt).
class RequestChecks {
 public:
  RequestChecks(Endpoint endpoint, const Options& options);

  [[nodiscard]] Endpoint endpoint() const { return endpoint_; }
  [[nodiscard]] const Options& options() const { return options_; }
  void log(const std::string& line) const;

  bool reject(httplib::Response& res, int status, const std::string& error,
              const std::string& description) const;
  // api-version present and one of `versions`.
  bool api_version(const httplib::Params& params, std::initializer_list<std::string_view> versions,
                   httplib::Response& res) const;
  // `resource` present and not empty; copied to `resource`.
  bool resource(const httplib::Params& params, std::string& resource, httplib::Response& res) const;
  // `Metadata: true`, exactly.
  bool metadata_header(const httplib::Request& req, httplib::Response& res) const;
  // `header` present and equal to `expected` (else 401).
  bool secret_header(const httplib::Request& req, const char* header, const std::string& expected,
                     httplib::Response& res) const;

  // Mutually exclusive selectors. With none: `when_none` if given (Azure ML's configured
  // default), else the system-assigned identity, or (as on a VM) the only user-assigned
  // identity when there is no system-assigned one.
  std::optional<const Identity*> select(const httplib::Params& params,
                                        std::initializer_list<Selector> selectors,
                                        httplib::Response& res,
                                        const Identity* when_none = nullptr) const;

 private:
  Endpoint endpoint_;
  const Options& options_;
};

}  // namespace azkms::emulator::endpoints
