// The retry policy and loop, driven by a clock on which sleeping takes no real time.
#include "retry.hpp"

#include <gtest/gtest.h>

#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "auto_advance_clock.hpp"
#include "azkms/error.hpp"
#include "azkms/log.hpp"

namespace azkms {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AutoAdvanceClock;

HttpResponse response(int status, std::vector<HttpHeader> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.headers = std::move(headers);
  r.body = status == 200 ? "{}" : "{\"error\":\"x\"}";
  return r;
}

RetryPolicy without_jitter(RetryPolicy policy) {
  policy.jitter = 0;
  return policy;
}

// Records when each attempt started (relative to the clock's zero) and the budget it got,
// and answers from a script; the last entry repeats.
struct ScriptedEndpoint {
  ScriptedEndpoint(AutoAdvanceClock& c, std::vector<std::function<HttpResponse()>> answers)
      : clock(c), script(std::move(answers)) {}

  AutoAdvanceClock& clock;
  std::vector<std::function<HttpResponse()>> script;
  std::vector<milliseconds> starts;
  std::vector<milliseconds> budgets;
  milliseconds attempt_takes{0};

  HttpResponse operator()(milliseconds budget) {
    starts.push_back(std::chrono::duration_cast<milliseconds>(clock.elapsed()));
    budgets.push_back(budget);
    const std::size_t index = std::min(starts.size() - 1, script.size() - 1);
    clock.advance(std::min(attempt_takes, budget));
    return script[index]();
  }
};

std::function<HttpResponse()> answer(int status, std::vector<HttpHeader> headers = {}) {
  return [status, headers] { return response(status, headers); };
}

std::function<HttpResponse()> fail(ErrorCode code) {
  return [code]() -> HttpResponse { throw Error(code, "simulated transport failure"); };
}

std::string http_date(SystemTime when) {
  const std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buffer;
}

TEST(RetryPolicy, ImdsRetriesUpdatingThrottlingAndEveryServerError) {
  const RetryPolicy policy = RetryPolicy::imds();
  for (int status : {404, 408, 410, 429, 500, 501, 502, 503, 504, 505, 599}) {
    EXPECT_TRUE(policy.is_retryable_status(status)) << status;
  }
  for (int status : {200, 201, 301, 400, 401, 403, 405, 409, 411, 499, 600}) {
    EXPECT_FALSE(policy.is_retryable_status(status)) << status;
  }
  EXPECT_TRUE(policy.retry_transport_errors);
  EXPECT_GE(policy.keep_retrying_410_for, seconds{70});
}

TEST(RetryPolicy, OtherEndpointsRetryOnlyTheListedStatuses) {
  const RetryPolicy policy = RetryPolicy::identity_endpoint();
  for (int status : {408, 429, 500, 502, 503, 504}) {
    EXPECT_TRUE(policy.is_retryable_status(status)) << status;
  }
  for (int status : {200, 400, 401, 403, 404, 410, 501, 505, 599}) {
    EXPECT_FALSE(policy.is_retryable_status(status)) << status;
  }
  EXPECT_EQ(policy.keep_retrying_410_for, milliseconds{0});
}

TEST(RetryPolicy, NoRetriesRetriesNothing) {
  const RetryPolicy policy = RetryPolicy::no_retries();
  EXPECT_EQ(policy.max_attempts, 1);
  for (int status : {404, 408, 410, 429, 500, 502, 503, 504, 599}) {
    EXPECT_FALSE(policy.is_retryable_status(status)) << status;
  }
  EXPECT_FALSE(policy.retry_transport_errors);
}

TEST(RunWithRetries, ImdsFollowsMicrosoftsSchedule) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(500)}};
  int attempts = 0;
  const HttpResponse last =
      run_with_retries(without_jitter(RetryPolicy::imds()), clock, clock.steady_now() + seconds{60},
                       seconds{10}, std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 500);
  EXPECT_EQ(attempts, 5);
  const std::vector<milliseconds> expected{milliseconds{0}, seconds{2}, seconds{6}, seconds{14},
                                           seconds{30}};
  EXPECT_EQ(endpoint.starts, expected);
}

