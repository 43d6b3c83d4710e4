// Detection: which hosting environment this process runs in, in the order of the reference
// sheet (Service Fabric, App Service 2019, Azure ML, App Service 2017, Cloud Shell, Azure Arc,
// workload identity, IMDS). Each source file registers a factory; detection walks them in
// order and the first whose variables are all set wins. Naming a source skips the walk.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "azkms/environment.hpp"
#include "azkms/export.h"
#include "azkms/source.hpp"

namespace azkms {

struct AZKMS_EXPORT DetectedVariable {
  std::string name;
  std::string value;  // "[redacted]" for secrets (IDENTITY_HEADER, MSI_SECRET)
};

struct AZKMS_EXPORT Detection {
  SourceKind kind = SourceKind::kImds;
  bool forced = false;                      // named explicitly rather than detected
  std::string reason;                       // "IDENTITY_ENDPOINT and IDENTITY_HEADER are set"
  std::vector<DetectedVariable> variables;  // every identity-related variable seen
  std::string endpoint;                     // no secrets
  std::uint8_t supported_selectors = 0;
  std::shared_ptr<TokenSource> source;  // ready to fetch
};

// Throws ErrorCode::kConfiguration when a forced source lacks its variables or a variable is
// invalid (e.g. a malformed thumbprint), naming the variable and what to set.
AZKMS_EXPORT Detection detect(const Environment& environment,
                              std::optional<SourceKind> force = std::nullopt,
                              SourceContext context = {});

// Convenience: detect() and return the source.
AZKMS_EXPORT std::shared_ptr<TokenSource> make_source(
    const Environment& environment, std::optional<SourceKind> force = std::nullopt,
    SourceContext context = {});

}  // namespace azkms
