#include "connection_guard.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

namespace azkms::emulator {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kScanInterval = 250ms;
constexpr auto kStoppingScanInterval = 20ms;
// Once the server stops, httplib itself ends a connection idle between requests within its
// keep-alive timeout (1 s); one still waiting after this long is stuck in a request.
constexpr auto kStoppingGrace = 2s;

// A worker pool that starts another worker whenever a connection arrives and every worker is
// busy, up to `max_workers`; beyond that, connections wait for a worker in arrival order.
class GrowingPool final : public httplib::TaskQueue {
 public:
  explicit GrowingPool(std::size_t max_workers) : max_workers_(max_workers) {}
  ~GrowingPool() override = default;

  void enqueue(std::function<void()> job) override {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    if (jobs_.size() > idle_ && workers_.size() < max_workers_) {
      workers_.emplace_back([this] { work(); });
    }
    ready_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      shutting_down_ = true;
    }
    ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

 private:
  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ++idle_;
      ready_.wait(lock, [this] { return shutting_down_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;  // shutting down, nothing left to serve
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  const std::size_t max_workers_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> workers_;  // only enqueue() adds, only shutdown() joins
  std::size_t idle_ = 0;
  bool shutting_down_ = false;
};

// A connected TCP socket of this network namespace, as /proc/net/tcp{,6} lists it.
struct TcpSocket {
  std::string peer_address;
  int peer_port = 0;
};

// "0100007F" (IPv4) or 32 hex digits (IPv6), each 32-bit word in host order as the kernel
// prints it, to "127.0.0.1" or "::1".
std::optional<std::string> address_of(std::string_view hex) {
  if (hex.size() != 8 && hex.size() != 32) return std::nullopt;
  std::array<std::uint32_t, 4> words{};
  for (std::size_t i = 0; i * 8 < hex.size(); ++i) {
    const char* first = hex.data() + i * 8;
    if (std::from_chars(first, first + 8, words[i], 16).ptr != first + 8) return std::nullopt;
  }
  char text[INET6_ADDRSTRLEN] = {};
  const int family = hex.size() == 8 ? AF_INET : AF_INET6;
  if (::inet_ntop(family, words.data(), text, sizeof(text)) == nullptr) return std::nullopt;
  return std::string(text);
}

// The connected sockets whose local port is `local_port`, by inode. Read from /proc rather
// than asked of each descriptor: the server's threads open and close descriptors all along,
// and only the thread that owns one should use it.
std::map<unsigned long, TcpSocket> tcp_sockets(int local_port) {
  std::map<unsigned long, TcpSocket> found;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the column names
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
      unsigned long inode = 0;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
          timeout >> inode;
      const auto local_colon = local.find(':');
      const auto remote_colon = remote.find(':');
      if (!fields || inode == 0 || state == "0A" /* listening */ ||
          local_colon == std::string::npos || remote_colon == std::string::npos) {
        continue;
      }
      int port = 0;
      int peer_port = 0;
      std::from_chars(local.data() + local_colon + 1, local.data() + local.size(), port, 16);
      std::from_chars(remote.data() + remote_colon + 1, remote.data() + remote.size(), peer_port,
                      16);
      if (port != local_port || peer_port == 0) continue;
      auto peer = address_of(std::string_view(remote).substr(0, remote_colon));
      if (peer) found[inode] = TcpSocket{std::move(*peer), peer_port};
    }
  }
  return found;
}

// ThreadSanitizer tracks descriptors like memory: the watcher using a descriptor that a server
// thread accepted, without a lock between them, looks like a race to it. That use is the whole
// point (and made safe by the duplicate below), so it is hidden from ThreadSanitizer.
#if defined(__SANITIZE_THREAD__)
#define AZKMS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AZKMS_TSAN 1
#endif
#endif
#ifdef AZKMS_TSAN
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
struct UnseenByThreadSanitizer {
  UnseenByThreadSanitizer() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~UnseenByThreadSanitizer() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
};
#else
struct UnseenByThreadSanitizer {};
#endif

// Shuts down the socket `fd` named when it was seen, if `fd` still is that socket: the check
// and the shutdown go through a duplicate, which no concurrent close can reassign.
void shut_down_if_same(int fd, unsigned long inode) {
  [[maybe_unused]] UnseenByThreadSanitizer unseen;
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return;
  struct stat info {};
  if (::fstat(copy, &info) == 0 && S_ISSOCK(info.st_mode) && info.st_ino == inode) {
    ::shutdown(copy, SHUT_RDWR);
  }
  ::close(copy);
}

}  // namespace

