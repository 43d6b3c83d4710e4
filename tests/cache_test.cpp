// Every rule of the token cache, timed by a ManualClock. Waiting helpers poll real time only
// as a guard against hangs; no assertion depends on how long anything took.
#include "azkms/cache.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/log.hpp"

namespace azkms {
namespace {

using namespace std::chrono_literals;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

// Polls `predicate` until it holds; gives up after 20 s of real time (a hang guard).
template <class Predicate>
bool eventually(Predicate predicate) {
  for (int i = 0; i < 20'000; ++i) {
    if (predicate()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return predicate();
}

// Whether a future finished; 20 s of real time as a hang guard.
template <class T>
bool finishes(std::future<T>& future) {
  return future.wait_for(20s) == std::future_status::ready;
}

// A token source that counts calls and can be held, made to fail, or given a lifetime.
class FakeSource final : public TokenSource {
 public:
  explicit FakeSource(std::shared_ptr<Clock> clock, std::string label = "fake")
      : clock_(std::move(clock)), label_(std::move(label)) {}

  [[nodiscard]] SourceKind kind() const override { return SourceKind::kCustom; }
  [[nodiscard]] std::string name() const override { return "Fake " + label_; }

  AccessToken fetch(const TokenRequest& request, Deadline) override {
    std::unique_lock lock(mutex_);
    const int call = ++calls_;
    threads_.push_back(std::this_thread::get_id());
    ++in_flight_;
    changed_.notify_all();
    // Released by the test; the real-time bound only keeps a failing test from hanging.
    const bool released = changed_.wait_for(lock, 30s, [&] { return !held_; });
    --in_flight_;
    changed_.notify_all();
    if (!released) throw Error(ErrorCode::kTimeout, "fake source held for too long");
    if (failing_) throw Error(ErrorCode::kConnection, "identity endpoint refused the connection");
    AccessToken token;
    token.token = Secret("secret-" + label_ + "-" + std::to_string(call));
    token.resource = request.resource;
    token.expires_on = clock_->now() + lifetime_;
    if (refresh_in_) token.refresh_on = clock_->now() + *refresh_in_;
    token.source = name();
    return token;
  }

  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    held_ = false;
    changed_.notify_all();
  }
  void set_failing(bool failing) {
    std::lock_guard lock(mutex_);
    failing_ = failing;
  }
  void set_lifetime(std::chrono::seconds lifetime) {
    std::lock_guard lock(mutex_);
    lifetime_ = lifetime;
  }
  void set_refresh_in(std::optional<std::chrono::seconds> refresh_in) {
    std::lock_guard lock(mutex_);
    refresh_in_ = refresh_in;
  }
  int calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  int in_flight() const {
    std::lock_guard lock(mutex_);
    return in_flight_;
  }
  std::vector<std::thread::id> threads() const {
    std::lock_guard lock(mutex_);
    return threads_;
  }

 private:
  std::shared_ptr<Clock> clock_;
  std::string label_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int calls_ = 0;
  int in_flight_ = 0;
  bool held_ = false;
  bool failing_ = false;
  std::chrono::seconds lifetime_ = hours{1};
  std::optional<std::chrono::seconds> refresh_in_;
  std::vector<std::thread::id> threads_;
};

// Collects the cache's events so a test can wait for the next one.
class Events {
 public:
  std::function<void(const CacheEvent&)> hook() {
    return [this](const CacheEvent& event) {
      std::lock_guard lock(mutex_);
      events_.push_back(event);
    };
  }
  // The next event not yet taken (fails the test rather than hang).
  CacheEvent next() {
    CacheEvent event;
    const bool arrived = eventually([&] {
      std::lock_guard lock(mutex_);
      if (events_.empty()) return false;
      event = events_.front();
      events_.pop_front();
      return true;
    });
    EXPECT_TRUE(arrived) << "no cache event arrived";
    return event;
  }
  std::size_t pending() {
    std::lock_guard lock(mutex_);
    return events_.size();
  }

 private:
  std::mutex mutex_;
  std::deque<CacheEvent> events_;
};

std::string text(const AccessToken& token) { return token.token.reveal(); }

class CacheTest : public ::testing::Test {
 protected:
  CacheTest() {
    options.clock = clock;
    options.on_event = events.hook();
  }

  Deadline far() const { return clock->steady_now() + hours{24}; }
  std::unique_ptr<TokenCache> make_cache() { return std::make_unique<TokenCache>(options); }

  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<FakeSource> source = std::make_shared<FakeSource>(clock);
  Events events;
  CacheOptions options;
};

// ---- renewal timing, as a pure function ---------------------------------------------------

AccessToken token_living(SystemTime now, SystemTime::duration lifetime,
                         std::optional<SystemTime::duration> refresh_in = std::nullopt) {
  AccessToken token;
  token.expires_on = now + lifetime;
  if (refresh_in) token.refresh_on = now + *refresh_in;
  return token;
}

TEST(PlanRenewal, SeventySecondTokenIsUsableTenSecondsAndRenewedHalfway) {
  const SystemTime now{seconds{1'000'000}};
  const RenewalPlan plan = plan_renewal(token_living(now, seconds{70}), now, {});
  EXPECT_TRUE(plan.reusable);
  EXPECT_EQ(plan.usable_until, now + seconds{10});
  EXPECT_EQ(plan.refresh_at, now + seconds{5});
}

TEST(PlanRenewal, LongTokensAreRenewedAtHalfTheirLifetime) {
  const SystemTime now{seconds{1'000'000}};
  EXPECT_EQ(plan_renewal(token_living(now, hours{24}), now, {}).refresh_at, now + hours{12});
  EXPECT_EQ(plan_renewal(token_living(now, hours{2}), now, {}).refresh_at, now + hours{1});
  EXPECT_EQ(plan_renewal(token_living(now, hours{24}), now, {}).usable_until,
            now + hours{24} - minutes{1});
}

TEST(PlanRenewal, ShorterTokensAreRenewedBeforeTheyStopBeingUsable) {
  const SystemTime now{seconds{1'000'000}};
  // One hour: usable until 59 min, renewed 5 min before that.
  EXPECT_EQ(plan_renewal(token_living(now, hours{1}), now, {}).refresh_at, now + minutes{54});
  // Ten minutes: usable 9 min, renewed halfway through that window.
  EXPECT_EQ(plan_renewal(token_living(now, minutes{10}), now, {}).refresh_at, now + seconds{270});
  // Just under the half-life threshold.
  EXPECT_EQ(plan_renewal(token_living(now, hours{2} - seconds{1}), now, {}).refresh_at,
            now + hours{2} - seconds{1} - minutes{6});
}

TEST(PlanRenewal, RefreshInWins) {
  const SystemTime now{seconds{1'000'000}};
  EXPECT_EQ(plan_renewal(token_living(now, hours{24}, minutes{10}), now, {}).refresh_at,
            now + minutes{10});
  EXPECT_EQ(plan_renewal(token_living(now, hours{1}, minutes{50}), now, {}).refresh_at,
            now + minutes{50});
}

TEST(PlanRenewal, RefreshInIsKeptInsideTheUsableWindow) {
  const SystemTime now{seconds{1'000'000}};
  // Later than the latest safe point: brought forward to it.
  EXPECT_EQ(plan_renewal(token_living(now, hours{1}, hours{2}), now, {}).refresh_at,
            now + minutes{54});
  // Zero or in the past: not a loop of fetches, but the minimum interval.
  EXPECT_EQ(plan_renewal(token_living(now, hours{1}, seconds{0}), now, {}).refresh_at,
            now + seconds{1});
}

TEST(PlanRenewal, TokensWithAMinuteOrLessAreNotReusable) {
  const SystemTime now{seconds{1'000'000}};
  EXPECT_FALSE(plan_renewal(token_living(now, seconds{60}), now, {}).reusable);
  EXPECT_FALSE(plan_renewal(token_living(now, seconds{30}), now, {}).reusable);
  const RenewalPlan barely = plan_renewal(token_living(now, seconds{62}), now, {});
  EXPECT_TRUE(barely.reusable);
  EXPECT_EQ(barely.refresh_at, now + seconds{1});
}

TEST(PlanRenewal, MinRemainingIsConfigurable) {
  const SystemTime now{seconds{1'000'000}};
  CacheOptions options;
  options.min_remaining = seconds{300};
  const RenewalPlan plan = plan_renewal(token_living(now, hours{1}), now, options);
  EXPECT_EQ(plan.usable_until, now + minutes{55});
  EXPECT_EQ(plan.refresh_at, now + minutes{50});
}

// ---- reuse and renewal ---------------------------------------------------------------------

TEST_F(CacheTest, SeventySecondTokenIsReusedAndRenewedInTheBackground) {
  source->set_lifetime(seconds{70});
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  clock->advance(seconds{4});
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  EXPECT_EQ(source->calls(), 1);

  // Every 5 s the refresher renews; callers never find the token unusable.
  for (int round = 2; round <= 20; ++round) {
    clock->advance(seconds{1});
    ASSERT_TRUE(eventually([&] { return handle.stats().renewals == std::uint64_t(round - 1); }));
    const AccessToken& token = handle.get(far());
    EXPECT_EQ(text(token), "secret-fake-" + std::to_string(round));
    EXPECT_GT(token.expires_on - clock->now(), seconds{60});
    clock->advance(seconds{4});
    EXPECT_EQ(text(handle.get(far())), "secret-fake-" + std::to_string(round));
  }
  EXPECT_EQ(source->calls(), 20);
  // Only the first fetch ran on the caller's thread.
  const auto threads = source->threads();
  EXPECT_EQ(threads.front(), std::this_thread::get_id());
  for (std::size_t i = 1; i < threads.size(); ++i)
    EXPECT_NE(threads[i], std::this_thread::get_id());
  EXPECT_EQ(handle.stats().fetch_failures, 0u);
  EXPECT_EQ(handle.stats().waits, 0u);
}

TEST_F(CacheTest, RefreshInIsHonoured) {
  source->set_lifetime(hours{24});
  source->set_refresh_in(seconds{600});
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  clock->advance(seconds{599});
  handle.get(far());
  EXPECT_EQ(source->calls(), 1);
  clock->advance(seconds{1});
  ASSERT_TRUE(eventually([&] { return handle.stats().renewals == 1; }));
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
}

TEST_F(CacheTest, DayLongTokensAreRenewedAtHalfLife) {
  source->set_lifetime(hours{24});
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  clock->advance(hours{12} - seconds{1});
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  EXPECT_EQ(source->calls(), 1);
  clock->advance(seconds{1});
  ASSERT_TRUE(eventually([&] { return handle.stats().renewals == 1; }));
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
  // The next renewal is half of the new token's lifetime later.
  clock->advance(hours{12} - seconds{1});
  EXPECT_EQ(source->calls(), 2);
  clock->advance(seconds{1});
  ASSERT_TRUE(eventually([&] { return handle.stats().renewals == 2; }));
}

TEST_F(CacheTest, OneHourTokensAreRenewedSixMinutesBeforeExpiry) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  clock->advance(minutes{54} - seconds{1});
  EXPECT_EQ(source->calls(), 1);
  clock->advance(seconds{1});
  ASSERT_TRUE(eventually([&] { return handle.stats().renewals == 1; }));
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
}

// The error a call throws, or a test failure when it returns.
template <class Call>
Error error_of(Call call) {
  try {
    call();
  } catch (const Error& error) {
    return error;
  }
  ADD_FAILURE() << "expected an Error";
  return Error(ErrorCode::kConfiguration, "none thrown");
}

TEST_F(CacheTest, ATokenWithAMinuteOrLessIsHandedOutButNotReused) {
  source->set_lifetime(seconds{45});
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  // Not reused, and not fetched again at once either: such an endpoint is backed off from
  // like a failing one.
  const Error error = error_of([&] { handle.get(far()); });
  EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << error.what();
  EXPECT_NE(std::string(error.what()).find("expires in 45 s"), std::string::npos) << error.what();
  EXPECT_EQ(source->calls(), 1);
  clock->advance(seconds{1});
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
  EXPECT_EQ(source->calls(), 2);
}

TEST_F(CacheTest, ShortLivedTokensNeverTurnEveryCallIntoAnUpstreamRequest) {
  source->set_lifetime(seconds{45});
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  int tokens = 0;
  std::uint64_t errors = 0;
  // 200 calls over 20 s.
  for (int call = 0; call < 200; ++call) {
    try {
      handle.get(far());
      ++tokens;
    } catch (const Error& error) {
      ++errors;
      EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << error.what();
    }
    clock->advance(std::chrono::milliseconds{100});
  }
  // Fetches at 0 s and after each backoff window (1, 2, 4, 8 s), not 200.
  EXPECT_LE(source->calls(), 6);
  EXPECT_GE(source->calls(), 2);       // and the endpoint is asked again, as after a failure
  EXPECT_EQ(tokens, source->calls());  // each fetch's caller got its token
  EXPECT_EQ(handle.stats().errors_from_backoff, errors);
  EXPECT_EQ(handle.stats().upstream_requests, static_cast<std::uint64_t>(source->calls()));
}

TEST_F(CacheTest, CallersThatWaitedForAShortLivedTokenAllGetIt) {
  source->set_lifetime(seconds{45});
  source->hold();
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  std::vector<std::future<std::string>> callers;
  for (int i = 0; i < 3; ++i) {
    callers.push_back(std::async(std::launch::async, [&] { return text(handle.get(far())); }));
  }
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1 && handle.stats().waiting == 2; }));
  source->release();
  for (auto& caller : callers) {
    ASSERT_TRUE(finishes(caller));
    EXPECT_EQ(caller.get(), "secret-fake-1");
  }
  EXPECT_THROW(handle.get(far()), Error);  // the next caller: backoff, no request
  EXPECT_EQ(source->calls(), 1);
}

