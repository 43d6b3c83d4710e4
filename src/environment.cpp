#include "azkms/environment.hpp"

#include <cstdlib>
#include <filesystem>

namespace azkms {

std::optional<std::string> ProcessEnvironment::get(const std::string& name) const {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

bool ProcessEnvironment::file_exists(const std::string& path) const {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

std::optional<std::string> MapEnvironment::get(const std::string& name) const {
  auto it = vars_.find(name);
  if (it == vars_.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

bool MapEnvironment::file_exists(const std::string& path) const { return files_.count(path) > 0; }

}  // namespace azkms
