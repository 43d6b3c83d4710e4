// Clock: the one place azkms reads time or sleeps, so that every timing rule (expiry, refresh
// ahead, backoff, deadlines) can be tested with a ManualClock without sleeping.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace azkms {

using SystemTime = std::chrono::system_clock::time_point;  // token expiry: absolute epoch time
using SteadyTime = std::chrono::steady_clock::time_point;  // deadlines and backoff
using Deadline = SteadyTime;

class Clock {
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
class ManualClock final : public Clock {
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