TEST_F(CacheTest, AShortLivedRenewalKeepsTheCurrentTokenAndIsRetriedLater) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  EXPECT_EQ(events.next().kind, CacheEvent::Kind::kFetched);
  source->set_lifetime(seconds{45});
  clock->advance(minutes{54});  // the renewal is due
  const CacheEvent failed = events.next();
  EXPECT_EQ(failed.kind, CacheEvent::Kind::kRefreshFailed);
  EXPECT_NE(failed.error.find("expires in 45 s"), std::string::npos) << failed.error;
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  EXPECT_EQ(handle.stats().refresh_failures, 1u);
  ASSERT_TRUE(failed.next_attempt.has_value());
  // The endpoint's tokens are long again: the next try replaces the token.
  source->set_lifetime(hours{1});
  clock->advance(*failed.next_attempt - clock->now());
  EXPECT_EQ(events.next().kind, CacheEvent::Kind::kFetched);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-3");
}

TEST_F(CacheTest, ATokenExpiredOnArrivalIsAnErrorEvenForItsFetcher) {
  source->set_lifetime(seconds{0});  // expires_in: 0
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  const Error error = error_of([&] { handle.get(far()); });
  EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << error.what();
  EXPECT_NE(std::string(error.what()).find("already expired"), std::string::npos) << error.what();
  EXPECT_EQ(std::string(error.what()).find("secret-fake"), std::string::npos) << error.what();
  EXPECT_THROW(handle.get(far()), Error);
  EXPECT_EQ(source->calls(), 1);
  EXPECT_EQ(handle.stats().errors_from_backoff, 1u);
}