TEST(RunWithRetries, JitterKeepsEachWaitWithinItsBand) {
  RetryPolicy policy = RetryPolicy::imds();
  policy.jitter = 0.25;
  std::vector<milliseconds> seen;
  for (int run = 0; run < 50; ++run) {
    AutoAdvanceClock clock;
    ScriptedEndpoint endpoint{clock, {answer(503)}};
    run_with_retries(policy, clock, clock.steady_now() + seconds{120}, seconds{10},
                     std::ref(endpoint));
    const auto sleeps = clock.sleeps();
    ASSERT_EQ(sleeps.size(), 4u);
    for (std::size_t i = 0; i < sleeps.size(); ++i) {
      const double base = 2000.0 * (1 << i);
      const auto ms = std::chrono::duration_cast<milliseconds>(sleeps[i]).count();
      EXPECT_GE(ms, base * 0.75 - 1) << i;
      EXPECT_LE(ms, base * 1.25 + 1) << i;
    }
    seen.push_back(std::chrono::duration_cast<milliseconds>(sleeps[0]));
  }
  // Jitter actually varies the waits (50 identical draws would mean it is not applied).
  std::sort(seen.begin(), seen.end());
  EXPECT_NE(seen.front(), seen.back());
}

TEST(RunWithRetries, BackoffIsCappedAtMaxBackoff) {
  RetryPolicy policy = without_jitter(RetryPolicy::identity_endpoint());
  policy.max_attempts = 8;
  policy.initial_backoff = seconds{1};
  policy.max_backoff = seconds{5};
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(503)}};
  run_with_retries(policy, clock, clock.steady_now() + seconds{600}, seconds{10},
                   std::ref(endpoint));
  const std::vector<std::chrono::nanoseconds> expected{
      seconds{1}, seconds{2}, seconds{4}, seconds{5}, seconds{5}, seconds{5}, seconds{5}};
  EXPECT_EQ(clock.sleeps(), expected);
}

TEST(RunWithRetries, SucceedsOnceTheEndpointRecovers) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(404), answer(429), answer(200)}};
  int attempts = 0;
  const HttpResponse last =
      run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{60}, seconds{10},
                       std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(attempts, 3);
}

TEST(RunWithRetries, NeverRetriesOtherClientErrors) {
  for (int status : {400, 401, 403}) {
    for (const RetryPolicy& policy : {RetryPolicy::imds(), RetryPolicy::identity_endpoint()}) {
      AutoAdvanceClock clock;
      ScriptedEndpoint endpoint{clock, {answer(status), answer(200)}};
      int attempts = 0;
      const HttpResponse last = run_with_retries(policy, clock, clock.steady_now() + seconds{60},
                                                 seconds{10}, std::ref(endpoint), &attempts);
      EXPECT_EQ(last.status, status);
      EXPECT_EQ(attempts, 1);
      EXPECT_TRUE(clock.sleeps().empty());
    }
  }
}

TEST(RunWithRetries, OtherEndpointsDoNotRetry404Or410) {
  for (int status : {404, 410}) {
    AutoAdvanceClock clock;
    ScriptedEndpoint endpoint{clock, {answer(status), answer(200)}};
    int attempts = 0;
    const HttpResponse last =
        run_with_retries(RetryPolicy::identity_endpoint(), clock, clock.steady_now() + seconds{60},
                         seconds{10}, std::ref(endpoint), &attempts);
    EXPECT_EQ(last.status, status);
    EXPECT_EQ(attempts, 1);
  }
}

TEST(RunWithRetries, ImdsKeepsRetrying410ForSeventySeconds) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(410)}};
  int attempts = 0;
  const HttpResponse last = run_with_retries(without_jitter(RetryPolicy::imds()), clock,
                                             clock.steady_now() + seconds{300}, seconds{10},
                                             std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 410);
  EXPECT_GT(attempts, RetryPolicy::imds().max_attempts);
  // The last attempt starts at or after 70 s, and no later than one capped wait beyond.
  EXPECT_GE(endpoint.starts.back(), seconds{70});
  EXPECT_LE(endpoint.starts.back(), seconds{70} + RetryPolicy::imds().max_backoff);
}

