#include "sources/registry.hpp"

#include <array>

namespace azkms::sources {
namespace {

// Order matters:
// - Service Fabric before App Service: both set IDENTITY_ENDPOINT and IDENTITY_HEADER, and
//   only the thumbprint tells them apart.
// - Azure ML before App Service 2017: both set MSI_ENDPOINT and MSI_SECRET; Azure ML is
//   recognised only when DEFAULT_IDENTITY_CLIENT_ID is also set (the wire is the same, the
//   difference is the default identity it selects).
// - Cloud Shell after both: it sets MSI_ENDPOINT alone.
// - Workload identity before IMDS: an AKS pod with workload identity can also reach the
//   node's IMDS, which would hand out the node's identity instead of the pod's.
// - IMDS last: it needs no variable, so it is the fallback.
constexpr std::array<Registration, 8> kRegistrations{{
    {SourceKind::kServiceFabric, &make_service_fabric},
    {SourceKind::kAppService, &make_app_service},
    {SourceKind::kAzureMl, &make_azure_ml},
    {SourceKind::kAppService2017, &make_app_service_2017},
    {SourceKind::kCloudShell, &make_cloud_shell},
    {SourceKind::kAzureArc, &make_azure_arc},
    {SourceKind::kWorkloadIdentity, &make_workload_identity},
    {SourceKind::kImds, &make_imds},
}};

}  // namespace

std::span<const Registration> registrations() { return kRegistrations; }

const Registration* find_registration(SourceKind kind) {
  for (const auto& registration : kRegistrations) {
    if (registration.kind == kind) return &registration;
  }
  return nullptr;
}

}  // namespace azkms::sources