TEST_F(CacheTest, NoTokenIsServedWithAMinuteOrLessLeft) {
  source->set_lifetime(hours{1});
  source->hold();
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  auto first = std::async(std::launch::async, [&] { return text(handle.get(far())); });
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));
  source->release();
  ASSERT_TRUE(finishes(first));
  EXPECT_EQ(first.get(), "secret-fake-1");
  // The refresher is held at 54 min; at 59 min the token is no longer served: callers wait.
  source->hold();
  clock->advance(minutes{54});
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));
  clock->advance(minutes{5} - seconds{1});
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");  // 61 s left: still served
  clock->advance(seconds{1});
  auto late = std::async(std::launch::async, [&] { return text(handle.get(far())); });
  ASSERT_TRUE(eventually([&] { return handle.stats().waiting == 1; }));
  source->release();
  ASSERT_TRUE(finishes(late));
  EXPECT_EQ(late.get(), "secret-fake-2");
  EXPECT_EQ(source->calls(), 2);
}

// ---- single flight -----------------------------------------------------------------------

TEST_F(CacheTest, ConcurrentCallersOnAnEmptyCacheShareOneRequest) {
  constexpr int kCallers = 16;
  source->hold();
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  std::vector<std::future<std::string>> results;
  for (int i = 0; i < kCallers; ++i) {
    results.push_back(std::async(std::launch::async, [&] { return text(handle.get(far())); }));
  }
  // Held until one caller is fetching and every other one is waiting for it.
  ASSERT_TRUE(eventually(
      [&] { return source->in_flight() == 1 && handle.stats().waiting == kCallers - 1; }));
  source->release();
  for (auto& result : results) {
    ASSERT_TRUE(finishes(result));
    EXPECT_EQ(result.get(), "secret-fake-1");
  }
  EXPECT_EQ(source->calls(), 1);
  EXPECT_EQ(handle.stats().upstream_requests, 1u);
  EXPECT_EQ(handle.stats().waits, static_cast<std::uint64_t>(kCallers - 1));
}

