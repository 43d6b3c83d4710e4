#include "azkms/identity.hpp"

namespace azkms {

std::string_view to_string(IdentitySelector::Kind kind) noexcept {
  switch (kind) {
    case IdentitySelector::Kind::kSystemAssigned:
      return "system-assigned";
    case IdentitySelector::Kind::kClientId:
      return "client id";
    case IdentitySelector::Kind::kObjectId:
      return "object id";
    case IdentitySelector::Kind::kResourceId:
      return "resource id";
  }
  return "unknown";
}

std::string IdentitySelector::describe() const {
  if (is_system_assigned()) return "system-assigned identity";
  return "user-assigned identity with " + std::string(to_string(kind_)) + " " + value_;
}

}  // namespace azkms
