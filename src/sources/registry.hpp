// The ordered list of source factories: detection walks it and the first factory that
// recognises the environment wins. Adding an environment is one new file under src/sources/
// and one line in registry.cpp.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "azkms/environment.hpp"
#include "http_token_source.hpp"

namespace azkms::sources {

enum class Mode {
  kDetect,  // return an empty Candidate when the environment does not point at this source
  kForced,  // the source was named: throw kConfiguration naming what to set instead
};

struct Candidate {
  std::shared_ptr<HttpTokenSource> source;  // null: the environment does not select it
  std::string reason;                       // "IDENTITY_ENDPOINT and IDENTITY_HEADER are set"
};

// Each throws kConfiguration when its variables are set but invalid (a malformed URL or
// thumbprint): a misconfigured environment is reported, never skipped silently.
Candidate make_service_fabric(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_app_service(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_azure_ml(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_app_service_2017(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_cloud_shell(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_azure_arc(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_workload_identity(const Environment& env, const SourceContext& context, Mode mode);
Candidate make_imds(const Environment& env, const SourceContext& context, Mode mode);

using Factory = Candidate (*)(const Environment&, const SourceContext&, Mode);

struct Registration {
  SourceKind kind;
  Factory create;
};

// Detection order (see docs/design.md): Service Fabric, App Service 2019, Azure ML, App
// Service 2017, Cloud Shell, Azure Arc, workload identity, IMDS.
std::span<const Registration> registrations();

// The registration of `kind`; nullptr for kCustom.
const Registration* find_registration(SourceKind kind);

}  // namespace azkms::sources
