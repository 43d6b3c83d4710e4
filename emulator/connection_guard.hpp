// ConnectionGuard: keeps one client from taking an emulated server away from everyone else.
// People run the emulator on their machines, where any local process can connect to it.
//
// cpp-httplib 0.11 serves each connection on one worker of a fixed pool (8 threads), reads a
// request with only a per-read timeout, and accepts bodies of any size. So 16 connections
// sending their headers a byte every few seconds held every worker forever, and one large body
// ended in std::bad_alloc. The guard, installed on a server before it listens:
//  - caps request bodies: a larger one is answered 413 (with the server's JSON error body) and
//    never buffered;
//  - serves connections on a pool that grows, up to a cap, whenever every worker is busy, so
//    slow clients delay nobody until the cap;
//  - gives every request a deadline: a connection that has not sent a whole request within it,
//    counted from its accept or from the previous answer, is shut down. Answers themselves
//    (slow fault cases, response delays) are not limited;
//  - on stop, shuts down every connection still in the middle of a request, so that stop()
//    does not wait for a client that never finishes one.
//  - listens alone on its port: httplib's default socket options set SO_REUSEPORT, with which
//    a second server (another emulator) bound the same port and took part of its connections;
//    with SO_REUSEADDR alone, binding a port in use fails, and a stopped server's port in
//    TIME_WAIT can still be bound again.
// httplib does not hand its sockets to anyone: the guard finds them through /proc (the server
// side of a connection is the socket whose local port is the server's), and a handler tells
// it, by the request's peer address and port, when a request has arrived.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace azkms::emulator {

// Ends the error of a server that cannot listen on the port it was given: since install() turns
// SO_REUSEPORT off, that is almost always a port some other program serves.
inline constexpr std::string_view kPortInUseHint =
    ": is another program (another azkms-emulator?) using the port?";

// The server side of every TCP connection to `local_port` in this process: the descriptors
// of sockets that /proc/net/tcp{,6} lists with that local port and a peer (a client in the
// same process has the ports the other way round).
struct ServerSocket {
  int fd = -1;
  unsigned long inode = 0;
  std::string peer_address;  // numeric, as httplib's Request::remote_addr
  int peer_port = 0;
};
std::vector<ServerSocket> server_sockets(int local_port);

struct ServerLimits {
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_workers = 128;
  // From accept (or the previous answer) to the whole request, body included.
  std::chrono::milliseconds request_deadline{10'000};
};

class ConnectionGuard {
 public:
  // Fills the body of an error answer httplib makes itself (413, 400, 404...), whose status is
  // already set, in the server's own shape.
  using ErrorWriter = std::function<void(httplib::Response&)>;

  explicit ConnectionGuard(ServerLimits limits = {});
  ~ConnectionGuard();
  ConnectionGuard(const ConnectionGuard&) = delete;
  ConnectionGuard& operator=(const ConnectionGuard&) = delete;

  // Before the server listens: body cap, growing pool, error bodies, and a logger that marks
  // the end of each answer. Takes over the server's logger.
  void install(httplib::Server& server, ErrorWriter write_error);
  // Once the server is bound to `port`: starts watching its connections.
  void watch(int port);
  // Call at the top of every route handler: the request has fully arrived.
  void request_arrived(const httplib::Request& req);
  // After httplib's Server::stop(), until its thread is joined: from now on a connection that
  // has waited for its request for 2 s (httplib ends idle ones within its 1 s keep-alive
  // timeout) is shut down at once. The destructor stops watching.
  void release_waiting();

  [[nodiscard]] const ServerLimits& limits() const noexcept { return limits_; }

 private:
  using Peer = std::pair<std::string, int>;  // address, port
  struct Connection {
    unsigned long inode = 0;  // of the socket, so that a reused descriptor is not mistaken
    std::chrono::steady_clock::time_point since;
    bool answering = false;
  };

  void run();
  void scan();
  void answered(const httplib::Request& req);
  Connection& entry(const httplib::Request& req);

  const ServerLimits limits_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<Peer, Connection> connections_;
  int port_ = 0;
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace azkms::emulator
