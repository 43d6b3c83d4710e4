// IdentitySelector: which managed identity to ask for. Selectors are mutually exclusive; the
// default is the system-assigned identity. Each source maps the kind to its own parameter
// name (see docs/design.md) or refuses it before any request is sent.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include "azkms/export.h"

namespace azkms {

class AZKMS_EXPORT IdentitySelector {
 public:
  enum class Kind : std::uint8_t { kSystemAssigned, kClientId, kObjectId, kResourceId };

  IdentitySelector() = default;
  static IdentitySelector system_assigned() { return {}; }
  static IdentitySelector client_id(std::string id) { return {Kind::kClientId, std::move(id)}; }
  // Also called principal id.
  static IdentitySelector object_id(std::string id) { return {Kind::kObjectId, std::move(id)}; }
  // Azure resource id of the user-assigned identity (/subscriptions/.../userAssignedIdentities/x).
  static IdentitySelector resource_id(std::string id) { return {Kind::kResourceId, std::move(id)}; }

  [[nodiscard]] Kind kind() const noexcept { return kind_; }
  [[nodiscard]] const std::string& value() const noexcept { return value_; }
  [[nodiscard]] bool is_system_assigned() const noexcept { return kind_ == Kind::kSystemAssigned; }
  // "system-assigned", "client id 1234...", for messages (ids are not secrets).
  [[nodiscard]] std::string describe() const;

  // Written out (not defaulted) so that the header compiles as C++17.
  friend bool operator==(const IdentitySelector& a, const IdentitySelector& b) {
    return a.kind_ == b.kind_ && a.value_ == b.value_;
  }
  friend bool operator!=(const IdentitySelector& a, const IdentitySelector& b) { return !(a == b); }

 private:
  IdentitySelector(Kind kind, std::string value) : kind_(kind), value_(std::move(value)) {}
  Kind kind_ = Kind::kSystemAssigned;
  std::string value_;
};

AZKMS_EXPORT std::string_view to_string(IdentitySelector::Kind kind) noexcept;

// Bit set of selector kinds a source supports.
enum SelectorSupport : std::uint8_t {
  kSupportsSystemAssigned = 1u << 0,
  kSupportsClientId = 1u << 1,
  kSupportsObjectId = 1u << 2,
  kSupportsResourceId = 1u << 3,
};

[[nodiscard]] constexpr bool supports(std::uint8_t set, IdentitySelector::Kind kind) noexcept {
  return (set & (1u << static_cast<unsigned>(kind))) != 0;
}

}  // namespace azkms
