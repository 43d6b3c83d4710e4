// RetryPolicy: when to try an identity endpoint again, and how long to wait. One policy per
// source kind, as the reference sheet gives it. The loop that applies it lives in
// run_with_retries(), shared by every HTTP source, and reads time only through Clock.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "azkms/clock.hpp"
#include "azkms/http.hpp"

namespace azkms {

struct RetryPolicy {
  // Total attempts including the first (the deadline may end it sooner).
  int max_attempts = 4;
  // The wait before attempt n (n >= 2) is initial * multiplier^(n-2), at most max_backoff,
  // jittered. A server's Retry-After can lengthen a wait, never shorten it: "Retry-After: 0"
  // on every answer must not turn the loop into a storm.
  std::chrono::milliseconds initial_backoff{500};
  double backoff_multiplier = 2.0;
  std::chrono::milliseconds max_backoff{30'000};
  // Each wait is scaled by a random factor in [1 - jitter, 1 + jitter].
  double jitter = 0.25;
  // IMDS answers 410 while it updates and is back within 70 s: keep retrying 410 (beyond
  // max_attempts) until this much time has passed since the first attempt, deadline allowing,
  std::chrono::milliseconds keep_retrying_410_for{0};
  // ... but never beyond this many attempts in all. Time alone does not bound the requests
  // (waits can be short), so the window has a count of its own.
  int max_attempts_410 = 0;
  bool retry_404 = false;
  bool retry_410 = false;
  bool retry_all_5xx = false;       // IMDS: any 5xx; others: 500, 502, 503, 504 only
  bool retry_server_errors = true;  // 500, 502, 503, 504 (false only in no_retries())
  bool retry_408 = true;
  bool retry_429 = true;
  bool retry_transport_errors = true;  // timeouts of one attempt, refused, reset

  [[nodiscard]] bool is_retryable_status(int status) const noexcept;

  static RetryPolicy imds();               // 404, 410 (70 s), 429, 5xx, timeouts
  static RetryPolicy identity_endpoint();  // 408, 429, 500, 502, 503, 504
  static RetryPolicy no_retries();
};

// What happened on one attempt, for logs, counters and tests.
struct AttemptReport {
  int attempt = 0;    // 1-based
  int status = 0;     // HTTP status, 0 for a transport error
  std::string error;  // transport error message (no secrets), empty otherwise
  std::chrono::milliseconds wait_before_next{0};  // 0 when no further attempt
};
using AttemptObserver = std::function<void(const AttemptReport&)>;

// The longest wait a server can ask for. Anything longer (up to "x-ms-retry-after-ms:
// 9223372036854775807" or a date past 2262) is read as this, before any arithmetic, and then
// ends the loop because it passes any deadline azkms accepts.
inline constexpr std::chrono::milliseconds kLongestRequestedWait{24LL * 3600 * 1000};

// The wait an answer asks for before the next attempt: retry-after-ms or x-ms-retry-after-ms
// (milliseconds), else Retry-After (delta seconds, or an HTTP date read against `now`; a date
// in the past means no wait). nullopt when the answer asks for none or says it unreadably.
// Always within [0, kLongestRequestedWait], whatever the headers say.
std::optional<std::chrono::milliseconds> requested_retry_wait(const HttpResponse& response,
                                                              SystemTime now);

// Calls `attempt(budget)` until it returns a response that is not a retryable status, the
// policy gives up, or the deadline leaves no room. `budget` is min(per_attempt_timeout, time
// left). Transport errors (azkms::Error from the HTTP client) are retried when the policy
// says so. Returns the last response (whatever its status); throws the last transport error,
// or ErrorCode::kTimeout when the deadline passed before any answer, with attempts() set.
// Honours requested_retry_wait() when it fits in the deadline; every wait is at least the
// policy's own backoff for that attempt.
HttpResponse run_with_retries(const RetryPolicy& policy, Clock& clock, Deadline deadline,
                              std::chrono::milliseconds per_attempt_timeout,
                              const std::function<HttpResponse(std::chrono::milliseconds)>& attempt,
                              int* attempts_made = nullptr,
                              const AttemptObserver& observer = nullptr);

}  // namespace azkms
