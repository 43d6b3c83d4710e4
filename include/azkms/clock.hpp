// Clock: the one place azkms reads time or sleeps, so that every timing rule (expiry, refresh
// ahead, backoff, deadlines) can be tested with a ManualClock without sleeping.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include "azkms/export.h"

namespace azkms {

using SystemTime = std::chrono::system_clock::time_point;  // token expiry: absolute epoch time
using SteadyTime = std::chrono::steady_clock::time_point;  // deadlines and backoff
using Deadline = SteadyTime;

// Instants that come from outside (endpoints, callers of the C API) are bounded before any
// arithmetic: SystemTime counts nanoseconds in 64 bits and ends in 2262. No token expires
// after 2200-01-01T00:00:00Z; an expiry given later is read as that.
inline constexpr std::chrono::seconds kLatestExpiry{7'258'118'400};

// Unix seconds as a SystemTime, clamped to [1970-01-01, kLatestExpiry]: INT64_MAX ("never
// expires") becomes 2200, a negative value 1970 (long expired), and nothing overflows.
[[nodiscard]] AZKMS_EXPORT SystemTime from_unix_seconds_clamped(std::int64_t seconds) noexcept;

class AZKMS_EXPORT Clock {
 public:
  virtual ~Clock() = default;
  [[nodiscard]] virtual SystemTime now() const = 0;
  [[nodiscard]] virtual SteadyTime steady_now() const = 0;
  // Sleeps until `until` (steady), or returns early when wake_all() is called.
  virtual void sleep_until(SteadyTime until) = 0;
  // Wakes every sleeper (used to stop background threads promptly).
  virtual void wake_all() = 0;

  // The process-wide real clock.
  static std::shared_ptr<Clock> system();
};

// A clock that moves only when told to. advance() wakes sleepers whose time has come.
class AZKMS_EXPORT ManualClock final : public Clock {
 public:
  explicit ManualClock(SystemTime start = SystemTime{std::chrono::seconds{1'700'000'000}});
  [[nodiscard]] SystemTime now() const override;
  [[nodiscard]] SteadyTime steady_now() const override;
  void sleep_until(SteadyTime until) override;
  void wake_all() override;

  void advance(std::chrono::nanoseconds by);
  // Number of threads currently blocked in sleep_until (lets tests wait for a sleeper).
  [[nodiscard]] int sleepers() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::chrono::nanoseconds offset_{0};
  SystemTime system_start_;
  SteadyTime steady_start_{};
  int sleepers_ = 0;
  unsigned wake_generation_ = 0;
};

}  // namespace azkms