TEST(RunWithRetries, ImdsRecoversFromA410Spell) {
  AutoAdvanceClock clock;
  // Six 410s carry the loop past max_attempts (5); the 410 rule keeps it going.
  ScriptedEndpoint endpoint{
      clock,
      {answer(410), answer(410), answer(410), answer(410), answer(410), answer(410), answer(200)}};
  int attempts = 0;
  const HttpResponse last =
      run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{300}, seconds{10},
                       std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(attempts, 7);
}

TEST(RunWithRetries, The410RuleStillStopsAtTheDeadline) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(410)}};
  const Deadline deadline = clock.steady_now() + seconds{20};
  const HttpResponse last =
      run_with_retries(RetryPolicy::imds(), clock, deadline, seconds{10}, std::ref(endpoint));
  EXPECT_EQ(last.status, 410);
  EXPECT_LE(clock.steady_now(), deadline);
}

TEST(RunWithRetries, RetryAfterSecondsReplacesTheBackoff) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(429, {{"Retry-After", "7"}}), answer(200)}};
  const HttpResponse last =
      run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{60}, seconds{10},
                       std::ref(endpoint));
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(clock.sleeps(), std::vector<std::chrono::nanoseconds>{seconds{7}});
}

TEST(RunWithRetries, RetryAfterHttpDateIsReadAgainstTheClock) {
  AutoAdvanceClock clock;
  const std::string when = http_date(clock.now() + seconds{12});
  ScriptedEndpoint endpoint{clock, {answer(503, {{"retry-after", when}}), answer(200)}};
  const HttpResponse last =
      run_with_retries(RetryPolicy::identity_endpoint(), clock, clock.steady_now() + seconds{60},
                       seconds{10}, std::ref(endpoint));
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(clock.sleeps(), std::vector<std::chrono::nanoseconds>{seconds{12}});
}

TEST(RunWithRetries, RetryAfterMillisecondsHeadersAreHonoured) {
  RetryPolicy policy = without_jitter(RetryPolicy::imds());
  policy.initial_backoff = milliseconds{100};  // shorter than what the server asks
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock,
                            {answer(429, {{"x-ms-retry-after-ms", "1500"}}),
                             answer(429, {{"retry-after-ms", "250"}}), answer(200)}};
  run_with_retries(policy, clock, clock.steady_now() + seconds{60}, seconds{10},
                   std::ref(endpoint));
  const std::vector<std::chrono::nanoseconds> expected{milliseconds{1500}, milliseconds{250}};
  EXPECT_EQ(clock.sleeps(), expected);
}

// ---- hostile Retry-After values: the storm and overflow cases ----

// An endpoint that must not be asked more than `limit` times: past that it answers 200, so
// that a loop without a bound ends (and the test fails on the count) instead of hanging.
ScriptedEndpoint bounded_endpoint(AutoAdvanceClock& clock, std::function<HttpResponse()> fault,
                                  std::size_t limit = 100'000) {
  ScriptedEndpoint endpoint{clock, {}};
  auto calls = std::make_shared<std::size_t>(0);
  endpoint.script = {[fault, calls, limit] { return ++*calls > limit ? response(200) : fault(); }};
  // Each attempt takes a millisecond, so that time moves even when the loop never sleeps.
  endpoint.attempt_takes = milliseconds{1};
  return endpoint;
}

TEST(RunWithRetries, Imds410WithRetryAfterZeroIsBoundedByCountAndBackoff) {
  // IMDS answering 410 with "Retry-After: 0" once got over 100,000 requests in 5 s.
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint = bounded_endpoint(clock, answer(410, {{"Retry-After", "0"}}));
  int attempts = 0;
  const HttpResponse last = run_with_retries(without_jitter(RetryPolicy::imds()), clock,
                                             clock.steady_now() + seconds{300}, seconds{10},
                                             std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 410);
  EXPECT_LE(attempts, 8);
  EXPECT_GE(attempts, RetryPolicy::imds().max_attempts);
  // The server cannot shorten the policy's own backoff (2, 4, 8, 16, 30 s... without jitter).
  const auto sleeps = clock.sleeps();
  ASSERT_FALSE(sleeps.empty());
  for (const auto& sleep : sleeps) EXPECT_GE(sleep, seconds{2});
}