TEST_F(CacheTest, ConcurrentCallersShareOneFailureToo) {
  constexpr int kCallers = 8;
  source->hold();
  source->set_failing(true);
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  std::vector<std::future<ErrorCode>> results;
  for (int i = 0; i < kCallers; ++i) {
    results.push_back(std::async(std::launch::async, [&] {
      try {
        handle.get(far());
      } catch (const Error& error) {
        return error.code();
      }
      return ErrorCode::kConfiguration;
    }));
  }
  ASSERT_TRUE(eventually(
      [&] { return source->in_flight() == 1 && handle.stats().waiting == kCallers - 1; }));
  source->release();
  for (auto& result : results) {
    ASSERT_TRUE(finishes(result));
    EXPECT_EQ(result.get(), ErrorCode::kConnection);
  }
  EXPECT_EQ(source->calls(), 1);
}

TEST_F(CacheTest, AWaiterGivesUpAtItsOwnDeadline) {
  source->hold();
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  auto leader = std::async(std::launch::async, [&] { return text(handle.get(far())); });
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));
  const Deadline soon = clock->steady_now() + seconds{5};
  auto impatient = std::async(std::launch::async, [&] {
    try {
      handle.get(soon);
    } catch (const Error& error) {
      return error.code();
    }
    return ErrorCode::kConfiguration;
  });
  ASSERT_TRUE(eventually([&] { return handle.stats().waiting == 1; }));
  clock->advance(seconds{5});
  ASSERT_TRUE(finishes(impatient));
  EXPECT_EQ(impatient.get(), ErrorCode::kTimeout);
  source->release();
  ASSERT_TRUE(finishes(leader));
  EXPECT_EQ(leader.get(), "secret-fake-1");
  EXPECT_EQ(source->calls(), 1);
}

