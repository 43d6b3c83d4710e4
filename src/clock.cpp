#include "azkms/clock.hpp"

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "fork_safety.hpp"

namespace azkms {

SystemTime from_unix_seconds_clamped(std::int64_t seconds) noexcept {
  const std::int64_t clamped = std::clamp<std::int64_t>(seconds, 0, kLatestExpiry.count());
  return SystemTime{std::chrono::seconds{clamped}};
}
namespace {

class SystemClock final : public Clock, private detail::ForkAware {
 public:
  SystemClock() = default;
  ~SystemClock() override = default;  // fork_registration_ goes first
  SystemClock(const SystemClock&) = delete;
  SystemClock& operator=(const SystemClock&) = delete;

  [[nodiscard]] SystemTime now() const override { return std::chrono::system_clock::now(); }
  [[nodiscard]] SteadyTime steady_now() const override { return std::chrono::steady_clock::now(); }

  void sleep_until(SteadyTime until) override {
    std::unique_lock lock(mutex_);
    const unsigned generation = generation_;
    cv_.wait_until(lock, until, [&] { return generation_ != generation; });
  }

  void wake_all() override {
    {
      std::lock_guard lock(mutex_);
      ++generation_;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  unsigned generation_ = 0;

  // A thread sleeping in sleep_until() at a fork is not in the child, but cv_ still counts it
  // as a waiter, and glibc's pthread_cond_destroy() waits for every waiter it counted: the
  // child's exit(), which destroys this clock, would wait for ever. So the child gets a new,
  // empty cv_, built over the old one without destroying it. mutex_ is held across the fork so
  // that no sleeper is half-way in or out of its wait.
  void before_fork() override { mutex_.lock(); }
  void after_fork_in_parent() override { mutex_.unlock(); }
  void after_fork_in_child() override {
    std::construct_at(&cv_);
    mutex_.unlock();
  }

  // Last: registered once everything above exists, unregistered before any of it goes.
  detail::ForkRegistration fork_registration_{*this};
};

}  // namespace

std::shared_ptr<Clock> Clock::system() {
  static const std::shared_ptr<Clock> clock = std::make_shared<SystemClock>();
  return clock;
}

ManualClock::ManualClock(SystemTime start) : system_start_(start) {}

SystemTime ManualClock::now() const {
  std::lock_guard lock(mutex_);
  return system_start_ + std::chrono::duration_cast<SystemTime::duration>(offset_);
}

SteadyTime ManualClock::steady_now() const {
  std::lock_guard lock(mutex_);
  return steady_start_ + offset_;
}

void ManualClock::sleep_until(SteadyTime until) {
  std::unique_lock lock(mutex_);
  ++sleepers_;
  cv_.notify_all();  // lets tests waiting for a sleeper see it
  const unsigned generation = wake_generation_;
  cv_.wait(lock,
           [&] { return steady_start_ + offset_ >= until || wake_generation_ != generation; });
  --sleepers_;
}

void ManualClock::wake_all() {
  {
    std::lock_guard lock(mutex_);
    ++wake_generation_;
  }
  cv_.notify_all();
}

void ManualClock::advance(std::chrono::nanoseconds by) {
  {
    std::lock_guard lock(mutex_);
    offset_ += by;
  }
  cv_.notify_all();
}

int ManualClock::sleepers() const {
  std::lock_guard lock(mutex_);
  return sleepers_;
}

}  // namespace azkms
