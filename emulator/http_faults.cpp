#include "http_faults.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "connection_guard.hpp"
#include "encoding.hpp"

namespace azkms::emulator {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

// httplib does not hand its socket to handlers: find it among the server's connections.
int find_connection_fd(int local_port, int remote_port) {
  for (const auto& socket : server_sockets(local_port)) {
    if (socket.peer_port == remote_port) return socket.fd;
  }
  return -1;
}

void abort_connection(int local_port, int remote_port, bool reset) {
  const int fd = find_connection_fd(local_port, remote_port);
  if (fd < 0) return;
  if (reset) {
    const linger hard{1, 0};  // close() then sends RST instead of FIN
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  } else {
    ::shutdown(fd, SHUT_RDWR);
  }
  // Replace the socket by /dev/null under the same descriptor number: the socket is closed now
  // (sending the RST), while httplib, which still owns the number, closes a harmless file later
  // and no other thread can be handed the number in between.
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    ::dup2(null_fd, fd);
    ::close(null_fd);
  }
}

void set_status_fault(httplib::Response& res, int status) {
  switch (status) {
    case 400:
      set_json_error(res, 400, "invalid_request", "Bad request (injected fault)");
      break;
    case 404:
      set_json_error(res, 404, "not_found", "The identity endpoint is updating (injected fault)");
      break;
    case 408:
      set_json_error(res, 408, "request_timeout", "Request timed out (injected fault)");
      break;
    case 410:
      set_json_error(res, 410, "gone", "The identity endpoint is updating (injected fault)");
      break;
    case 429:
      set_json_error(res, 429, "too_many_requests", "Too many requests (injected fault)");
      res.set_header("Retry-After", "1");
      break;
    case 502:
      set_json_error(res, 502, "bad_gateway", "Bad gateway (injected fault)");
      break;
    case 503:
      set_json_error(res, 503, "service_unavailable", "Service unavailable (injected fault)");
      break;
    case 504:
      set_json_error(res, 504, "gateway_timeout", "Gateway timeout (injected fault)");
      break;
    default:
      set_json_error(res, status, "server_error", "Internal server error (injected fault)");
      break;
  }
}

// Filler that puts the middle of an echo of `size` bytes, written after `before` bytes of
// other text and the filler, at byte `at`: a client that cut its excerpt there before
// redacting would show part of the echo.
std::string padding_for(std::size_t at, std::size_t before, std::size_t size) {
  const std::size_t middle = before + size / 2;
  return std::string(at > middle ? at - middle : 0, 'p');
}

json token_body(const EchoAnswer& answer) {
  return {{"access_token", answer.token},
          {"expires_in", "3600"},
          {"token_type", "Bearer"},
          {"resource", answer.resource},
          {"client_id", answer.client_id}};
}

constexpr std::size_t kGiantSize = std::size_t{24} << 20;
constexpr std::string_view kGiantPrefix = R"({"access_token":"giant","padding":")";
constexpr std::string_view kGiantSuffix = R"("})";

}  // namespace

void set_json_error(httplib::Response& res, int status, std::string_view error,
                    std::string_view description) {
  res.status = status;
  nlohmann::json body = {{"error", error}, {"error_description", description}};
  res.set_content(body.dump(), "application/json");
}

void abort_connection(const httplib::Request& req, bool reset) {
  abort_connection(req.local_port, req.remote_port, reset);
}

std::string echo_form(std::string_view secret, EchoFault::Form form) {
  switch (form) {
    case EchoFault::Form::kRaw:
      return std::string(secret);
    case EchoFault::Form::kUrl:
      return percent_encode(secret);
    case EchoFault::Form::kJson: {
      const std::string quoted =
          json(std::string(secret)).dump(-1, ' ', false, json::error_handler_t::replace);
      return quoted.substr(1, quoted.size() - 2);
    }
  }
  return std::string(secret);
}

