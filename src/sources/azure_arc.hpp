// Azure Arc-enabled servers: the source built from code, endpoint and key directory given
// directly (tests and the fuzzer point it at a local agent). Internal to the library: users
// reach Arc through detect() or make_source(), which read IDENTITY_ENDPOINT and
// AZKMS_ARC_TOKEN_DIRECTORY.
//
// The Arc agent answers the first request with 401 and `WWW-Authenticate: Basic
// realm=<key file>`; the client proves it may read that file (root or the himds group) by
// sending its contents back. Because the path comes from the endpoint, it is never trusted: the
// file must sit directly in `key_directory`, be named *.key, be a regular file of at most 4096
// bytes (checked before it is read), and its path is rebuilt from `key_directory` and the base
// name. One challenge per attempt: a second 401 is an error, never a loop.
//
// User-assigned identities: current agents accept client_id, object_id and msi_res_id. An older
// agent ignores them and answers with the system-assigned identity's token, so a response is
// accepted for a selector only when it names the requested identity (the client_id, object_id
// or msi_res_id field, whichever was asked by); one that does not is kIdentityMismatch.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "http_token_source.hpp"

namespace azkms {

inline constexpr std::string_view kArcDefaultEndpoint =
    "http://localhost:40342/metadata/identity/oauth2/token";
inline constexpr std::string_view kArcDefaultKeyDirectory = "/var/opt/azcmagent/tokens";

struct ArcOptions {
  std::string endpoint{kArcDefaultEndpoint};
  // Where challenge key files must be. Trusted configuration, never endpoint input: set it
  // from code, or through AZKMS_ARC_TOKEN_DIRECTORY when detecting (meant for development
  // against the local emulator, which writes its key files to a temporary directory).
  std::string key_directory{kArcDefaultKeyDirectory};
};

// Throws ErrorCode::kConfiguration when the endpoint is not an http(s) URL or the directory is
// not an absolute path.
std::shared_ptr<HttpTokenSource> make_azure_arc_source(ArcOptions options,
                                                       SourceContext context = {});

}  // namespace azkms