// ---- no stall ------------------------------------------------------------------------------

TEST_F(CacheTest, CallersKeepTheValidTokenWhileARenewalIsInFlight) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  source->hold();
  clock->advance(minutes{54});
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));

  std::vector<std::future<std::string>> readers;
  for (int i = 0; i < 4; ++i) {
    readers.push_back(std::async(std::launch::async, [&] {
      std::string last;
      for (int n = 0; n < 1000; ++n) last = text(handle.get(far()));
      return last;
    }));
  }
  for (auto& reader : readers) {
    ASSERT_TRUE(finishes(reader));  // would hang here if a reader waited for the renewal
    EXPECT_EQ(reader.get(), "secret-fake-1");
  }
  EXPECT_EQ(handle.stats().waiting, 0u);
  EXPECT_EQ(handle.stats().waits, 0u);
  source->release();
  ASSERT_TRUE(eventually([&] { return handle.stats().renewals == 1; }));
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
  EXPECT_EQ(source->calls(), 2);
}

// ---- stale-if-error, error, recovery -------------------------------------------------------

TEST_F(CacheTest, FailedRenewalsServeTheValidTokenAndRetryWithGrowingIntervals) {
  std::vector<std::string> log_lines;
  std::mutex log_mutex;
  set_log_hook([&](LogLevel, std::string_view line) {
    std::lock_guard lock(log_mutex);
    log_lines.emplace_back(line);
  });
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  const SystemTime start = clock->now();
  handle.get(far());
  EXPECT_EQ(events.next().kind, CacheEvent::Kind::kFetched);
  source->set_failing(true);

  clock->advance(minutes{54});
  std::vector<SystemTime::duration> intervals;
  SystemTime previous_attempt = clock->now();
  int failures = 0;
  for (;;) {
    const CacheEvent event = events.next();
    ASSERT_EQ(event.kind, CacheEvent::Kind::kRefreshFailed);
    ++failures;
    EXPECT_EQ(event.consecutive_failures, failures);
    EXPECT_NE(event.error.find("refused"), std::string::npos);
    ASSERT_TRUE(event.usable_until);
    EXPECT_EQ(*event.usable_until, start + minutes{59});
    // Still served while failing.
    EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
    if (!event.next_attempt) break;
    EXPECT_LT(*event.next_attempt, *event.usable_until);
    intervals.push_back(*event.next_attempt - previous_attempt);
    previous_attempt = *event.next_attempt;
    clock->advance(*event.next_attempt - clock->now());
    ASSERT_LT(failures, 50);
  }
  // 10, 20, 40, 80 s, then capped by half the time left in the usable window.
  ASSERT_GE(intervals.size(), 5u);
  EXPECT_EQ(intervals[0], seconds{10});
  EXPECT_EQ(intervals[1], seconds{20});
  EXPECT_EQ(intervals[2], seconds{40});
  EXPECT_EQ(intervals[3], seconds{80});
  EXPECT_EQ(intervals[4], seconds{75});  // at 56:30, 150 s were left
  const CacheStats stats = handle.stats();
  EXPECT_EQ(stats.refresh_failures, static_cast<std::uint64_t>(failures));
  EXPECT_EQ(stats.fetch_failures, 0u);
  EXPECT_NE(stats.last_error.find("refused"), std::string::npos);
  EXPECT_EQ(cache->stats().refresh_failures, stats.refresh_failures);

  // Once the usable window closes, callers get the error.
  clock->advance(start + minutes{59} - clock->now());
  try {
    handle.get(far());
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kConnection);
  }
  set_log_hook(nullptr);
  bool warned = false;
  for (const auto& line : log_lines) {
    EXPECT_EQ(line.find("secret-"), std::string::npos) << line;
    warned = warned || line.find("renewal") != std::string::npos;
  }
  EXPECT_TRUE(warned);
}

