// RetryPolicy: when to try an identity endpoint (or Key Vault) again, and how long to wait.
// One policy per source kind, as the reference sheet gives it; SourceContext::retry_policy and
// CryptSessionOptions::kms_retry replace it. AttemptReport: what a source tells an observer
// about each attempt.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "azkms/clock.hpp"
#include "azkms/export.h"
#include "azkms/http.hpp"

namespace azkms {

struct AZKMS_EXPORT RetryPolicy {
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
struct AZKMS_EXPORT AttemptReport {
  int attempt = 0;    // 1-based
  int status = 0;     // HTTP status, 0 for a transport error
  std::string error;  // transport error message (no secrets), empty otherwise
  std::chrono::milliseconds wait_before_next{0};  // 0 when no further attempt
};
using AttemptObserver = std::function<void(const AttemptReport&)>;

}  // namespace azkms