TEST(RunWithRetries, RetryAfterZeroNeverShortensTheBackoff) {
  for (const char* zero : {"0", " 0 ", "Thu, 01 Jan 1970 00:00:00 GMT"}) {
    AutoAdvanceClock clock;
    ScriptedEndpoint endpoint = bounded_endpoint(clock, answer(503, {{"Retry-After", zero}}));
    run_with_retries(without_jitter(RetryPolicy::identity_endpoint()), clock,
                     clock.steady_now() + seconds{60}, seconds{10}, std::ref(endpoint));
    const std::vector<std::chrono::nanoseconds> expected{milliseconds{800}, milliseconds{1600},
                                                         milliseconds{3200}};
    EXPECT_EQ(clock.sleeps(), expected) << zero;
  }
  for (const char* header : {"retry-after-ms", "x-ms-retry-after-ms"}) {
    AutoAdvanceClock clock;
    ScriptedEndpoint endpoint = bounded_endpoint(clock, answer(429, {{header, "0"}}));
    run_with_retries(without_jitter(RetryPolicy::identity_endpoint()), clock,
                     clock.steady_now() + seconds{60}, seconds{10}, std::ref(endpoint));
    EXPECT_EQ(clock.sleeps().size(), 3u) << header;
    for (const auto& sleep : clock.sleeps()) EXPECT_GE(sleep, milliseconds{800}) << header;
  }
}

TEST(RunWithRetries, AHugeRetryAfterEndsTheLoopWithoutOverflow) {
  // Each asks for a wait far beyond any deadline; read naively, each overflows the time
  // arithmetic (UBSan reports it) and the wrapped-around wait retries at once.
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"x-ms-retry-after-ms", "9223372036854775807"},
           {"retry-after-ms", "9223372036854775807"},
           {"x-ms-retry-after-ms", "99999999999999999999999999"},
           {"Retry-After", "9223372036854775807"},
           {"Retry-After", "99999999999999999999999999"},
           {"Retry-After", "Thu, 01 Jan 2263 00:00:00 GMT"},
           {"Retry-After", "Mon, 01 Jan 2300 00:00:00 GMT"},
           {"Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"}}) {
    for (int status : {410, 429, 503}) {
      SCOPED_TRACE(name + ": " + value + " on " + std::to_string(status));
      AutoAdvanceClock clock;
      ScriptedEndpoint endpoint = bounded_endpoint(clock, answer(status, {{name, value}}));
      int attempts = 0;
      const HttpResponse last =
          run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{600},
                           seconds{10}, std::ref(endpoint), &attempts);
      EXPECT_EQ(last.status, status);
      EXPECT_EQ(attempts, 1);
      EXPECT_TRUE(clock.sleeps().empty());
    }
  }
}

TEST(RunWithRetries, The410WindowHasACountAsWellAsATime) {
  // Waits that the server keeps short (the policy's own, here) cannot stretch a 410 spell
  // into more than max_attempts_410 requests.
  RetryPolicy policy = without_jitter(RetryPolicy::imds());
  policy.initial_backoff = milliseconds{10};
  policy.max_backoff = milliseconds{10};
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint = bounded_endpoint(clock, answer(410));
  int attempts = 0;
  run_with_retries(policy, clock, clock.steady_now() + seconds{300}, seconds{10},
                   std::ref(endpoint), &attempts);
  EXPECT_EQ(attempts, policy.max_attempts_410);
}

TEST(RunWithRetries, TheAttemptCapStillCoversImdsSeventySecondWindow) {
  // With any jitter draw, the schedule reaches 70 s before the hard cap stops it.
  for (int run = 0; run < 200; ++run) {
    AutoAdvanceClock clock;
    ScriptedEndpoint endpoint{clock, {answer(410)}};
    int attempts = 0;
    run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{300}, seconds{10},
                     std::ref(endpoint), &attempts);
    EXPECT_GE(endpoint.starts.back(), seconds{70}) << "run " << run;
    EXPECT_LE(attempts, RetryPolicy::imds().max_attempts_410);
  }
}

