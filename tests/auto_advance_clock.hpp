// AutoAdvanceClock: a test clock on which sleeping takes no real time. sleep_until() moves the
// clock forward to the requested time at once and records the wait, so a retry loop that
// would take minutes on a real clock runs in microseconds and its schedule can be checked.
// Use ManualClock instead where another thread must decide when time moves (the cache's
// background refresher).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <vector>

#include "azkms/clock.hpp"

namespace azkms::testing {

class AutoAdvanceClock final : public Clock {
 public:
  explicit AutoAdvanceClock(SystemTime start = SystemTime{std::chrono::seconds{1'700'000'000}})
      : system_start_(start) {}

  [[nodiscard]] SystemTime now() const override {
    return system_start_ + std::chrono::duration_cast<SystemTime::duration>(offset());
  }
  [[nodiscard]] SteadyTime steady_now() const override { return SteadyTime{} + offset(); }

  void sleep_until(SteadyTime until) override {
    std::lock_guard lock(mutex_);
    const auto target = until - SteadyTime{};
    const auto current = std::chrono::nanoseconds{offset_ns_.load()};
    sleeps_.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(target - current));
    if (spurious_wakes_ > 0) {
      // Returns early without moving time, as a wake_all() meant for someone else would.
      --spurious_wakes_;
      return;
    }
    offset_ns_.store(std::max(current, std::chrono::nanoseconds{target}).count());
  }
  void wake_all() override {}

  void advance(std::chrono::nanoseconds by) { offset_ns_.fetch_add(by.count()); }
  // The next `count` calls to sleep_until return at once without moving time.
  void add_spurious_wakes(int count) {
    std::lock_guard lock(mutex_);
    spurious_wakes_ += count;
  }
  // Every requested sleep (time from the call to the requested wake-up), in order.
  [[nodiscard]] std::vector<std::chrono::nanoseconds> sleeps() const {
    std::lock_guard lock(mutex_);
    return sleeps_;
  }
  [[nodiscard]] std::chrono::nanoseconds elapsed() const { return offset(); }

 private:
  [[nodiscard]] std::chrono::nanoseconds offset() const {
    return std::chrono::nanoseconds{offset_ns_.load()};
  }

  SystemTime system_start_;
  std::atomic<std::int64_t> offset_ns_{0};
  mutable std::mutex mutex_;
  std::vector<std::chrono::nanoseconds> sleeps_;
  int spurious_wakes_ = 0;
};

}  // namespace azkms::testing
