#include "log.hpp"

#include <atomic>
#include <memory>
#include <mutex>

#include "redaction.hpp"

namespace azkms {
namespace {

std::mutex g_hook_mutex;
std::shared_ptr<const LogHook> g_hook;  // guarded by g_hook_mutex
std::atomic<bool> g_has_hook{false};    // lets log() return without locking when unset

}  // namespace

void set_log_hook(LogHook hook) {
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