TEST(RunWithRetries, AbsurdPolicyValuesDoNotOverflow) {
  RetryPolicy policy = RetryPolicy::identity_endpoint();
  policy.initial_backoff = milliseconds::max();
  policy.max_backoff = milliseconds::max();
  policy.backoff_multiplier = 1e308;
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(503)}};
  int attempts = 0;
  run_with_retries(policy, clock, clock.steady_now() + seconds{60}, seconds{10}, std::ref(endpoint),
                   &attempts);
  EXPECT_EQ(attempts, 1);  // the first wait already passes the deadline
}

TEST(RunWithRetries, AFarDeadlineDoesNotOverflow) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{
      clock, {answer(503, {{"x-ms-retry-after-ms", "9223372036854775807"}}), answer(200)}};
  int attempts = 0;
  const HttpResponse last =
      run_with_retries(RetryPolicy::identity_endpoint(), clock, Deadline::max(), seconds{10},
                       std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(clock.sleeps(), std::vector<std::chrono::nanoseconds>{kLongestRequestedWait});
  // A deadline at the other end is simply past.
  EXPECT_THROW(run_with_retries(RetryPolicy::identity_endpoint(), clock, Deadline::min(),
                                seconds{10}, std::ref(endpoint)),
               Error);
}

TEST(RequestedRetryWait, ReadsEveryShapeAndClampsIt) {
  const SystemTime now{seconds{1'700'000'000}};
  auto wait = [&](std::vector<HttpHeader> headers) {
    return requested_retry_wait(response(429, std::move(headers)), now);
  };
  EXPECT_EQ(wait({}), std::nullopt);
  EXPECT_EQ(wait({{"Retry-After", "7"}}), seconds{7});
  EXPECT_EQ(wait({{"retry-after", " 7\t"}}), seconds{7});
  EXPECT_EQ(wait({{"x-ms-retry-after-ms", "1500"}}), milliseconds{1500});
  // The millisecond headers come first.
  EXPECT_EQ(wait({{"Retry-After", "7"}, {"retry-after-ms", "250"}}), milliseconds{250});
  EXPECT_EQ(wait({{"Retry-After", http_date(now + seconds{12})}}), seconds{12});
  EXPECT_EQ(wait({{"Retry-After", http_date(now - seconds{12})}}), milliseconds{0});
  for (const char* huge : {"9223372036854775807", "18446744073709551616", "86400001"}) {
    EXPECT_EQ(wait({{"x-ms-retry-after-ms", huge}}), kLongestRequestedWait) << huge;
    EXPECT_EQ(wait({{"Retry-After", huge}}), kLongestRequestedWait) << huge;
  }
  EXPECT_EQ(wait({{"Retry-After", "Fri, 01 Jan 2500 00:00:00 GMT"}}), kLongestRequestedWait);
  for (const char* junk : {"", " ", "-1", "+5", "1.5", "soon", "0x10", "1e3", "5 s"}) {
    EXPECT_EQ(wait({{"Retry-After", junk}}), std::nullopt) << junk;
    EXPECT_EQ(wait({{"x-ms-retry-after-ms", junk}}), std::nullopt) << junk;
  }
  // Against a clock late in SystemTime's range, a date beyond it is still just "too long".
  const SystemTime late = SystemTime::max() - std::chrono::hours{24 * 365};
  EXPECT_EQ(
      requested_retry_wait(response(429, {{"Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"}}), late),
      kLongestRequestedWait);
}

TEST(RunWithRetries, UnparseableRetryAfterFallsBackToBackoff) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(429, {{"Retry-After", "soon"}}), answer(200)}};
  run_with_retries(without_jitter(RetryPolicy::imds()), clock, clock.steady_now() + seconds{60},
                   seconds{10}, std::ref(endpoint));
  EXPECT_EQ(clock.sleeps(), std::vector<std::chrono::nanoseconds>{seconds{2}});
}

TEST(RunWithRetries, RetryAfterBeyondTheDeadlineEndsTheLoopAtOnce) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(429, {{"Retry-After", "30"}}), answer(200)}};
  int attempts = 0;
  const HttpResponse last =
      run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{10}, seconds{10},
                       std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 429);
  EXPECT_EQ(attempts, 1);
  EXPECT_TRUE(clock.sleeps().empty());
  EXPECT_EQ(clock.elapsed(), std::chrono::nanoseconds{0});
}

