// Log hook: azkms says what it does (detections, attempts, retries, refresh failures) through
// one process-wide callback. Messages never contain secrets: every line passes through the
// library's redaction before the hook sees it. Default: no logging.
#pragma once

#include <functional>
#include <string_view>
#include "azkms/export.h"

namespace azkms {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

using LogHook = std::function<void(LogLevel, std::string_view message)>;

// Installs the hook (nullptr removes it). Thread-safe; the hook may be called from any thread,
// including the cache's background refresher, and must not call back into set_log_hook.
AZKMS_EXPORT void set_log_hook(LogHook hook);

}  // namespace azkms
