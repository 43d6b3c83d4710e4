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
  std::chrono::milliseconds initial_backoff{500};
  double backoff_multiplier = 2.0;
  std::chrono::milliseconds max_backoff{30'000};
  // Each wait is scaled by a random factor in [1 - jitter, 1 + jitter].
  double jitter = 0.25;
  // IMDS answers 410 while it updates and is back within 70 s: keep retrying 410 (beyond
  // max_attempts) until this much time has passed since the first attempt, deadline allowing.
  std::chrono::milliseconds keep_retrying_410_for{0};
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

// Calls `attempt(budget)` until it returns a response that is not a retryable status, the
// policy gives up, or the deadline leaves no room. `budget` is min(per_attempt_timeout, time
// left). Transport errors (azkms::Error from the HTTP client) are retried when the policy
// says so. Returns the last response (whatever its status); throws the last transport error,
// or ErrorCode::kTimeout when the deadline passed before any answer, with attempts() set.
// Honours Retry-After (seconds) on 429/503 and similar when it fits in the deadline.
HttpResponse run_with_retries(const RetryPolicy& policy, Clock& clock, Deadline deadline,
                              std::chrono::milliseconds per_attempt_timeout,
                              const std::function<HttpResponse(std::chrono::milliseconds)>& attempt,
                              int* attempts_made = nullptr,
                              const AttemptObserver& observer = nullptr);

}  // namespace azkms