TEST_F(CacheTest, ErrorsAreNotPoisonedStateButAreNotHammeredEither) {
  source->set_failing(true);
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  EXPECT_THROW(handle.get(far()), Error);
  EXPECT_EQ(source->calls(), 1);
  // Within the fail-fast window: the same error, no request.
  try {
    handle.get(far());
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kConnection);
  }
  EXPECT_EQ(source->calls(), 1);
  EXPECT_EQ(handle.stats().errors_from_backoff, 1u);
  // After 1 s the next call tries again; the window doubles.
  clock->advance(seconds{1});
  EXPECT_THROW(handle.get(far()), Error);
  EXPECT_EQ(source->calls(), 2);
  clock->advance(seconds{1});
  EXPECT_THROW(handle.get(far()), Error);
  EXPECT_EQ(source->calls(), 2);
  clock->advance(seconds{1});
  EXPECT_THROW(handle.get(far()), Error);
  EXPECT_EQ(source->calls(), 3);
  EXPECT_EQ(handle.stats().fetch_failures, 3u);
  // The endpoint comes back: the first call after the window recovers.
  source->set_failing(false);
  clock->advance(seconds{4});
  EXPECT_EQ(text(handle.get(far())), "secret-fake-4");
  EXPECT_EQ(text(handle.get(far())), "secret-fake-4");
  EXPECT_EQ(source->calls(), 4);
  // And a later failure starts from the short window again.
  source->set_failing(true);
  handle.invalidate();
  EXPECT_THROW(handle.get(far()), Error);
  clock->advance(seconds{1});
  source->set_failing(false);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-6");
}

TEST_F(CacheTest, OutageLongerThanSeveralRenewalsThenRecovery) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  const SystemTime start = clock->now();
  handle.get(far());
  EXPECT_EQ(events.next().kind, CacheEvent::Kind::kFetched);
  source->set_failing(true);
  // Walk through the outage a second at a time: every call succeeds while usable. Where a
  // renewal attempt is due, wait for its outcome so that the refresher keeps pace.
  std::optional<SystemTime> due = start + minutes{54};
  while (clock->now() < start + minutes{59} - seconds{1}) {
    clock->advance(seconds{1});
    while (due && clock->now() >= *due) {
      const CacheEvent event = events.next();
      ASSERT_EQ(event.kind, CacheEvent::Kind::kRefreshFailed);
      due = event.next_attempt;
    }
    EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  }
  clock->advance(seconds{1});
  EXPECT_THROW(handle.get(far()), Error);
  EXPECT_GE(handle.stats().refresh_failures, 5u);
  source->set_failing(false);
  clock->advance(minutes{1});
  const AccessToken& recovered = handle.get(far());
  EXPECT_NE(text(recovered), "secret-fake-1");
  EXPECT_GT(recovered.expires_on, clock->now() + minutes{59});
}

// ---- invalidate and force_refresh ----------------------------------------------------------

TEST_F(CacheTest, InvalidateMakesTheNextCallFetch) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  handle.invalidate();
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
  EXPECT_EQ(source->calls(), 2);
  EXPECT_EQ(handle.stats().invalidations, 1u);
}

TEST_F(CacheTest, InvalidateDoesNotTrustARenewalAlreadyInFlight) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  source->hold();
  clock->advance(minutes{54});
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));
  handle.invalidate();
  auto after = std::async(std::launch::async, [&] { return text(handle.get(far())); });
  ASSERT_TRUE(eventually([&] { return handle.stats().waiting == 1; }));
  source->release();
  ASSERT_TRUE(finishes(after));
  EXPECT_EQ(after.get(), "secret-fake-3");
  EXPECT_EQ(source->calls(), 3);
}

TEST_F(CacheTest, ForceRefreshFetchesWhileOthersKeepTheCurrentToken) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  source->hold();
  auto forced = std::async(std::launch::async, [&] { return text(*handle.force_refresh(far())); });
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  source->release();
  ASSERT_TRUE(finishes(forced));
  EXPECT_EQ(forced.get(), "secret-fake-2");
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
  EXPECT_EQ(source->calls(), 2);
}

TEST_F(CacheTest, ForceRefreshDoesNotSettleForAFetchStartedBeforeIt) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  source->hold();
  clock->advance(minutes{54});
  ASSERT_TRUE(eventually([&] { return source->in_flight() == 1; }));
  auto forced = std::async(std::launch::async, [&] { return text(*handle.force_refresh(far())); });
  ASSERT_TRUE(eventually([&] { return handle.stats().waiting == 1; }));
  source->release();
  ASSERT_TRUE(finishes(forced));
  EXPECT_EQ(forced.get(), "secret-fake-3");
}

// ---- keys, lifetimes, adaptors -------------------------------------------------------------

