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

// What an echo case answers with, besides its position.
struct EchoAnswer {
  std::string echo;             // the echoed secret, already in the case's form
  std::string token;            // the access_token of the answer
  std::string client_id;        // of the identity served
  std::string resource;         // of the request
  std::string redirect_target;  // path echo-location points to, e.g. "/redirect-target"
};

// The secret as the echo case sends it: raw, URL-encoded or JSON-escaped.
std::string echo_form(std::string_view secret, EchoFault::Form form);

// Writes the answer of an echo case (see parse_echo_fault); false for an unknown position.
bool apply_echo_fault(const EchoFault& echo, const EchoAnswer& answer, httplib::Response& res);

// Tears down the connection that carries `req`: a reset (RST) when `reset`, otherwise an
// orderly close. Whatever httplib writes to it afterwards goes nowhere.
void abort_connection(const httplib::Request& req, bool reset);

}  // namespace azkms::emulator
