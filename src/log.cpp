#include "log.hpp"

#include <atomic>
#include <memory>
#include <mutex>

#include "fork_safety.hpp"
#include "redaction.hpp"

namespace azkms {
namespace {

std::mutex g_hook_mutex;
std::shared_ptr<const LogHook> g_hook;  // guarded by g_hook_mutex
std::atomic<bool> g_has_hook{false};    // lets log() return without locking when unset

// A thread holding g_hook_mutex at a fork (any logger, once a hook is set) would leave it
// locked forever in the child, whose first log() would then hang: it is held across the fork.
class HookForkGuard final : private detail::ForkAware {
 public:
  HookForkGuard() = default;
  ~HookForkGuard() = default;  // registration_ goes first
  HookForkGuard(const HookForkGuard&) = delete;
  HookForkGuard& operator=(const HookForkGuard&) = delete;

 private:
  void before_fork() override { g_hook_mutex.lock(); }
  void after_fork_in_parent() override { g_hook_mutex.unlock(); }
  void after_fork_in_child() override { g_hook_mutex.unlock(); }

  detail::ForkRegistration registration_{*this};
};

// Until the first set_log_hook() no thread takes the lock, so it registers only then.
void guard_hook_across_forks() { static HookForkGuard guard; }

}  // namespace

void set_log_hook(LogHook hook) {
  guard_hook_across_forks();
  std::shared_ptr<const LogHook> next;
  if (hook) next = std::make_shared<const LogHook>(std::move(hook));
  std::lock_guard lock(g_hook_mutex);
  g_hook = std::move(next);
  g_has_hook.store(g_hook != nullptr, std::memory_order_release);
}

void log(LogLevel level, std::string_view message) {
  if (!g_has_hook.load(std::memory_order_acquire)) return;
  std::shared_ptr<const LogHook> hook;
  {
    std::lock_guard lock(g_hook_mutex);
    hook = g_hook;
  }
  // Called outside the lock so that a slow hook never blocks set_log_hook or other loggers.
  // Every line goes through the last redaction pass, whichever layer wrote it.
  if (hook) (*hook)(level, safe_message(message));
}

}  // namespace azkms