TEST_F(CacheTest, EntriesAreKeyedBySourceResourceAndIdentity) {
  auto other_source = std::make_shared<FakeSource>(clock, "other");
  auto cache = make_cache();
  TokenHandle vault = cache->handle(source);
  TokenHandle vault_again = cache->handle(source, TokenRequest{});
  TokenHandle storage = cache->handle(source, TokenRequest{"https://storage.azure.com", {}});
  TokenRequest user;
  user.identity = IdentitySelector::client_id("11111111-2222-3333-4444-555555555555");
  TokenHandle user_vault = cache->handle(source, user);
  TokenRequest object;
  object.identity = IdentitySelector::object_id("11111111-2222-3333-4444-555555555555");
  TokenHandle object_vault = cache->handle(source, object);
  TokenHandle other = cache->handle(other_source);

  EXPECT_EQ(text(vault.get(far())), "secret-fake-1");
  EXPECT_EQ(text(vault_again.get(far())), "secret-fake-1");
  EXPECT_EQ(text(storage.get(far())), "secret-fake-2");
  EXPECT_EQ(storage.get(far()).resource, "https://storage.azure.com");
  EXPECT_EQ(text(user_vault.get(far())), "secret-fake-3");
  EXPECT_EQ(text(object_vault.get(far())), "secret-fake-4");
  EXPECT_EQ(text(other.get(far())), "secret-other-1");
  EXPECT_EQ(cache->stats().entries, 5u);
  EXPECT_EQ(cache->stats().upstream_requests, 5u);

  vault.invalidate();
  EXPECT_EQ(text(storage.get(far())), "secret-fake-2");
  EXPECT_EQ(text(vault_again.get(far())), "secret-fake-5");
}

TEST_F(CacheTest, ManyHandlesOnOneThreadKeepTheirOwnTokens) {
  // More entries than a thread has fast slots: each read still returns its own token.
  auto cache = make_cache();
  std::vector<TokenHandle> handles;
  for (int i = 0; i < 20; ++i) {
    handles.push_back(cache->handle(source, TokenRequest{"https://r" + std::to_string(i), {}}));
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(handles[i].get(far()).resource, "https://r" + std::to_string(i));
    }
  }
  EXPECT_EQ(source->calls(), 20);
}

TEST_F(CacheTest, DestroyingTheCacheStopsTheRefresherAndHandlesStillWork) {
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  ASSERT_TRUE(eventually([&] { return clock->sleepers() == 1; }));  // the refresher
  auto destroyed = std::async(std::launch::async, [&] { cache.reset(); });
  ASSERT_TRUE(finishes(destroyed));
  EXPECT_EQ(clock->sleepers(), 0);
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  // No refresher any more: the token is renewed when a caller finds it unusable.
  clock->advance(minutes{54});
  EXPECT_EQ(text(handle.get(far())), "secret-fake-1");
  clock->advance(minutes{5});
  EXPECT_EQ(text(handle.get(far())), "secret-fake-2");
}

// A source run by a function, without the checks make_callback_source() adds: its tokens are
// dated by the test's ManualClock, not by the system clock that checks callback tokens.
class FunctionSource final : public TokenSource {
 public:
  explicit FunctionSource(TokenCallback fetch) : fetch_(std::move(fetch)) {}
  [[nodiscard]] SourceKind kind() const override { return SourceKind::kCustom; }
  AccessToken fetch(const TokenRequest& request, Deadline deadline) override {
    return fetch_(request, deadline);
  }

 private:
  TokenCallback fetch_;
};

TEST_F(CacheTest, DestroyingTheCacheCancelsARenewalInFlight) {
  // Like an HTTP source, whose exchange ends when the refresher's fetch is cancelled.
  std::atomic<int> calls{0};
  std::atomic<bool> renewing{false};
  std::atomic<bool> saw_cancellation{false};
  auto cancellable =
      std::make_shared<FunctionSource>([&](const TokenRequest&, Deadline) -> AccessToken {
        if (calls++ == 0) {
          AccessToken token;
          token.token = Secret("secret-first");
          token.expires_on = clock->now() + hours{1};
          return token;
        }
        renewing = true;
        for (int i = 0; i < 20'000 && !ScopedCancellation::requested(); ++i) {
          std::this_thread::sleep_for(1ms);
        }
        saw_cancellation = ScopedCancellation::requested();
        throw Error(ErrorCode::kCancelled, "renewal cancelled");
      });
  auto cache = make_cache();
  TokenHandle handle = cache->handle(cancellable);
  EXPECT_EQ(text(handle.get(far())), "secret-first");
  clock->advance(minutes{54});
  ASSERT_TRUE(eventually([&] { return renewing.load(); }));
  auto destroyed = std::async(std::launch::async, [&] { cache.reset(); });
  ASSERT_TRUE(finishes(destroyed));
  EXPECT_TRUE(saw_cancellation.load());
  // Not the endpoint's failure: nothing is counted, and the token is still served.
  EXPECT_EQ(handle.stats().refresh_failures, 0u);
  EXPECT_EQ(handle.stats().last_error, "");
  EXPECT_EQ(text(handle.get(far())), "secret-first");
}

