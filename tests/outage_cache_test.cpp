// Outage: an identity endpoint that goes down while a valid token is cached.
//
// With a ManualClock driving the cache (and the source's deadlines), the emulator is stopped
// for longer than several renewal attempts. Every call keeps getting the cached token until it
// stops being usable (the MongoDB specification's rule: not within one minute of expiry), then
// calls fail with a typed error, and when the endpoint comes back the same cache recovers by
// itself: no new cache, no invalidate(), no restart.
//
// The source makes one attempt per fetch (RetryPolicy::no_retries()), so that every retry in
// this test is the cache's own renewal schedule. Reader threads call the cache throughout, so
// ThreadSanitizer (this test runs in the tsan stage) sees renewals fail under concurrent reads.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "azkms/cache.hpp"
#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "fault_matrix.hpp"
#include "loopback_only.hpp"

namespace azkms {
namespace {

using emulator::Endpoint;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Cache events, and a way to wait (in real time) for the refresher to report one.
class EventLog {
 public:
  void add(const CacheEvent& event) {
    {
      std::lock_guard lock(mutex_);
      events_.push_back(event);
    }
    cv_.notify_all();
  }
  // Waits until more than `count` refresh failures were reported; the last one, or nullopt
  // after 20 s of real time (a refresher that never tried).
  std::optional<CacheEvent> wait_for_refresh_failure(std::size_t count) {
    std::unique_lock lock(mutex_);
    std::optional<CacheEvent> found;
    cv_.wait_for(lock, seconds{20}, [&] {
      std::size_t failures = 0;
      for (const auto& event : events_) {
        if (event.kind == CacheEvent::Kind::kRefreshFailed && ++failures > count) {
          found = event;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::size_t count(CacheEvent::Kind kind) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count_if(
        events_.begin(), events_.end(), [&](const CacheEvent& e) { return e.kind == kind; }));
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<CacheEvent> events_;
};

class Outage : public ::testing::TestWithParam<Endpoint> {};

TEST_P(Outage, CachedTokenRidesOutTheOutageThenFailsTypedThenRecoversByItself) {
  const Endpoint endpoint = GetParam();
  auto emulator = fault_matrix::start_on_fixed_ports({});
  emulator::Emulator& emu = *emulator;

  // The manual clock starts at the real time, so that absolute expiries the endpoint sends
  // (App Service's expires_on) agree with relative ones (IMDS's expires_in).
  auto clock = std::make_shared<ManualClock>(
      std::chrono::time_point_cast<SystemTime::duration>(std::chrono::system_clock::now()));
  SourceContext context;
  context.http = std::make_shared<testing::LoopbackOnlyHttpClient>(make_curl_http_client());
  context.clock = clock;
  context.attempt_timeout = milliseconds{2'000};
  context.retry_policy = RetryPolicy::no_retries();
  const fault_matrix::Vars vars = emu.client_environment(endpoint);
  auto source =
      testing::require_loopback(detect(MapEnvironment(vars), std::nullopt, context).source);

  EventLog log;
  CacheOptions options;
  options.clock = clock;
  options.on_event = [&log](const CacheEvent& event) { log.add(event); };
  auto cache = std::make_shared<TokenCache>(options);
  TokenHandle handle = cache->handle(source);
  auto deadline = [&] { return clock->steady_now() + seconds{10}; };

  const SystemTime received = clock->now();
  const AccessToken first = handle.get(deadline());
  const std::string cached = first.token.reveal();
  ASSERT_TRUE(emu.ledger().lookup(cached).has_value());
  const RenewalPlan plan = plan_renewal(first, received, options);
  ASSERT_TRUE(plan.reusable);
  ASSERT_LT(received, plan.refresh_at);
  ASSERT_LT(plan.refresh_at, plan.usable_until);
  // The rule the test relies on: usable while more than min_remaining is left.
  EXPECT_EQ(plan.usable_until, first.expires_on - options.min_remaining);
  const auto issued_before = emu.tokens_issued(endpoint);

  // Readers call the cache throughout the outage. A call that fails while the clock is still
  // before usable_until (checked after the call) is a failure of the rule under test.
  std::atomic<bool> stop{false};
  std::atomic<int> early_failures{0};
  std::atomic<int> wrong_tokens{0};
  std::atomic<long> reads{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 2; ++i) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        try {
          if (handle.get(deadline()).token.reveal() != cached) ++wrong_tokens;
          ++reads;
        } catch (const Error&) {
          if (clock->now() < plan.usable_until) ++early_failures;
        }
        std::this_thread::sleep_for(milliseconds{1});
      }
    });
  }

  emu.stop();  // the endpoint goes down

  // Up to the first renewal: nothing happens upstream.
  clock->advance(plan.refresh_at - clock->now() - seconds{1});
  EXPECT_EQ(handle.get(deadline()).token.reveal(), cached);
  EXPECT_EQ(log.count(CacheEvent::Kind::kRefreshFailed), 0u);

  // Each renewal attempt fails; the cache reports it, says when it tries next, and keeps
  // serving the cached token.
  clock->advance(seconds{1});
  std::size_t failures = 0;
  std::optional<CacheEvent> event = log.wait_for_refresh_failure(failures);
  ASSERT_TRUE(event.has_value()) << "the refresher never tried to renew";
  while (event && event->next_attempt && *event->next_attempt < plan.usable_until &&
         failures < 60) {
    ++failures;
    EXPECT_EQ(handle.get(deadline()).token.reveal(), cached);
    EXPECT_EQ(event->usable_until, plan.usable_until);
    EXPECT_FALSE(event->error.empty());
    EXPECT_EQ(event->error.find(cached), std::string::npos);
    clock->advance(*event->next_attempt - clock->now());
    event = log.wait_for_refresh_failure(failures);
    ASSERT_TRUE(event.has_value()) << "the refresher stopped trying after " << failures;
  }
  EXPECT_GE(failures, 3u) << "the outage must outlast several renewal attempts";
  RecordProperty("renewal_attempts_during_outage", static_cast<int>(failures));
  EXPECT_GE(handle.stats().refresh_failures, 3u);
  EXPECT_EQ(emu.tokens_issued(endpoint), issued_before);

  // The last moment the token may be handed out.
  if (clock->now() < plan.usable_until - seconds{1}) {
    clock->advance(plan.usable_until - seconds{1} - clock->now());
  }
  EXPECT_EQ(handle.get(deadline()).token.reveal(), cached);

  stop = true;
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(early_failures.load(), 0) << "a call failed while the cached token was still usable";
  EXPECT_EQ(wrong_tokens.load(), 0);
  EXPECT_GT(reads.load(), 0);

  // Past it: a typed error, never the expired token.
  clock->advance(plan.usable_until + seconds{1} - clock->now());
  for (int call = 0; call < 2; ++call) {
    try {
      const AccessToken& token = handle.get(deadline());
      ADD_FAILURE() << "a token within a minute of expiry was served"
                    << (token.token.reveal() == cached ? " (the cached one)" : "");
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kConnection) << error.what();
      EXPECT_EQ(std::string(error.what()).find(cached), std::string::npos);
    }
  }

