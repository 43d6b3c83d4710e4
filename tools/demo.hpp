// run_demo: the end-to-end walk-through behind `azkms demo`, on one machine, loopback only.
//
// Starts the identity emulator and the Key Vault emulator in-process on free loopback ports,
// behaves as an application hosted in `environment` (App Service by default) without touching
// the process environment (the emulator's variables go into a MapEnvironment), detects the
// environment, creates a data key wrapped by an RSA key in the emulated Key Vault, encrypts a
// sample field with it and decrypts it back. Each step is printed with its duration; tokens
// never are (only their source and lifetime).
//
// Part of the command-line tool (azkms_demo), not of the library: it needs the emulator
// (azkms_emulator) at link time.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "azkms/identity.hpp"
#include "azkms/source.hpp"

namespace azkms {

struct DemoOptions {
  // The hosting environment to emulate (kCustom is refused).
  SourceKind environment = SourceKind::kAppService;
  // Name the source instead of detecting it from the environment's variables.
  bool force_source = false;
  // Which identity to ask for; the emulator knows one system-assigned and two user-assigned.
  IdentitySelector identity;
  std::string sample = "457-55-5462";
};

struct DemoReport {
  std::string source;                // display name of the source that issued the token
  std::string data_key_id;           // the new data key's UUID
  std::uint64_t token_requests = 0;  // requests that reached the identity endpoint
  std::uint64_t key_vault_requests = 0;
  std::chrono::milliseconds total{0};
};

// Prints the walk-through to `out` and returns what happened. Throws azkms::Error (with the
// step that failed in its message) on failure.
DemoReport run_demo(const DemoOptions& options, std::ostream& out);

}  // namespace azkms