TEST_F(CacheTest, CachedTokenSourceComposes) {
  auto cache = std::make_shared<TokenCache>(options);
  CachedTokenSource cached(source, cache);
  EXPECT_EQ(cached.kind(), SourceKind::kCustom);
  EXPECT_EQ(cached.name(), "Fake fake");
  EXPECT_EQ(text(cached.fetch({}, far())), "secret-fake-1");
  EXPECT_EQ(text(cached.fetch({}, far())), "secret-fake-1");
  EXPECT_EQ(text(cached.handle().get(far())), "secret-fake-1");
  EXPECT_EQ(source->calls(), 1);
}

TEST_F(CacheTest, WorksWithTheSystemClock) {
  CacheOptions system_options;  // the real clock: the hot path reads the coarse clock
  auto real_source = std::make_shared<FakeSource>(Clock::system());
  TokenCache cache(system_options);
  TokenHandle handle = cache.handle(real_source);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(text(handle.get()), "secret-fake-1");
  EXPECT_EQ(real_source->calls(), 1);
  EXPECT_EQ(text(*handle.get_shared()), "secret-fake-1");
}

TEST_F(CacheTest, SystemClockRefresherRenewsAndStops) {
  // The production path: the refresher sleeps on the real clock. A 62 s token is usable for
  // 2 s and renewed after 1 s, so this takes about a second of real time.
  auto real_source = std::make_shared<FakeSource>(Clock::system());
  real_source->set_lifetime(seconds{62});
  CacheOptions system_options;
  auto cache = std::make_unique<TokenCache>(system_options);
  TokenHandle handle = cache->handle(real_source);
  EXPECT_EQ(text(handle.get()), "secret-fake-1");
  ASSERT_TRUE(eventually([&] { return handle.stats().renewals >= 1; }));
  EXPECT_NE(text(handle.get()), "secret-fake-1");
  EXPECT_NE(real_source->threads().back(), std::this_thread::get_id());
  auto destroyed = std::async(std::launch::async, [&] { cache.reset(); });
  ASSERT_TRUE(finishes(destroyed));
}

TEST_F(CacheTest, AThrowingSourceOrHookIsContained) {
  options.on_event = [](const CacheEvent&) { throw std::runtime_error("hook failed"); };
  auto throwing = make_callback_source(
      [](const TokenRequest&, Deadline) -> AccessToken { throw std::runtime_error("boom"); });
  auto cache = make_cache();
  TokenHandle handle = cache->handle(throwing);
  EXPECT_THROW(handle.get(far()), Error);
  TokenHandle fine = cache->handle(source);
  EXPECT_EQ(text(fine.get(far())), "secret-fake-1");
}

TEST(TokenHandleEmpty, IsAConfigurationError) {
  TokenHandle handle;
  EXPECT_FALSE(handle);
  try {
    handle.get();
    FAIL() << "expected an Error";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kConfiguration);
  }
}

// Several readers hammer the cache while the clock runs through many renewals of a short
// token: every token handed out must still be usable, and renewals stay one per token.
TEST_F(CacheTest, ReadersAcrossManyRenewalsOnlySeeUsableTokens) {
  source->set_lifetime(seconds{70});
  auto cache = make_cache();
  TokenHandle handle = cache->handle(source);
  handle.get(far());
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  struct JoinOnExit {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~JoinOnExit() {
      stop = true;
      for (auto& thread : threads) {
        if (thread.joinable()) thread.join();
      }
    }
  } join_on_exit{stop, readers};
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        // Time only moves forward: a token usable when served is usable at any earlier time.
        const SystemTime before = clock->now();
        const AccessToken& token = handle.get(far());
        if (token.expires_on - before <= seconds{60}) ++bad;
        const SystemTime before_shared = clock->now();
        const auto shared = handle.get_shared(far());
        if (shared->expires_on - before_shared <= seconds{60}) ++bad;
      }
    });
  }
  for (int round = 1; round <= 50; ++round) {
    clock->advance(seconds{5});
    ASSERT_TRUE(eventually([&] { return handle.stats().renewals == std::uint64_t(round); }))
        << "round " << round << ", calls " << source->calls() << ", upstream "
        << handle.stats().upstream_requests << ", renewals " << handle.stats().renewals
        << ", sleepers " << clock->sleepers() << ", in flight " << source->in_flight();
  }
  stop = true;
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(source->calls(), 51);
  EXPECT_EQ(handle.stats().fetch_failures, 0u);
}

}  // namespace
}  // namespace azkms
