// Which hosts the libcurl client reaches without a proxy. Internal; exposed for the tests.
#pragma once

#include <string_view>

namespace azkms::http_detail {

// True for loopback (127.0.0.0/8, ::1, localhost and *.localhost) and link-local
// (169.254.0.0/16, fe80::/10) hosts, including IPv4-mapped IPv6 forms and bracketed IPv6
// literals. Identity endpoints live there; a proxy in between would at best fail and at worst
// see the request and its secret header. Other hosts follow the environment's proxy settings.
bool bypasses_proxy(std::string_view host);

}  // namespace azkms::http_detail
