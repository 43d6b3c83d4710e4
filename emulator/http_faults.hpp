// Turning fault cases into HTTP responses with cpp-httplib. Shared by every emulated server
// (identity endpoints and Key Vault); include it only from the .cpp files that serve HTTP.
#pragma once

#include <httplib.h>

#include <string>
#include <string_view>

#include "faults.hpp"

namespace azkms::emulator {

// The body every identity endpoint uses for errors: {"error": ..., "error_description": ...}.
void set_json_error(httplib::Response& res, int status, std::string_view error,
                    std::string_view description);

struct TransportFaultContext {
  StopSignal* stop = nullptr;     // required: slow and giant give up when it triggers
  std::string redirect_location;  // where `redirect` points
};

// Writes the response for every case whose answer does not depend on the endpoint (status
// codes, malformed bodies, slow, giant, reset, close, redirect). Returns false, leaving `res`
// alone, for the cases the endpoint builds itself (wrong-identity, drivers-default, arc-*).
bool apply_transport_fault(std::string_view fault, const httplib::Request& req,
                           httplib::Response& res, const TransportFaultContext& context);

// Tears down the connection that carries `req`: a reset (RST) when `reset`, otherwise an
// orderly close. Whatever httplib writes to it afterwards goes nowhere.
void abort_connection(const httplib::Request& req, bool reset);

}  // namespace azkms::emulator
