// Running the command-line program (build/bin/azkms, next to the test binary) the way a
// person would, with exactly the environment a test gives it, and only ever against loopback.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>

#include "loopback_only.hpp"

namespace azkms::testing {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;  // what the program wrote on stderr, less the sanitizer runtime's notes
  std::string sanitizer_notes;  // lines a sanitizer's runtime wrote, "==<pid>==..."
};

inline std::string shell_quote(const std::string& value) {
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

inline std::filesystem::path cli_path() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path() / "azkms";
}

// Runs a shell command line; its exit code (-1 when it did not exit) and what it wrote on
// stdout.
struct CommandRun {
  int exit_code = -1;
  std::string out;
};
inline CommandRun run_command(const std::string& command) {
  CommandRun run;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen failed";
    return run;
  }
  std::array<char, 4096> buffer{};
  while (std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) {
    run.out.append(buffer.data(), n);
  }
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// A line a sanitizer's runtime writes starts "==<pid>==".
inline bool is_sanitizer_line(std::string_view line) {
  if (line.substr(0, 2) != "==") return false;
  std::size_t i = 2;
  while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])) != 0) ++i;
  return i > 2 && line.substr(i, 2) == "==";
}

// In a sanitizer build, the runtime may add notes of its own to the program's stderr (LSan's
// "Running thread ... was not suspended" when it checks for leaks at exit): they are not the
// program's output, so they are moved out of `err`, where tests count and read its lines. A
// report of an error is never moved: it fails the test, and `err` keeps it.
inline void set_aside_sanitizer_notes(CliRun& run) {
  // A report's first line, as each runtime writes it; not the same words quoted in a message.
  static const std::regex report(
      R"((^|\n)(==\d+==ERROR: (Address|Leak)Sanitizer|==\d+==\w*Sanitizer has encountered a )"
      R"(fatal error|[^\s:]+:\d+:\d+: runtime error:|WARNING: ThreadSanitizer))");
  std::smatch found;
  if (std::regex_search(run.err, found, report)) {
    ADD_FAILURE() << "the command-line program's sanitizer runtime reported: " << found[2];
    return;
  }
  std::string kept;
  std::istringstream lines(run.err);
  for (std::string line; std::getline(lines, line);) {
    (is_sanitizer_line(line) ? run.sanitizer_notes : kept) += line + "\n";
  }
  if (!run.sanitizer_notes.empty()) run.err = std::move(kept);
}

// Runs build/bin/azkms with exactly `vars` as its environment (plus PATH, and the sanitizer
// settings of a sanitizer build); its stderr goes through a file in `scratch`.
inline CliRun run_cli(const std::map<std::string, std::string>& vars, const std::string& arguments,
                      const std::filesystem::path& scratch) {
  // The command line may only ever reach loopback.
  for (const char* name : {"IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                           "AZURE_AUTHORITY_HOST", "IMDS_ENDPOINT"}) {
    auto it = vars.find(name);
    if (it != vars.end() && !is_loopback_url(it->second)) {
      ADD_FAILURE() << "refusing to run the CLI with " << name << " pointing off loopback";
      return {};
    }
  }
  if (arguments.find("token") != std::string::npos &&
      vars.count("AZURE_POD_IDENTITY_AUTHORITY_HOST") == 0 &&
      vars.count("IDENTITY_ENDPOINT") == 0 && vars.count("MSI_ENDPOINT") == 0 &&
      vars.count("AZURE_AUTHORITY_HOST") == 0) {
    ADD_FAILURE() << "refusing to run `azkms token` without a loopback endpoint";
    return {};
  }
  std::string command = "env -i PATH=/usr/bin:/bin";
  for (const auto& [name, value] : vars) command += " " + name + "=" + shell_quote(value);
  // A sanitizer build of the program runs with the test's sanitizer settings, not defaults.
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && vars.count(name) == 0) {
      command += std::string(" ") + name + "=" + shell_quote(value);
    }
  }
  const std::filesystem::path err_file = scratch / "stderr.txt";
  command += " " + shell_quote(cli_path().string()) + " " + arguments + " 2>" +
             shell_quote(err_file.string());
  CliRun run;
  const CommandRun ran = run_command(command);
  run.out = ran.out;
  run.exit_code = ran.exit_code;
  std::ifstream in(err_file);
  std::stringstream err;
  err << in.rdbuf();
  run.err = err.str();
  set_aside_sanitizer_notes(run);
  return run;
}

}  // namespace azkms::testing
