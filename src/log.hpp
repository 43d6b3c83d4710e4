// log(): how the library says what it does, through the hook a user installs with
// set_log_hook() (azkms/log.hpp). Internal to the library.
#pragma once

#include <string_view>

#include "azkms/log.hpp"

namespace azkms {

// Hands `message`, redacted, to the installed hook; cheap when no hook is installed.
void log(LogLevel level, std::string_view message);

}  // namespace azkms