std::vector<ServerSocket> server_sockets(int local_port) {
  const auto tcp = tcp_sockets(local_port);
  std::vector<ServerSocket> found;
  if (tcp.empty()) return found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    // "socket:[<inode>]"
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    constexpr std::string_view kPrefix = "socket:[";
    if (ec || !target.starts_with(kPrefix)) continue;
    ServerSocket socket;
    const std::string name = entry.path().filename().string();
    if (std::from_chars(name.data(), name.data() + name.size(), socket.fd).ec != std::errc{} ||
        std::from_chars(target.data() + kPrefix.size(), target.data() + target.size(), socket.inode)
                .ec != std::errc{}) {
      continue;
    }
    const auto it = tcp.find(socket.inode);
    if (it == tcp.end()) continue;
    socket.peer_address = it->second.peer_address;
    socket.peer_port = it->second.peer_port;
    found.push_back(std::move(socket));
  }
  return found;
}

ConnectionGuard::ConnectionGuard(ServerLimits limits) : limits_(limits) {}

ConnectionGuard::~ConnectionGuard() {
  {
    std::lock_guard lock(mutex_);
    port_ = 0;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

void ConnectionGuard::install(httplib::Server& server, ErrorWriter write_error) {
  server.set_socket_options([](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server.set_payload_max_length(limits_.max_body_bytes);
  const std::size_t max_workers = limits_.max_workers;
  server.new_task_queue = [max_workers] { return new GrowingPool(max_workers); };
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [write = std::move(write_error)](const httplib::Request&, httplib::Response& res) {
        // Answers the handlers wrote keep their bodies; httplib's own (413, 404...) get one.
        if (!res.body.empty() || res.has_header("Content-Type")) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        write(res);
        return httplib::Server::HandlerResponse::Handled;
      }));
  server.set_logger(
      [this](const httplib::Request& req, const httplib::Response&) { answered(req); });
}

void ConnectionGuard::watch(int port) {
  std::lock_guard lock(mutex_);
  port_ = port;
  watcher_ = std::thread([this] { run(); });
}

ConnectionGuard::Connection& ConnectionGuard::entry(const httplib::Request& req) {
  auto [it, added] = connections_.try_emplace(Peer{req.remote_addr, req.remote_port});
  if (added) it->second.since = Clock::now();
  return it->second;
}

void ConnectionGuard::request_arrived(const httplib::Request& req) {
  std::lock_guard lock(mutex_);
  entry(req).answering = true;
}

void ConnectionGuard::answered(const httplib::Request& req) {
  std::lock_guard lock(mutex_);
  Connection& connection = entry(req);
  connection.answering = false;
  connection.since = Clock::now();
}

void ConnectionGuard::release_waiting() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
}

void ConnectionGuard::run() {
  std::unique_lock lock(mutex_);
  while (port_ != 0) {
    wake_.wait_for(lock, stopping_ ? kStoppingScanInterval : kScanInterval);
    if (port_ == 0) break;
    lock.unlock();
    scan();
    lock.lock();
  }
}

void ConnectionGuard::scan() {
  int port = 0;
  {
    std::lock_guard lock(mutex_);
    port = port_;
  }
  const auto sockets = server_sockets(port);
  const auto now = Clock::now();
  std::vector<std::pair<int, unsigned long>> overdue;
  {
    std::lock_guard lock(mutex_);
    std::set<Peer> seen;
    for (const auto& socket : sockets) {
      const Peer peer{socket.peer_address, socket.peer_port};
      seen.insert(peer);
      auto [it, added] = connections_.try_emplace(peer);
      Connection& connection = it->second;
      if (added || (connection.inode != 0 && connection.inode != socket.inode)) {
        connection = Connection{socket.inode, now, false};  // a new connection
      } else if (connection.inode == 0) {
        connection.inode = socket.inode;  // a handler saw it before this scan did
      }
      const auto waited = now - connection.since;
      if (!connection.answering &&
          (waited > limits_.request_deadline || (stopping_ && waited > kStoppingGrace))) {
        overdue.emplace_back(socket.fd, socket.inode);
      }
    }
    // Forget closed connections (and marks for connections never seen, once they are old).
    for (auto it = connections_.begin(); it != connections_.end();) {
      const bool stale = it->second.inode != 0 || now - it->second.since > limits_.request_deadline;
      it = seen.count(it->first) == 0 && stale ? connections_.erase(it) : std::next(it);
    }
  }
  for (const auto& [fd, inode] : overdue) shut_down_if_same(fd, inode);
}

}  // namespace azkms::emulator
