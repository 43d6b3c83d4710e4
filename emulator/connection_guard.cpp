#include "connection_guard.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <deque>
#include <filesystem>
#include <set>
#include <vector>

namespace azkms::emulator {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kScanInterval = 250ms;
constexpr auto kStoppingScanInterval = 20ms;

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

bool address_and_port(const sockaddr_storage& address, std::string& text, int& port) {
  char buffer[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    port = ntohs(v4.sin_port);
    if (::inet_ntop(AF_INET, &v4.sin_addr, buffer, sizeof(buffer)) == nullptr) return false;
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    port = ntohs(v6.sin6_port);
    if (::inet_ntop(AF_INET6, &v6.sin6_addr, buffer, sizeof(buffer)) == nullptr) return false;
  } else {
    return false;
  }
  text = buffer;
  return true;
}

// Shuts down the socket `fd` named when it was seen, if `fd` still is that socket: the check
// and the shutdown go through a duplicate, which no concurrent close can reassign.
void shut_down_if_same(int fd, unsigned long inode) {
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
  std::vector<ServerSocket> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const std::string name = entry.path().filename().string();
    ServerSocket socket;
    if (std::from_chars(name.data(), name.data() + name.size(), socket.fd).ec != std::errc{}) {
      continue;
    }
    sockaddr_storage local{};
    socklen_t length = sizeof(local);
    if (::getsockname(socket.fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) continue;
    std::string local_address;
    int port = -1;
    if (!address_and_port(local, local_address, port) || port != local_port) continue;
    sockaddr_storage peer{};
    length = sizeof(peer);
    if (::getpeername(socket.fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) continue;
    if (!address_and_port(peer, socket.peer_address, socket.peer_port)) continue;
    struct stat info {};
    if (::fstat(socket.fd, &info) != 0 || !S_ISSOCK(info.st_mode)) continue;
    socket.inode = info.st_ino;
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
      if (!connection.answering &&
          (stopping_ || now - connection.since > limits_.request_deadline)) {
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