bool apply_echo_fault(const EchoFault& echo, const EchoAnswer& answer, httplib::Response& res) {
  const std::string& text = answer.echo;
  const std::string& where = echo.position;
  res.status = 200;
  if (where == "body-value") {
    // Not JSON (never closed): the client quotes the body, cut at 120 bytes.
    const std::string before = R"({"padding":")";
    const std::string pad = padding_for(120, before.size() + 10, text.size());
    res.set_content(before + pad + R"(","echo":")" + text + R"(","access_token":")" + answer.token,
                    "application/json");
  } else if (where == "field-name") {
    json body = {{"access_token", answer.token}, {text, 1}, {"token_type", "Bearer"}};
    res.set_content(body.dump(), "application/json");
  } else if (where == "client-id" || where == "resource" || where == "token-type") {
    json body = token_body(answer);
    body[where == "client-id"  ? "client_id"
         : where == "resource" ? "resource"
                               : "token_type"] = text;
    res.set_content(body.dump(), "application/json");
  } else if (where == "expiry") {
    json body = token_body(answer);
    body.erase("expires_in");
    body["expires_on"] = text;
    res.set_content(body.dump(), "application/json");
  } else if (where == "error-description") {
    // An echoed token is the token of the answer: the answer carries it as one.
    json body = {{"error", text},
                 {"error_description",
                  "AADSTS50000: the request carried " + text + ", which is not accepted here"}};
    if (echo.token) body["access_token"] = answer.token;
    res.status = 400;
    res.set_content(body.dump(), "application/json");
  } else if (where == "html") {
    const std::string before = "<!DOCTYPE html><html><body><p>";
    const std::string carried = echo.token ? "<p>access_token=" + answer.token + "</p>" : "";
    res.set_content(before + padding_for(120, before.size(), text.size()) + text + "</p>" +
                        carried + "</body></html>\n",
                    "text/html; charset=utf-8");
  } else if (where == "status-body") {
    const std::string carried = echo.token ? " (access_token=" + answer.token + ")" : "";
    res.status = 403;
    res.set_content(padding_for(200, 0, text.size()) + text + " was refused" + carried,
                    "text/plain");
  } else if (where == "location") {
    res.set_redirect("http://" + text + answer.redirect_target + "?echo=" + text, 302);
    res.set_content(R"({"error":"moved","error_description":"see Location"})", "application/json");
  } else if (where == "header") {
    set_json_error(res, 401, "unauthorized", "see WWW-Authenticate");
    res.set_header("WWW-Authenticate", "Basic realm=\"" + text + "\"");
    res.set_header("Retry-After", text);
    res.set_header("X-Echo", text);
  } else {
    return false;
  }
  return true;
}

