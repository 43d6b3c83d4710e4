// The retry loop shared by every HTTP token source.
//
// Rules it keeps (see retry.hpp and the reference sheet):
//  - a wait never runs past the caller's deadline: when the next wait would, the loop stops
//    and hands back the last outcome instead of sleeping into a certain timeout;
//  - every attempt gets min(per_attempt_timeout, time left);
//  - attempts are bounded by a count (max_attempts; max_attempts_410 for IMDS's 410 window);
//  - Retry-After (delta seconds or an HTTP date), retry-after-ms and x-ms-retry-after-ms
//    lengthen the computed backoff, never shorten it, and are clamped before any arithmetic;
//  - the only way this code waits is Clock::sleep_until, so a ManualClock drives it in tests.
#include "retry.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <optional>
#include <random>
#include <string>

#include "azkms/error.hpp"
#include "log.hpp"
#include "text.hpp"

namespace azkms {
namespace {

using std::chrono::milliseconds;

bool is_transport_retryable(ErrorCode code) noexcept {
  // TLS failures, redirects and oversized bodies come out the same way every time.
  return code == ErrorCode::kTimeout || code == ErrorCode::kConnection;
}

constexpr long long kLongestWaitMs = kLongestRequestedWait.count();
constexpr long long kLongestWaitSeconds = kLongestWaitMs / 1000;

// A header value that is a run of decimal digits (blanks around it allowed), saturating at
// `cap`: a number too long for 64 bits asks for a very long wait, not for none. nullopt for
// anything else (signs, fractions, words).
std::optional<long long> parse_count(std::string_view text, long long cap) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  long long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    // Stops growing once past the cap, so the arithmetic never overflows.
    if (value <= cap) value = value * 10 + (c - '0');
  }
  return std::min(value, cap);
}

// The wait until an HTTP date (RFC 1123, RFC 850, asctime; libcurl's parser). The arithmetic
// is in whole seconds, where a date past 2262 still fits, and the result is clamped before it
// becomes a duration; a date in the past means no wait.
std::optional<milliseconds> wait_until_http_date(const std::string& text, SystemTime now) {
  const std::time_t when = curl_getdate(text.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  const auto since_epoch = now.time_since_epoch();
  const long long now_seconds = std::chrono::floor<std::chrono::seconds>(since_epoch).count();
  // Past the longest wait (a date after 2262 included): stop here, before multiplying.
  if (static_cast<long long>(when) > now_seconds + kLongestWaitSeconds) {
    return kLongestRequestedWait;
  }
  const long long now_ms = std::chrono::floor<milliseconds>(since_epoch).count();
  const long long wait_ms = static_cast<long long>(when) * 1000 - now_ms;
  return milliseconds{std::clamp(wait_ms, 0LL, kLongestWaitMs)};
}

double jitter_factor(double jitter) {
  if (jitter <= 0) return 1.0;
  thread_local std::minstd_rand engine{std::random_device{}()};
  std::uniform_real_distribution<double> distribution(1.0 - jitter, 1.0 + jitter);
  return distribution(engine);
}

// Backoff before attempt `next_attempt` (2-based): initial * multiplier^(n-2), capped, jittered.
// Computed in double and clamped before it becomes a duration, whatever the policy holds.
milliseconds computed_backoff(const RetryPolicy& policy, int next_attempt) {
  double base = static_cast<double>(policy.initial_backoff.count()) *
                std::pow(policy.backoff_multiplier, std::max(0, next_attempt - 2));
  base = std::min(base, static_cast<double>(policy.max_backoff.count()));
  const double jittered = base * jitter_factor(std::clamp(policy.jitter, 0.0, 1.0));
  if (!(jittered > 0)) return milliseconds{0};  // also NaN
  return milliseconds{std::llround(std::min(jittered, static_cast<double>(kLongestWaitMs)))};
}

// The wait before attempt `next_attempt`: the policy's own backoff, or longer when the server
// asks for longer. Never shorter: a server answering "Retry-After: 0" (or a date in the past)
// every time would otherwise get a request storm. Both terms are within kLongestRequestedWait.
milliseconds next_wait(const RetryPolicy& policy, const HttpResponse* response, const Clock& clock,
                       int next_attempt) {
  const milliseconds backoff = computed_backoff(policy, next_attempt);
  if (response == nullptr) return backoff;
  const auto asked = requested_retry_wait(*response, clock.now());
  return asked ? std::max(backoff, *asked) : backoff;
}

std::string describe_outcome(int status, const std::string& error) {
  if (status != 0) return "HTTP " + std::to_string(status);
  return error.empty() ? std::string("transport error") : error;
}

// One line per attempt: its number, how long it took, what came back and what happens next.
// `error` is an azkms::Error's message, redacted already; no response body is ever quoted.
void log_attempt(LogLevel level, int attempt, SteadyTime started, const Clock& clock, int status,
                 const std::string& error, const std::string& next) {
  const auto took = std::chrono::duration_cast<milliseconds>(clock.steady_now() - started);
  std::string line = "identity endpoint: attempt " + std::to_string(attempt) + " (" +
                     std::to_string(took.count()) + " ms): " + describe_outcome(status, error);
  if (!next.empty()) line += "; " + next;
  log(level, line);
}

// Sleeps through the Clock until `until`, riding out wake_all() calls meant for other sleepers,
// unless this thread's exchanges are cancelled (then the next attempt ends the loop at once).
void sleep_through(Clock& clock, SteadyTime until) {
  while (clock.steady_now() < until && !ScopedCancellation::requested()) clock.sleep_until(until);
}

}  // namespace

