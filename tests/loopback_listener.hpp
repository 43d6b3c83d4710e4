// A listening TCP socket on 127.0.0.1, for tests that play an endpoint with raw sockets (one
// that never answers, or answers what no HTTP library would send).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace azkms::testing {

struct LoopbackListener {
  int fd = -1;
  int port = 0;
};

// Binds a free loopback port and listens on it (the kernel completes handshakes even before
// anyone accepts). The descriptor is close-on-exec; the caller closes it.
inline LoopbackListener listen_on_loopback() {
  LoopbackListener listener;
  listener.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener.fd < 0 || ::bind(listener.fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listener.fd, 16) != 0 ||
      ::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (listener.fd >= 0) ::close(listener.fd);
    throw std::runtime_error("cannot listen on loopback");
  }
  listener.port = ntohs(addr.sin_port);
  return listener;
}

}  // namespace azkms::testing