  // The endpoint comes back on the same port. After the fail-fast window the same cache
  // fetches a new token by itself. (App Service dates expires_on by the real clock, which is
  // now an hour behind the test's: a longer lifetime keeps the new token well past the
  // minimum remaining, or the cache would count it as short-lived.)
  emu.set_token_lifetime(std::chrono::hours{3});
  emu.start();
  clock->advance(options.error_backoff_max + seconds{1});
  const AccessToken recovered = handle.get(deadline());
  EXPECT_NE(recovered.token.reveal(), cached);
  EXPECT_TRUE(emu.ledger().lookup(recovered.token.reveal()).has_value());
  // (The emulator dates App Service's expires_on by the real clock, which the test does not
  // move: only its order against the first token is meaningful here.)
  EXPECT_GE(recovered.expires_on, first.expires_on);
  EXPECT_EQ(emu.tokens_issued(endpoint), issued_before + 1);
  EXPECT_GE(log.count(CacheEvent::Kind::kFetched), 2u);
}

INSTANTIATE_TEST_SUITE_P(Sources, Outage, ::testing::Values(Endpoint::kAppService, Endpoint::kImds),
                         [](const ::testing::TestParamInfo<Endpoint>& info) {
                           std::string name(emulator::to_string(info.param));
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace azkms
