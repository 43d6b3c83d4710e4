// Hostile clients for the emulated servers: connections that start a request and then send it
// a byte at a time, slowly, never finishing it ("slowloris"). Each byte comes well within the
// server's per-read timeout, so only a limit on the whole request ends them.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace azkms::testing {

class SlowClients {
 public:
  // Opens `count` connections to 127.0.0.1:`port`, sends `opening` on each, then one byte of
  // `trickle` per connection every `interval`.
  SlowClients(int port, int count, const std::string& opening, char trickle = 'a',
              std::chrono::milliseconds interval = std::chrono::milliseconds{300})
      : interval_(interval), trickle_(trickle) {
    for (int i = 0; i < count; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<std::uint16_t>(port));
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
          ::send(fd, opening.data(), opening.size(), MSG_NOSIGNAL) !=
              static_cast<ssize_t>(opening.size())) {
        if (fd >= 0) ::close(fd);
        close_all();
        throw std::runtime_error("slow client: cannot connect to port " + std::to_string(port));
      }
      fds_.push_back(fd);
      open_.push_back(true);
    }
    thread_ = std::thread([this] { run(); });
  }
  ~SlowClients() { close(); }
  SlowClients(const SlowClients&) = delete;
  SlowClients& operator=(const SlowClients&) = delete;

  // Stops sending and closes every connection (idempotent).
  void close() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    close_all();
  }

  // Rounds of bytes sent so far (each round: one byte on every open connection).
  [[nodiscard]] int rounds() const { return rounds_; }
  // Connections the server has not closed yet.
  [[nodiscard]] int still_open() const {
    std::lock_guard lock(mutex_);
    int open = 0;
    for (bool is_open : open_) open += is_open ? 1 : 0;
    return open;
  }
  // Waits until the server closed every connection; false if some are open after `limit`.
  bool wait_all_closed(std::chrono::seconds limit) const {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (still_open() > 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
    return still_open() == 0;
  }
  // Waits for `n` rounds (so that the server has accepted every connection).
  void wait_rounds(int n) const {
    while (rounds_ < n) std::this_thread::sleep_for(std::chrono::milliseconds{10});
  }

 private:
  void run() {
    while (!stop_) {
      {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < fds_.size(); ++i) {
          if (!open_[i]) continue;
          if (closed_by_peer(fds_[i]) || ::send(fds_[i], &trickle_, 1, MSG_NOSIGNAL) != 1) {
            open_[i] = false;
          }
        }
      }
      ++rounds_;
      const auto until = std::chrono::steady_clock::now() + interval_;
      while (!stop_ && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds{10});
      }
    }
  }

  // True once the server has closed or reset the connection (anything it sent is drained).
  static bool closed_by_peer(int fd) {
    for (;;) {
      pollfd ready{fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&ready, 1, 0) <= 0) return false;
      if ((ready.revents & (POLLHUP | POLLERR | POLLRDHUP)) != 0) return true;
      char buffer[4096];
      const ssize_t n = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n <= 0) return true;
    }
  }

  void close_all() {
    std::lock_guard lock(mutex_);
    for (int fd : fds_) ::close(fd);
    fds_.clear();
    open_.clear();
  }

  const std::chrono::milliseconds interval_;
  const char trickle_;
  mutable std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<bool> open_;
  std::atomic<bool> stop_{false};
  std::atomic<int> rounds_{0};
  std::thread thread_;
};

}  // namespace azkms::testing
