// The API 2017-09-01 wire, shared by legacy App Service (app_service_2017.cpp) and Azure
// Machine Learning (azure_ml.cpp): the same path, secret header and check; they differ in the
// token shape and the default identity.
#pragma once

#include <httplib.h>

#include <optional>
#include <string>

#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {

inline constexpr const char* kMsiTokenPath = "/msi/token";

// Header `secret` equal to MSI_SECRET (else 401), api-version 2017-09-01, a resource. Only
// `clientid` selects; any other parameter is ignored, as on the platform, so a client sending
// `client_id` silently gets the default identity (`when_none`, when given).
std::optional<Grant> check_msi_secret_request(const RequestChecks& checks,
                                              const httplib::Request& req, httplib::Response& res,
                                              const Identity* when_none = nullptr);

// The `secret` header, as received.
std::string msi_secret_credential(const httplib::Request& req);

}  // namespace azkms::emulator::endpoints
