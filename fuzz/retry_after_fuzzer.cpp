// Fuzzes the waits a server asks for: Retry-After (delta seconds or an HTTP date),
// retry-after-ms and x-ms-retry-after-ms, read by requested_retry_wait() and applied by
// run_with_retries(). The headers come from the network, so no value may overflow the time
// arithmetic or turn the retry loop into a request storm.
//
// Input: header lines, "Name: value" each ("\n" between lines, the value after the first
// ':' with its blanks left as they are). The first line may instead be a status ("410"); the
// default is 429. Seeds in fuzz/corpus/retry_after/ are written that way.
//
// Checks beyond "no crash, no sanitizer report":
// - requested_retry_wait() never throws, is deterministic, and stays within
//   [0, kLongestRequestedWait] for a clock at the start of 1970, today and late in 2261;
// - a millisecond header whose value is plain digits is read exactly, or as the longest wait
//   when it is longer;
// - run_with_retries() against an endpoint answering those headers every time, with IMDS's
//   policy and the generic one: never more attempts than the policy allows (max_attempts_410
//   for a 410 spell), never a wait shorter than the policy's shortest backoff whatever the
//   headers ask, and never past the deadline.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/clock.hpp"
#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/log.hpp"
#include "retry.hpp"

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "retry_after_fuzzer: %s\n", what);
  std::abort();
}

// A clock on which sleeping takes no time: it jumps to the wake-up time and remembers the
// shortest sleep asked for.
class JumpingClock final : public azkms::Clock {
 public:
  explicit JumpingClock(azkms::SystemTime start) : start_(start) {}
  [[nodiscard]] azkms::SystemTime now() const override {
    return start_ + std::chrono::duration_cast<azkms::SystemTime::duration>(offset_);
  }
  [[nodiscard]] azkms::SteadyTime steady_now() const override {
    return azkms::SteadyTime{} + offset_;
  }
  void sleep_until(azkms::SteadyTime until) override {
    const auto sleep = until - steady_now();
    if (sleep < shortest_sleep) shortest_sleep = sleep;
    ++sleeps;
    offset_ = std::max(offset_, until - azkms::SteadyTime{});
  }
  void wake_all() override {}

  std::chrono::nanoseconds shortest_sleep = std::chrono::nanoseconds::max();
  int sleeps = 0;

 private:
  azkms::SystemTime start_;
  std::chrono::nanoseconds offset_{0};
};

struct Input {
  int status = 429;
  std::vector<azkms::HttpHeader> headers;
};

Input read_input(std::string_view text) {
  Input input;
  bool first = true;
  while (!text.empty()) {
    const auto end = std::min(text.find('\n'), text.size());
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(std::min(end + 1, text.size()));
    const auto colon = line.find(':');
    if (first && colon == std::string_view::npos && line.size() == 3 &&
        std::all_of(line.begin(), line.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      input.status = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    } else if (colon != std::string_view::npos) {
      input.headers.push_back(
          {std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)), false});
    }
    first = false;
  }
  return input;
}

bool plain_digits(std::string_view text) {
  if (text.empty() || text.size() > 18) return false;
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void check_requested_wait(const azkms::HttpResponse& response) {
  const azkms::SystemTime today{seconds{1'700'000'000}};
  const azkms::SystemTime clocks[] = {azkms::SystemTime{}, today,
                                      azkms::SystemTime::max() - std::chrono::hours{24 * 366}};
  for (const auto now : clocks) {
    const auto wait = azkms::requested_retry_wait(response, now);
    if (wait != azkms::requested_retry_wait(response, now)) fail("not deterministic");
    if (wait && (*wait < milliseconds{0} || *wait > azkms::kLongestRequestedWait)) {
      fail("a requested wait outside [0, kLongestRequestedWait]");
    }
  }
  // The first millisecond header present decides, when it is readable; plain digits are read
  // exactly.
  for (const char* name : {"retry-after-ms", "x-ms-retry-after-ms"}) {
    const auto value = response.header(name);
    if (!value) continue;
    if (plain_digits(*value)) {
      long long expected = 0;
      for (char c : *value) expected = expected * 10 + (c - '0');
      const auto wait = azkms::requested_retry_wait(response, today);
      if (!wait ||
          wait->count() != std::min<long long>(expected, azkms::kLongestRequestedWait.count())) {
        fail("misread a plain millisecond count");
      }
    }
    break;
  }
}

void check_loop(const azkms::HttpResponse& response, const azkms::RetryPolicy& policy) {
  JumpingClock clock(azkms::SystemTime{seconds{1'700'000'000}});
  const azkms::Deadline deadline = clock.steady_now() + seconds{600};
  int calls = 0;
  int attempts = 0;
  try {
    azkms::run_with_retries(
        policy, clock, deadline, seconds{10},
        [&](milliseconds) {
          if (++calls > 64) fail("the retry loop does not stop");
          return response;
        },
        &attempts);
  } catch (const azkms::Error&) {
    fail("an answer made the loop throw");
  }
  const int cap = response.status == 410 && policy.retry_410
                      ? std::max(policy.max_attempts, policy.max_attempts_410)
                      : policy.max_attempts;
  if (attempts != calls || attempts > cap) fail("more attempts than the policy allows");
  // The shortest backoff a policy ever computes: its initial backoff, jittered down.
  const auto shortest = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double, std::milli>(
          static_cast<double>(policy.initial_backoff.count()) * (1.0 - policy.jitter) - 1.0));
  if (clock.sleeps > 0 && clock.shortest_sleep < shortest) {
    fail("a wait shorter than the policy's backoff");
  }
  if (clock.steady_now() > deadline) fail("the loop ran past the deadline");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;  // header lines are short; long ones only slow the search
  static const bool quiet = [] {
    azkms::set_log_hook([](azkms::LogLevel, std::string_view) {});
    return true;
  }();
  (void)quiet;
  const Input input = read_input(std::string_view(reinterpret_cast<const char*>(data), size));
  azkms::HttpResponse response;
  response.status = input.status;
  response.headers = input.headers;
  response.body = R"({"error":"fuzzed"})";
  try {
    check_requested_wait(response);
    for (int status : {input.status, 410, 429, 503}) {
      response.status = status;
      check_loop(response, azkms::RetryPolicy::imds());
      check_loop(response, azkms::RetryPolicy::identity_endpoint());
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "exception: %s\n", error.what());
    fail("something threw");
  }
  return 0;
}
