// The retry loop shared by every HTTP token source and the Key Vault exchange (retry.cpp), and
// the reading of the waits a server asks for. Internal to the library: users choose a
// RetryPolicy (azkms/retry.hpp), never call the loop.
#pragma once

#include <chrono>
#include <functional>
#include <optional>

#include "azkms/clock.hpp"
#include "azkms/http.hpp"
#include "azkms/retry.hpp"

namespace azkms {

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
