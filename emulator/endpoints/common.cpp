#include "endpoints/common.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <stdexcept>
#include <utility>

#include "http_faults.hpp"

namespace azkms::emulator::endpoints {

std::int64_t epoch(Clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count();
}

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

void write_private_file(const std::string& path, const std::string& contents) {
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

const Identity* find_identity(const std::vector<Identity>& identities,
                              std::string Identity::*member, const std::string& value) {
  if (value.empty()) return nullptr;
  for (const auto& identity : identities) {
    if (identity.*member == value) return &identity;
  }
  return nullptr;
}

const Identity* system_identity(const std::vector<Identity>& identities) {
  for (const auto& identity : identities) {
    if (identity.system_assigned) return &identity;
  }
  return nullptr;
}

const Identity* system_or_first_identity(const std::vector<Identity>& identities) {
  if (const Identity* system = system_identity(identities)) return system;
  return &identities.front();
}

const Identity* other_identity(const std::vector<Identity>& identities, const Identity* identity) {
  for (const auto& candidate : identities) {
    if (&candidate != identity) return &candidate;
  }
  return identity;
}

RequestChecks::RequestChecks(Endpoint endpoint, const Options& options)
    : endpoint_(endpoint), options_(options) {}

void RequestChecks::log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

bool RequestChecks::reject(httplib::Response& res, int status, const std::string& error,
                           const std::string& description) const {
  log(std::string(display_name(endpoint_)) + ": " + std::to_string(status) + " " + description);
  set_json_error(res, status, error, description);
  return false;
}

bool RequestChecks::api_version(const httplib::Params& params,
                                std::initializer_list<std::string_view> versions,
                                httplib::Response& res) const {
  const std::string* version = param(params, "api-version");
  if (version == nullptr) {
    return reject(res, 400, "invalid_request", "Required query variable 'api-version' is missing");
  }
  for (std::string_view accepted : versions) {
    if (*version == accepted) return true;
  }
  return reject(res, 400, "invalid_request",
                "Invalid, missing or unsupported api-version '" + *version + "'");
}

bool RequestChecks::resource(const httplib::Params& params, std::string& resource,
                             httplib::Response& res) const {
  const std::string* value = param(params, "resource");
  if (value == nullptr || value->empty()) {
    return reject(res, 400, "invalid_request", "Required query variable 'resource' is missing");
  }
  resource = *value;
  return true;
}

bool RequestChecks::metadata_header(const httplib::Request& req, httplib::Response& res) const {
  if (req.get_header_value("Metadata") != "true") {
    return reject(res, 400, "invalid_request",
                  "Required metadata header not specified (bad_request_102)");
  }
  return true;
}

bool RequestChecks::secret_header(const httplib::Request& req, const char* header,
                                  const std::string& expected, httplib::Response& res) const {
  if (!req.has_header(header) || req.get_header_value(header) != expected) {
    return reject(res, 401, "unauthorized",
                  std::string("The ") + header + " header is missing or does not match");
  }
  return true;
}

std::optional<const Identity*> RequestChecks::select(const httplib::Params& params,
                                                     std::initializer_list<Selector> selectors,
                                                     httplib::Response& res,
                                                     const Identity* when_none) const {
  std::vector<std::pair<const Selector*, const std::string*>> given;
  for (const Selector& selector : selectors) {
    if (const std::string* value = param(params, selector.name))
      given.emplace_back(&selector, value);
  }
  const std::string name(display_name(endpoint_));
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
  const auto& identities = options_.identities;
  if (given.size() == 1) {
    const Identity* identity = find_identity(identities, given[0].first->member, *given[0].second);
    if (identity == nullptr) {
      log(name + ": 400 identity not found (" + given[0].first->name + ")");
      set_json_error(res, 400, "invalid_request", "Identity not found");
      return std::nullopt;
    }
    return identity;
  }
  if (when_none != nullptr) return when_none;
  if (const Identity* system = system_identity(identities)) return system;
  if (identities.size() == 1) return &identities.front();
  log(name + ": 400 no system-assigned identity and no selector");
  set_json_error(res, 400, "invalid_request",
                 "Identity not found: no system-assigned identity; name a user-assigned one");
  return std::nullopt;
}

}  // namespace azkms::emulator::endpoints
