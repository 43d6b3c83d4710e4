#include <array>
#include <utility>

#include "azkms/source.hpp"

namespace azkms {
namespace {

struct KindNames {
  SourceKind kind;
  std::string_view cli_name;
  std::string_view display;
};

constexpr std::array<KindNames, 9> kNames{{
    {SourceKind::kImds, "imds", "IMDS"},
    {SourceKind::kAppService, "app-service", "App Service"},
    {SourceKind::kAppService2017, "app-service-2017", "App Service 2017"},
    {SourceKind::kAzureMl, "azure-ml", "Azure ML"},
    {SourceKind::kCloudShell, "cloud-shell", "Cloud Shell"},
    {SourceKind::kAzureArc, "azure-arc", "Azure Arc"},
    {SourceKind::kServiceFabric, "service-fabric", "Service Fabric"},
    {SourceKind::kWorkloadIdentity, "workload-identity", "Workload identity"},
    {SourceKind::kCustom, "custom", "Custom callback"},
}};

const KindNames& names_of(SourceKind kind) noexcept {
  for (const auto& entry : kNames) {
    if (entry.kind == kind) return entry;
  }
  return kNames.back();
}

}  // namespace

std::string_view to_string(SourceKind kind) noexcept { return names_of(kind).cli_name; }

std::string_view display_name(SourceKind kind) noexcept { return names_of(kind).display; }

std::string_view default_identity(SourceKind kind) noexcept {
  switch (kind) {
    case SourceKind::kWorkloadIdentity:
      return "default (AZURE_CLIENT_ID)";
    case SourceKind::kCustom:
      return "default";
    default:
      return "system-assigned";
  }
}

std::optional<SourceKind> parse_source_kind(std::string_view name) noexcept {
  for (const auto& entry : kNames) {
    if (entry.cli_name == name) return entry.kind;
  }
  return std::nullopt;
}

}  // namespace azkms