TEST(RunWithRetries, NoWaitRunsPastTheDeadline) {
  // Waits of 2, 4, 8 s from t=0 put attempts at 0, 2, 6, 14: with a 10 s deadline the loop
  // stops after the attempt at 6 s instead of sleeping to 14 s.
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(500)}};
  const Deadline deadline = clock.steady_now() + seconds{10};
  int attempts = 0;
  const HttpResponse last = run_with_retries(without_jitter(RetryPolicy::imds()), clock, deadline,
                                             seconds{10}, std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 500);
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(clock.elapsed(), seconds{6});
}

TEST(RunWithRetries, EachAttemptGetsTheSmallerOfItsTimeoutAndTheTimeLeft) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(503)}};
  endpoint.attempt_takes = seconds{3};  // each attempt uses 3 s of its budget
  RetryPolicy policy = without_jitter(RetryPolicy::identity_endpoint());
  policy.initial_backoff = seconds{1};
  run_with_retries(policy, clock, clock.steady_now() + seconds{12}, seconds{5}, std::ref(endpoint));
  // Attempt 1 at 0 s (budget 5), ends 3 s, wait 1 -> attempt 2 at 4 s (budget 5), ends 7 s,
  // wait 2 -> attempt 3 at 9 s (budget 3, the time left), ends 12 s: nothing left.
  const std::vector<milliseconds> starts{seconds{0}, seconds{4}, seconds{9}};
  const std::vector<milliseconds> budgets{seconds{5}, seconds{5}, seconds{3}};
  EXPECT_EQ(endpoint.starts, starts);
  EXPECT_EQ(endpoint.budgets, budgets);
}

TEST(RunWithRetries, TransportErrorsAreRetried) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock,
                            {fail(ErrorCode::kConnection), fail(ErrorCode::kTimeout), answer(200)}};
  int attempts = 0;
  const HttpResponse last =
      run_with_retries(RetryPolicy::identity_endpoint(), clock, clock.steady_now() + seconds{60},
                       seconds{10}, std::ref(endpoint), &attempts);
  EXPECT_EQ(last.status, 200);
  EXPECT_EQ(attempts, 3);
}

TEST(RunWithRetries, TheLastTransportErrorCarriesTheAttemptCount) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {fail(ErrorCode::kConnection)}};
  int attempts = 0;
  try {
    run_with_retries(RetryPolicy::identity_endpoint(), clock, clock.steady_now() + seconds{60},
                     seconds{10}, std::ref(endpoint), &attempts);
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kConnection);
    EXPECT_EQ(error.attempts(), 4);
    EXPECT_NE(std::string(error.what()).find("simulated transport failure"), std::string::npos);
  }
  EXPECT_EQ(attempts, 4);
}

TEST(RunWithRetries, TlsAndRedirectFailuresAreNotRetried) {
  for (ErrorCode code : {ErrorCode::kTls, ErrorCode::kRedirect, ErrorCode::kResponseTooLarge}) {
    AutoAdvanceClock clock;
    ScriptedEndpoint endpoint{clock, {fail(code), answer(200)}};
    int attempts = 0;
    try {
      run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{60}, seconds{10},
                       std::ref(endpoint), &attempts);
      FAIL() << "expected an Error";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), code);
      EXPECT_EQ(error.attempts(), 1);
    }
    EXPECT_EQ(attempts, 1);
  }
}

TEST(RunWithRetries, NoRetriesMakesOneAttempt) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {fail(ErrorCode::kConnection), answer(200)}};
  EXPECT_THROW(run_with_retries(RetryPolicy::no_retries(), clock, clock.steady_now() + seconds{60},
                                seconds{10}, std::ref(endpoint)),
               Error);
  EXPECT_EQ(endpoint.starts.size(), 1u);
  ScriptedEndpoint failing{clock, {answer(503), answer(200)}};
  EXPECT_EQ(run_with_retries(RetryPolicy::no_retries(), clock, clock.steady_now() + seconds{60},
                             seconds{10}, std::ref(failing))
                .status,
            503);
  EXPECT_EQ(failing.starts.size(), 1u);
}

