// Environment: where detection reads variables and checks files. Tests pass a MapEnvironment;
// the process uses ProcessEnvironment. A variable counts as set only when non-empty.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include "azkms/export.h"

namespace azkms {

class AZKMS_EXPORT Environment {
 public:
  virtual ~Environment() = default;
  // The value when the variable is set and non-empty.
  [[nodiscard]] virtual std::optional<std::string> get(const std::string& name) const = 0;
  [[nodiscard]] virtual bool file_exists(const std::string& path) const = 0;
};

class AZKMS_EXPORT ProcessEnvironment final : public Environment {
 public:
  [[nodiscard]] std::optional<std::string> get(const std::string& name) const override;
  [[nodiscard]] bool file_exists(const std::string& path) const override;
};

class AZKMS_EXPORT MapEnvironment final : public Environment {
 public:
  MapEnvironment() = default;
  explicit MapEnvironment(std::map<std::string, std::string> vars, std::set<std::string> files = {})
      : vars_(std::move(vars)), files_(std::move(files)) {}
  [[nodiscard]] std::optional<std::string> get(const std::string& name) const override;
  [[nodiscard]] bool file_exists(const std::string& path) const override;
  void set(std::string name, std::string value) { vars_[std::move(name)] = std::move(value); }
  void add_file(std::string path) { files_.insert(std::move(path)); }

 private:
  std::map<std::string, std::string> vars_;
  std::set<std::string> files_;
};

}  // namespace azkms
