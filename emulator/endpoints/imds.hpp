// What Azure Arc's agent shares with IMDS (imds.cpp): the token path, the identity selectors and
// the 200 body.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "endpoints/endpoint.hpp"

namespace azkms::emulator::endpoints {

inline constexpr std::string_view kImdsTokenPath = "/metadata/identity/oauth2/token";

// client_id, object_id or msi_res_id.
std::optional<const Identity*> select_imds_identity(const RequestChecks& checks,
                                                    const httplib::Params& params,
                                                    httplib::Response& res);

// Every field a string: access_token, client_id, expires_in, expires_on (epoch),
// ext_expires_in, not_before, resource, token_type.
nlohmann::json imds_token_body(const Grant& grant, const IssuedToken& issued);

}  // namespace azkms::emulator::endpoints
