#include "faults.hpp"

#include <algorithm>
#include <stdexcept>

#include "text.hpp"

namespace azkms::emulator {

const std::vector<FaultCase>& fault_cases() {
  static const std::vector<FaultCase> kCases = {
      {"empty-json", "200 with the body {}"},
      {"bad-json", "200 with the body {\"key\": }"},
      {"truncated", "200 with the body {\"access_token\":\"abc (cut short)"},
      {"html", "200 text/html page, as from something else listening on the address"},
      {"xml", "200 application/xml error document, as from a proxy"},
      {"missing-token", "200 {\"expires_in\":\"3599\"}: no access_token"},
      {"non-string-token", "200 {\"access_token\":12,...}: the token is a number"},
      {"bad-expiry", "200 {\"access_token\":\"x\",\"expires_on\":\"tomorrow\"}"},
      {"wrong-identity",
       "200 with the endpoint's normal shape, but the token and client_id belong to another "
       "identity"},
      {"drivers-default",
       "200 {\"access_token\",\"expires_in\":\"70\",\"token_type\",\"resource\"}: the MongoDB "
       "drivers' test server answer (a real token living 70 s)"},
      {"400", "400 with a JSON error body"},
      {"404", "404 with a JSON error body (IMDS: identity endpoint updating)"},
      {"408", "408 with a JSON error body"},
      {"410", "410 with a JSON error body (IMDS: updating, back within 70 s)"},
      {"429", "429 with Retry-After: 1 and a JSON error body"},
      {"410-retry-after-0",
       "410 with Retry-After: 0 (IMDS updating, asking to be asked again at once)"},
      {"429-retry-after-ms-max", "429 with x-ms-retry-after-ms: 9223372036854775807"},
      {"429-retry-after-2300",
       "429 with Retry-After: Mon, 01 Jan 2300 00:00:00 GMT (past the year 2262)"},
      {"500", "500 with a JSON error body"},
      {"502", "502 with a JSON error body"},
      {"503", "503 with a JSON error body"},
      {"504", "504 with a JSON error body"},
      {"redirect", "302 to another loopback URL (which would answer with a valid token)"},
      {"slow", "200, then a never-ending JSON array, one element a second (chunked)"},
      {"giant", "200 with a JSON body of 24 MiB and its Content-Length"},
      {"reset", "headers and part of the body, then the connection is reset (RST)"},
      {"close", "the connection is closed without any response"},
      {"arc-no-realm", "Arc challenge: 401 without WWW-Authenticate", true},
      {"arc-bad-realm", "Arc challenge: WWW-Authenticate without '=' (\"Basic realm\")", true},
      {"arc-outside-dir", "Arc challenge: the key file is written outside the key directory", true},
      {"arc-not-key", "Arc challenge: the key file name does not end in .key", true},
      {"arc-big-key", "Arc challenge: the key file is 8 KiB (the limit is 4096 bytes)", true},
      {"echo-body-value",
       "200 with a body that is not JSON, the echo as a value straddling byte 120"},
      {"echo-field-name", "200 with a token, no expiry, and the echo as a field name"},
      {"echo-client-id", "200 with a token whose client_id is the echo"},
      {"echo-resource", "200 with a token whose resource is the echo"},
      {"echo-token-type", "200 with a token whose token_type is the echo"},
      {"echo-expiry", "200 with a token whose only expiry, expires_on, is the echo"},
      {"echo-error-description", "400 {\"error\": echo, \"error_description\": \"... echo ...\"}"},
      {"echo-html", "200 text/html page quoting the echo across byte 120"},
      {"echo-status-body", "403 text/plain quoting the echo across byte 200"},
      {"echo-location", "302 to http://<echo>/redirect-target?echo=<echo>"},
      {"echo-header", "401 with the echo in WWW-Authenticate, Retry-After and X-Echo"},
  };
  return kCases;
}

std::optional<EchoFault> parse_echo_fault(std::string_view name) {
  constexpr std::string_view kPrefix = "echo-";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::vector<std::string_view> parts;
  for (std::size_t pos = 0;;) {
    const auto colon = name.find(':', pos);
    parts.push_back(name.substr(pos, colon == std::string_view::npos ? name.npos : colon - pos));
    if (colon == std::string_view::npos) break;
    pos = colon + 1;
  }
  if (parts.size() > 3) return std::nullopt;
  EchoFault echo;
  echo.position = std::string(parts[0].substr(kPrefix.size()));
  if (parts.size() > 1) {
    if (parts[1] != "credential" && parts[1] != "token") return std::nullopt;
    echo.token = parts[1] == "token";
    // A redirect and a bare 401 carry no token to echo.
    if (echo.token && (echo.position == "location" || echo.position == "header")) {
      return std::nullopt;
    }
  }
  if (parts.size() > 2) {
    if (parts[2] == "url") {
      echo.form = EchoFault::Form::kUrl;
    } else if (parts[2] == "json") {
      echo.form = EchoFault::Form::kJson;
    } else if (parts[2] != "raw") {
      return std::nullopt;
    }
  }
  return echo;
}

const FaultCase* find_fault_case(std::string_view name) {
  if (name.rfind("echo-", 0) == 0) {
    if (!parse_echo_fault(name)) return nullptr;
    name = name.substr(0, name.find(':'));
  }
  const auto& cases = fault_cases();
  auto it =
      std::find_if(cases.begin(), cases.end(), [&](const FaultCase& c) { return c.name == name; });
  return it == cases.end() ? nullptr : &*it;
}

std::optional<std::string> test_params_case(std::string_view header_value) {
  // "case=slow" or a query-like list "case=slow&x=y" (";" also separates).
  std::size_t pos = 0;
  while (pos <= header_value.size()) {
    std::size_t end = header_value.find_first_of("&;", pos);
    if (end == std::string_view::npos) end = header_value.size();
    const std::string_view pair = trim(header_value.substr(pos, end - pos), " ");
    if (pair.substr(0, 5) == "case=") return std::string(pair.substr(5));
    pos = end + 1;
  }
  return std::nullopt;
}

void FaultQueue::push(std::string name, int times) {
  if (times <= 0) throw std::invalid_argument("emulator: inject() needs times >= 1");
  std::lock_guard lock(mutex_);
  entries_.push_back(Entry{std::move(name), times});
}

std::optional<std::string> FaultQueue::take(const std::function<bool(std::string_view)>& eligible) {
  std::lock_guard lock(mutex_);
  if (entries_.empty() || !eligible(entries_.front().name)) return std::nullopt;
  std::string name = entries_.front().name;
  if (--entries_.front().remaining == 0) entries_.pop_front();
  return name;
}

void FaultQueue::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

bool StopSignal::sleep_for(std::chrono::milliseconds duration) {
  std::unique_lock lock(mutex_);
  return !cv_.wait_for(lock, duration, [this] { return triggered_; });
}

bool StopSignal::triggered() const {
  std::lock_guard lock(mutex_);
  return triggered_;
}

void StopSignal::trigger() {
  {
    std::lock_guard lock(mutex_);
    triggered_ = true;
  }
  cv_.notify_all();
}

void StopSignal::reset() {
  std::lock_guard lock(mutex_);
  triggered_ = false;
}

}  // namespace azkms::emulator
