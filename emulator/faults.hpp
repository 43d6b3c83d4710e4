// Fault cases shared by every emulated endpoint: their names, the per-endpoint queue that
// Emulator::inject() fills, the parser of the drivers' `X-MongoDB-HTTP-TestParams` header, and
// the stop signal that lets long-running faults (slow, giant, response delay) end promptly.
// No HTTP library here: http_faults.hpp turns a case into a response.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace azkms::emulator {

struct FaultCase {
  std::string_view name;
  std::string_view description;
  // Only the Azure Arc endpoint knows the challenge cases (arc-*); they apply to the first,
  // unauthorised request of the challenge rather than to the token request.
  bool arc_challenge = false;
};

// Every case, in the order docs/emulator.md lists them.
const std::vector<FaultCase>& fault_cases();
// The case `name` names; an echo case may carry its parameters ("echo-client-id:token:url").
const FaultCase* find_fault_case(std::string_view name);

// Echo cases: an endpoint that sends a secret back. "echo-<position>[:<what>[:<form>]]" echoes
// the request's own secret (`credential`, the default: its secret header, the Arc key, the
// client assertion; the token when the request carries none) or the token the answer carries
// (`token`: then an opaque token, not shaped like a JSON Web Token, which the answer also
// carries as an access_token; not for `location` and `header`, whose answers carry no token),
// as it is (`raw`, the default), URL-encoded (`url`) or JSON-escaped (`json`), at one position
// of the answer.
struct EchoFault {
  enum class Form : std::uint8_t { kRaw, kUrl, kJson };
  std::string position;  // the case name without "echo-": "client-id", "location", ...
  bool token = false;
  Form form = Form::kRaw;
};
std::optional<EchoFault> parse_echo_fault(std::string_view name);

// The value of `case` in a header such as "case=slow" or "case=404&other=x"; nullopt when the
// header has no `case` parameter.
std::optional<std::string> test_params_case(std::string_view header_value);

inline constexpr std::string_view kTestParamsHeader = "X-MongoDB-HTTP-TestParams";

// Cases queued by inject(): FIFO of (case, remaining uses). Thread-safe.
class FaultQueue {
 public:
  void push(std::string name, int times);
  // Consumes one use of the first queued case when `eligible(name)` holds for it.
  std::optional<std::string> take(const std::function<bool(std::string_view)>& eligible);
  void clear();

 private:
  struct Entry {
    std::string name;
    int remaining;
  };
  std::mutex mutex_;
  std::deque<Entry> entries_;
};

// Set by stop(); waits that would otherwise outlive the server give up at once.
class StopSignal {
 public:
  // Waits for `duration`; false when the signal is (or becomes) triggered.
  bool sleep_for(std::chrono::milliseconds duration);
  [[nodiscard]] bool triggered() const;
  void trigger();
  void reset();

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool triggered_ = false;
};

}  // namespace azkms::emulator
