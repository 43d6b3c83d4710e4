// The identity selectors a source supports, named: as kinds for machines (the JSON of `azkms
// detect`), and for people, where "no selector" is named as whose token it gets (workload
// identity has no system-assigned identity). One walk over the kinds for both.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "azkms/identity.hpp"
#include "azkms/source.hpp"

namespace azkms {

// "system-assigned", "client id", "object id", "resource id": the kinds in `set`, in that
// order ("system-assigned" is the kind that means no selector).
inline std::vector<std::string> selector_names(std::uint8_t set) {
  std::vector<std::string> names;
  for (auto kind : {IdentitySelector::Kind::kSystemAssigned, IdentitySelector::Kind::kClientId,
                    IdentitySelector::Kind::kObjectId, IdentitySelector::Kind::kResourceId}) {
    if (supports(set, kind)) names.emplace_back(to_string(kind));
  }
  return names;
}

// The same, with no selector named by default_identity(source): "default (AZURE_CLIENT_ID)"
// for workload identity, "system-assigned" for the managed identity sources.
inline std::vector<std::string> identity_names(std::uint8_t set, SourceKind source) {
  std::vector<std::string> names = selector_names(set);
  if (supports(set, IdentitySelector::Kind::kSystemAssigned)) {
    names.front() = default_identity(source);  // the first kind walked
  }
  return names;
}

}  // namespace azkms