TEST(RunWithRetries, APassedDeadlineIsATimeoutWithoutAnyAttempt) {
  AutoAdvanceClock clock;
  clock.advance(seconds{5});
  ScriptedEndpoint endpoint{clock, {answer(200)}};
  int attempts = -1;
  try {
    run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() - seconds{1}, seconds{10},
                     std::ref(endpoint), &attempts);
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTimeout);
    EXPECT_EQ(error.attempts(), 0);
  }
  EXPECT_EQ(attempts, 0);
  EXPECT_TRUE(endpoint.starts.empty());
}

TEST(RunWithRetries, AnEarlyWakeDoesNotShortenTheBackoff) {
  // wake_all() is meant for background threads that are stopping; a retry sleeping on the
  // same clock must go back to sleep rather than hit the endpoint early.
  AutoAdvanceClock clock;
  clock.add_spurious_wakes(2);
  ScriptedEndpoint endpoint{clock, {answer(503), answer(200)}};
  run_with_retries(without_jitter(RetryPolicy::identity_endpoint()), clock,
                   clock.steady_now() + seconds{60}, seconds{10}, std::ref(endpoint));
  const std::vector<milliseconds> starts{seconds{0}, milliseconds{800}};
  EXPECT_EQ(endpoint.starts, starts);
}

TEST(RunWithRetries, ObserverSeesEveryAttemptAndItsWait) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(500), fail(ErrorCode::kConnection), answer(200)}};
  std::vector<AttemptReport> reports;
  run_with_retries(without_jitter(RetryPolicy::imds()), clock, clock.steady_now() + seconds{60},
                   seconds{10}, std::ref(endpoint), nullptr,
                   [&](const AttemptReport& report) { reports.push_back(report); });
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[0].attempt, 1);
  EXPECT_EQ(reports[0].status, 500);
  EXPECT_EQ(reports[0].wait_before_next, seconds{2});
  EXPECT_EQ(reports[1].attempt, 2);
  EXPECT_EQ(reports[1].status, 0);
  EXPECT_FALSE(reports[1].error.empty());
  EXPECT_EQ(reports[1].wait_before_next, seconds{4});
  EXPECT_EQ(reports[2].status, 200);
  EXPECT_EQ(reports[2].wait_before_next, milliseconds{0});
}

TEST(RunWithRetries, ObserverSeesAnAttemptThatEndsWithAnUnretryableError) {
  AutoAdvanceClock clock;
  ScriptedEndpoint endpoint{clock, {answer(503), fail(ErrorCode::kTls)}};
  std::vector<AttemptReport> reports;
  EXPECT_THROW(
      run_with_retries(without_jitter(RetryPolicy::identity_endpoint()), clock,
                       clock.steady_now() + seconds{60}, seconds{10}, std::ref(endpoint), nullptr,
                       [&](const AttemptReport& report) { reports.push_back(report); }),
      Error);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[1].attempt, 2);
  EXPECT_EQ(reports[1].status, 0);
  EXPECT_FALSE(reports[1].error.empty());
  EXPECT_EQ(reports[1].wait_before_next, milliseconds{0});
}

TEST(RunWithRetries, RetriesAreLoggedWithoutResponseBodies) {
  std::vector<std::string> lines;
  std::mutex mutex;
  set_log_hook([&](LogLevel, std::string_view message) {
    std::lock_guard lock(mutex);
    lines.emplace_back(message);
  });
  AutoAdvanceClock clock;
  HttpResponse secret_echo = response(500);
  secret_echo.body = "{\"access_token\":\"eyJ-very-secret\"}";
  ScriptedEndpoint endpoint{clock, {[&] { return secret_echo; }, answer(200)}};
  run_with_retries(RetryPolicy::imds(), clock, clock.steady_now() + seconds{60}, seconds{10},
                   std::ref(endpoint));
  set_log_hook(nullptr);
  ASSERT_FALSE(lines.empty());
  EXPECT_NE(lines[0].find("500"), std::string::npos);
  for (const auto& line : lines) EXPECT_EQ(line.find("eyJ"), std::string::npos) << line;
}

}  // namespace
}  // namespace azkms