std::optional<milliseconds> requested_retry_wait(const HttpResponse& response, SystemTime now) {
  for (const char* name : {"retry-after-ms", "x-ms-retry-after-ms"}) {
    if (auto value = response.header(name)) {
      if (auto ms = parse_count(*value, kLongestWaitMs)) return milliseconds{*ms};
    }
  }
  const auto value = response.header("Retry-After");
  if (!value) return std::nullopt;
  if (auto seconds = parse_count(*value, kLongestWaitSeconds)) {
    return std::chrono::seconds{*seconds};
  }
  return wait_until_http_date(*value, now);
}

bool RetryPolicy::is_retryable_status(int status) const noexcept {
  switch (status) {
    case 404:
      return retry_404;
    case 408:
      return retry_408;
    case 410:
      return retry_410;
    case 429:
      return retry_429;
    case 500:
    case 502:
    case 503:
    case 504:
      return retry_server_errors || retry_all_5xx;
    default:
      return retry_all_5xx && status >= 500 && status <= 599;
  }
}

RetryPolicy RetryPolicy::imds() {
  // Microsoft's schedule for IMDS is about 0, 2, 6, 14, 30 s: waits of 2, 4, 8, 16 s.
  RetryPolicy policy;
  policy.max_attempts = 5;
  policy.initial_backoff = milliseconds{2'000};
  policy.backoff_multiplier = 2.0;
  policy.max_backoff = milliseconds{30'000};
  policy.jitter = 0.2;
  policy.keep_retrying_410_for = milliseconds{70'000};
  // The schedule reaches 70 s on the seventh attempt: 0, 2, 6, 14, 30, 60 and 90 s without
  // jitter (waits stop growing at 30 s); 0, 1.6, 4.8, 11.2, 24, 48 and 72 s with the shortest
  // jitter (0.8). Eight attempts cover the window with one to spare, and bound the requests
  // of a 410 spell however short the server's Retry-After.
  policy.max_attempts_410 = 8;
  policy.retry_404 = true;
  policy.retry_410 = true;
  policy.retry_all_5xx = true;
  policy.retry_408 = true;
  policy.retry_429 = true;
  policy.retry_transport_errors = true;
  return policy;
}

RetryPolicy RetryPolicy::identity_endpoint() {
  // The Azure SDKs' defaults for other endpoints: three retries from 0.8 s, doubling.
  RetryPolicy policy;
  policy.max_attempts = 4;
  policy.initial_backoff = milliseconds{800};
  policy.backoff_multiplier = 2.0;
  policy.max_backoff = milliseconds{30'000};
  policy.jitter = 0.2;
  policy.keep_retrying_410_for = milliseconds{0};
  policy.retry_404 = false;
  policy.retry_410 = false;
  policy.retry_all_5xx = false;
  policy.retry_408 = true;
  policy.retry_429 = true;
  policy.retry_transport_errors = true;
  return policy;
}

RetryPolicy RetryPolicy::no_retries() {
  RetryPolicy policy;
  policy.max_attempts = 1;
  policy.retry_404 = false;
  policy.retry_410 = false;
  policy.retry_all_5xx = false;
  policy.retry_server_errors = false;
  policy.retry_408 = false;
  policy.retry_429 = false;
  policy.retry_transport_errors = false;
  return policy;
}

HttpResponse run_with_retries(const RetryPolicy& policy, Clock& clock, Deadline deadline,
                              milliseconds per_attempt_timeout,
                              const std::function<HttpResponse(milliseconds)>& attempt,
                              int* attempts_made, const AttemptObserver& observer) {
  int attempts = 0;
  auto report_count = [&] {
    if (attempts_made != nullptr) *attempts_made = attempts;
  };
  std::optional<HttpResponse> last_response;
  std::optional<Error> last_error;
  const SteadyTime first_start = clock.steady_now();

  // Hands back the last outcome: the response, or the transport error with the count.
  auto finish = [&]() -> HttpResponse {
    report_count();
    if (last_response) return std::move(*last_response);
    if (last_error) throw std::move(last_error->with_attempts(attempts));
    throw Error(ErrorCode::kTimeout, "the deadline passed before any attempt could be made")
        .with_attempts(attempts);
  };

  for (;;) {
    const SteadyTime now = clock.steady_now();
    // Below one millisecond there is no budget to give: a zero timeout means "none" to curl.
    if (deadline < now + milliseconds{1}) return finish();
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - now);
    const milliseconds budget = std::min(per_attempt_timeout, left);

    ++attempts;
    int status = 0;
    std::string error_text;
    last_response.reset();
    last_error.reset();
    try {
      last_response = attempt(budget);
      status = last_response->status;
    } catch (Error& error) {
      if (!policy.retry_transport_errors || !is_transport_retryable(error.code())) {
        log_attempt(LogLevel::kInfo, attempts, now, clock, 0, error.what(), "not retried");
        // Observers see every attempt, including one that ends the loop with an error.
        if (observer) observer(AttemptReport{attempts, 0, error.what(), milliseconds{0}});
        report_count();
        if (error.attempts() == 0) error.with_attempts(attempts);
        throw;
      }
      error_text = error.what();
      last_error = std::move(error);
    }

    const bool retryable = last_response ? policy.is_retryable_status(status) : true;
    if (!retryable) {
      const bool success = status >= 200 && status < 300;
      log_attempt(success ? LogLevel::kDebug : LogLevel::kInfo, attempts, now, clock, status,
                  error_text, success ? "" : "not retried");
      if (observer) observer(AttemptReport{attempts, status, error_text, milliseconds{0}});
      report_count();
      return std::move(*last_response);
    }

    const SteadyTime after = clock.steady_now();
    bool more = attempts < policy.max_attempts;
    if (!more && status == 410 && policy.retry_410) {
      more =
          attempts < policy.max_attempts_410 && after - first_start < policy.keep_retrying_410_for;
    }
    milliseconds wait{0};
    std::string outcome = "no attempt left (" + std::to_string(attempts) + " made)";
    if (more) {
      wait = next_wait(policy, last_response ? &*last_response : nullptr, clock, attempts + 1);
      outcome = "retrying in " + std::to_string(wait.count()) + " ms";
      // The next attempt needs at least a millisecond of budget after the wait.
      if (after + wait + milliseconds{1} > deadline) {
        outcome = "no retry, the next wait (" + std::to_string(wait.count()) +
                  " ms) would pass the deadline";
        more = false;
        wait = milliseconds{0};
      }
    }
    log_attempt(LogLevel::kInfo, attempts, now, clock, status, error_text, outcome);
    if (observer) observer(AttemptReport{attempts, status, error_text, wait});
    if (!more) return finish();

    sleep_through(clock, after + wait);
  }
}

}  // namespace azkms
