// The small shared pieces: Secret, Error, clocks, environments, HTTP values, names, log hook.
#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "azkms/clock.hpp"
#include "azkms/environment.hpp"
#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/secret.hpp"
#include "azkms/source.hpp"
#include "log.hpp"

namespace azkms {
namespace {

TEST(Secret, StreamingPrintsOnlyARedactedForm) {
  const Secret secret("super-secret-token-value");
  std::ostringstream out;
  out << secret;
  EXPECT_EQ(out.str().find("super-secret"), std::string::npos);
  EXPECT_NE(out.str().find("24 bytes"), std::string::npos);
  EXPECT_EQ(secret.reveal(), "super-secret-token-value");
}

TEST(Secret, MovedFromValueIsEmpty) {
  Secret a("value-1234");
  Secret b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the contract under test
  EXPECT_EQ(b.reveal(), "value-1234");
  Secret c;
  c = std::move(b);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.reveal(), "value-1234");
}

TEST(Redact, ReplacesEveryOccurrenceOfEachSecret) {
  EXPECT_EQ(redact("a=hunter22 b=hunter22 c=xyz", {"hunter22", ""}),
            "a=[redacted] b=[redacted] c=xyz");
  EXPECT_EQ(redact("abc", {"ab"}), "abc") << "too-short values are not treated as secrets";
}

TEST(Error, MessageNamesSourceEndpointAndAttempts) {
  Error error(ErrorCode::kHttpStatus, "answered HTTP 503");
  error.with_source("IMDS").with_endpoint("http://127.0.0.1:1/x").with_attempts(3);
  EXPECT_EQ(std::string(error.what()),
            "IMDS (http://127.0.0.1:1/x): answered HTTP 503 [after 3 attempts]");
  EXPECT_EQ(error.code(), ErrorCode::kHttpStatus);
  EXPECT_EQ(error.attempts(), 3);
  EXPECT_EQ(to_string(ErrorCode::kResponseTooLarge), "response_too_large");
}

TEST(ManualClock, MovesOnlyWhenAdvanced) {
  ManualClock clock;
  const auto t0 = clock.now();
  const auto s0 = clock.steady_now();
  clock.advance(std::chrono::seconds(90));
  EXPECT_EQ(clock.now() - t0, std::chrono::seconds(90));
  EXPECT_EQ(clock.steady_now() - s0, std::chrono::seconds(90));
}

TEST(ManualClock, SleeperWakesWhenTimeReachesItsDeadline) {
  ManualClock clock;
  const auto until = clock.steady_now() + std::chrono::seconds(5);
  std::thread sleeper([&] { clock.sleep_until(until); });
  while (clock.sleepers() == 0) std::this_thread::yield();
  clock.advance(std::chrono::seconds(2));
  EXPECT_EQ(clock.sleepers(), 1) << "woke before its time";
  clock.advance(std::chrono::seconds(3));
  sleeper.join();
  EXPECT_EQ(clock.sleepers(), 0);
}

TEST(ManualClock, WakeAllReleasesSleepers) {
  ManualClock clock;
  std::thread sleeper([&] { clock.sleep_until(clock.steady_now() + std::chrono::hours(1)); });
  while (clock.sleepers() == 0) std::this_thread::yield();
  clock.wake_all();
  sleeper.join();
  EXPECT_EQ(clock.sleepers(), 0);
}

TEST(SystemClock, WakeAllReleasesASleeperEarly) {
  auto clock = Clock::system();
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock->sleep_until(clock->steady_now() + std::chrono::hours(1));
    woke = true;
  });
  // wake_all may run before the sleeper starts waiting; repeat until it has been seen.
  while (!woke) {
    clock->wake_all();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  sleeper.join();
  EXPECT_TRUE(woke);
}

TEST(MapEnvironment, EmptyValuesCountAsUnset) {
  MapEnvironment env({{"A", "1"}, {"EMPTY", ""}}, {"/opt/x"});
  EXPECT_EQ(env.get("A"), "1");
  EXPECT_EQ(env.get("EMPTY"), std::nullopt);
  EXPECT_EQ(env.get("MISSING"), std::nullopt);
  EXPECT_TRUE(env.file_exists("/opt/x"));
  EXPECT_FALSE(env.file_exists("/opt/y"));
}

TEST(ProcessEnvironment, ReadsTheProcessEnvironment) {
  ::setenv("AZKMS_CORE_TEST_VAR", "value", 1);
  ::setenv("AZKMS_CORE_TEST_EMPTY", "", 1);
  ProcessEnvironment env;
  EXPECT_EQ(env.get("AZKMS_CORE_TEST_VAR"), "value");
  EXPECT_EQ(env.get("AZKMS_CORE_TEST_EMPTY"), std::nullopt);
  ::unsetenv("AZKMS_CORE_TEST_VAR");
  ::unsetenv("AZKMS_CORE_TEST_EMPTY");
}

TEST(HttpRequest, DescribeRedactsSensitiveHeadersAndHeaderLookupIgnoresCase) {
  HttpRequest request;
  request.url = "http://127.0.0.1:1/msi/token?api-version=2019-08-01";
  request.headers = {{"X-IDENTITY-HEADER", "the-secret-header", true}, {"Metadata", "true"}};
  request.body = "abc";
  const std::string text = request.describe();
  EXPECT_EQ(text.find("the-secret-header"), std::string::npos);
  EXPECT_NE(text.find("Metadata: true"), std::string::npos);
  EXPECT_NE(text.find("[body: 3 bytes]"), std::string::npos);
  EXPECT_EQ(request.header("x-identity-header"), "the-secret-header");
  EXPECT_EQ(request.header("Authorization"), std::nullopt);
}

TEST(SourceKind, NamesRoundTrip) {
  for (auto kind : {SourceKind::kImds, SourceKind::kAppService, SourceKind::kAppService2017,
                    SourceKind::kAzureMl, SourceKind::kCloudShell, SourceKind::kAzureArc,
                    SourceKind::kServiceFabric, SourceKind::kWorkloadIdentity}) {
    EXPECT_EQ(parse_source_kind(to_string(kind)), kind) << to_string(kind);
  }
  EXPECT_EQ(parse_source_kind("app_service"), std::nullopt);
  EXPECT_EQ(display_name(SourceKind::kAppService), "App Service");
}

TEST(LogHook, ReceivesMessagesUntilRemoved) {
  std::vector<std::string> seen;
  set_log_hook([&](LogLevel, std::string_view message) { seen.emplace_back(message); });
  log(LogLevel::kInfo, "one");
  set_log_hook(nullptr);
  log(LogLevel::kInfo, "two");
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], "one");
}

}  // namespace
}  // namespace azkms