bool apply_transport_fault(std::string_view fault, const httplib::Request& req,
                           httplib::Response& res, const TransportFaultContext& context) {
  StopSignal* stop = context.stop;
  if (fault == "empty-json") {
    res.status = 200;
    res.set_content("{}", "application/json");
  } else if (fault == "bad-json") {
    res.status = 200;
    res.set_content(R"({"key": })", "application/json");
  } else if (fault == "truncated") {
    res.status = 200;
    res.set_content(R"({"access_token":"abc)", "application/json");
  } else if (fault == "html") {
    res.status = 200;
    res.set_content(
        "<!DOCTYPE html>\n<html><head><title>Welcome</title></head>"
        "<body><h1>It works!</h1><p>This is not an identity endpoint.</p></body></html>\n",
        "text/html; charset=utf-8");
  } else if (fault == "xml") {
    res.status = 200;
    res.set_content(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>"
        "<Message>Server failed to authenticate the request.</Message></Error>",
        "application/xml");
  } else if (fault == "missing-token") {
    res.status = 200;
    res.set_content(R"({"expires_in":"3599"})", "application/json");
  } else if (fault == "non-string-token") {
    res.status = 200;
    res.set_content(R"({"access_token":12,"expires_in":"3599","token_type":"Bearer"})",
                    "application/json");
  } else if (fault == "bad-expiry") {
    res.status = 200;
    res.set_content(R"({"access_token":"x","expires_on":"tomorrow"})", "application/json");
  } else if (fault == "400" || fault == "404" || fault == "408" || fault == "410" ||
             fault == "429" || fault == "500" || fault == "502" || fault == "503" ||
             fault == "504") {
    set_status_fault(res, std::stoi(std::string(fault)));
  } else if (fault == "410-retry-after-0") {
    set_status_fault(res, 410);
    res.set_header("Retry-After", "0");
  } else if (fault == "429-retry-after-ms-max") {
    set_json_error(res, 429, "too_many_requests", "Too many requests (injected fault)");
    res.set_header("x-ms-retry-after-ms", "9223372036854775807");
  } else if (fault == "429-retry-after-2300") {
    set_json_error(res, 429, "too_many_requests", "Too many requests (injected fault)");
    res.set_header("Retry-After", "Mon, 01 Jan 2300 00:00:00 GMT");
  } else if (fault == "redirect") {
    res.set_redirect(context.redirect_location, 302);
    res.set_content(R"({"error":"moved","error_description":"see Location"})", "application/json");
  } else if (fault == "slow") {
    res.status = 200;
    res.set_chunked_content_provider("application/json",
                                     [stop](std::size_t offset, httplib::DataSink& sink) {
                                       if (offset == 0) {
                                         constexpr std::string_view kFirst = R"(["slow")";
                                         return sink.write(kFirst.data(), kFirst.size());
                                       }
                                       // One element a second until the client goes away or the
                                       // server stops.
                                       if (!stop->sleep_for(1s)) return false;
                                       constexpr std::string_view kNext = R"(,"slow")";
                                       return sink.write(kNext.data(), kNext.size());
                                     });
  } else if (fault == "giant") {
    res.status = 200;
    res.set_content_provider(
        kGiantSize, "application/json",
        [stop](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
          if (stop->triggered()) return false;
          static const std::string kPadding(64 * 1024, 'a');
          const std::size_t size = std::min(length, kPadding.size());
          if (offset >= kGiantPrefix.size() && offset + size <= kGiantSize - kGiantSuffix.size()) {
            return sink.write(kPadding.data(), size);
          }
          std::string chunk = kPadding.substr(0, size);
          for (std::size_t i = 0; i < chunk.size(); ++i) {
            const std::size_t at = offset + i;
            if (at < kGiantPrefix.size()) {
              chunk[i] = kGiantPrefix[at];
            } else if (at >= kGiantSize - kGiantSuffix.size()) {
              chunk[i] = kGiantSuffix[at - (kGiantSize - kGiantSuffix.size())];
            }
          }
          return sink.write(chunk.data(), chunk.size());
        });
  } else if (fault == "reset") {
    res.status = 200;
    const int local_port = req.local_port;
    const int remote_port = req.remote_port;
    static const std::string kBody =
        R"({"access_token":"reset-before-the-end","expires_in":"3599","token_type":"Bearer",)"
        R"("resource":"https://vault.azure.net","padding":")" +
        std::string(128, 'r') + R"("})";
    res.set_content_provider(
        kBody.size(), "application/json",
        [local_port, remote_port](std::size_t offset, std::size_t, httplib::DataSink& sink) {
          if (offset == 0) {
            sink.write(kBody.data(), kBody.size() / 3);
            // Give the first part a moment on the wire, so clients see a body cut short
            // rather than only a refused exchange.
            std::this_thread::sleep_for(20ms);
            abort_connection(local_port, remote_port, true);
            return false;
          }
          return false;
        });
  } else if (fault == "close") {
    abort_connection(req, false);
    res.status = 500;
    res.set_content("", "text/plain");
  } else {
    return false;
  }
  return true;
}

}  // namespace azkms::emulator
