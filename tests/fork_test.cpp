// What a pre-fork server (Apache prefork, PHP-FPM, uwsgi with a C extension) and exit() do to
// azkms, proved with real child processes.
//
//  - Shutdown: a child whose static TokenCache is renewing against an endpoint that never
//    answers, or is waiting to retry a throttled one, calls exit(); it must be gone within a
//    few seconds, not when the renewal's deadline runs out.
//
// ThreadSanitizer does not let the child of a threaded process start threads, so this file is
// kept out of the tsan stage (which builds the *cache* and *concurrency* tests) and skips
// itself there. AddressSanitizer and UBSan run it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "azkms/cache.hpp"
#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "emulator.hpp"
#include "loopback_only.hpp"

namespace azkms {
namespace {

using emulator::Endpoint;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Steady = std::chrono::steady_clock;

// ---- child processes -----------------------------------------------------------------------

struct ChildOutcome {
  bool finished = false;  // exited by itself within the bound
  int exit_code = -1;     // when it exited normally
  std::string output;     // what it wrote to its report pipe
  milliseconds waited{0};
};

// A forked child that reports through a pipe. The child runs `body(report_fd)` and _exits
// (no static destructors, no test framework: the parent owns all of that), with status 0
// unless the body threw.
class Child {
 public:
  explicit Child(const std::function<void(int)>& body) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::close(fds[0]);
      int status = 0;
      try {
        body(fds[1]);
      } catch (...) {
        status = 3;
      }
      ::_exit(status);
    }
    ::close(fds[1]);
    out_ = fds[0];
    ::fcntl(out_, F_SETFL, O_NONBLOCK);
  }
  ~Child() {
    if (pid_ > 0) wait_at_most(milliseconds{0});
    if (out_ >= 0) ::close(out_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // Reads the report and waits for the child to exit, for at most `bound`; a child still
  // running then is killed (SIGKILL, by its pid) and reported as not finished.
  ChildOutcome wait_at_most(milliseconds bound) {
    ChildOutcome outcome;
    const auto start = Steady::now();
    const auto until = start + bound;
    for (;;) {
      drain();
      int status = 0;
      const pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        drain();
        outcome.finished = true;
        outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        break;
      }
      if (Steady::now() >= until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        drain();
        break;
      }
      pollfd p{out_, POLLIN, 0};
      ::poll(&p, 1, 5);
    }
    outcome.waited = std::chrono::duration_cast<milliseconds>(Steady::now() - start);
    outcome.output = std::move(output_);
    pid_ = -1;
    return outcome;
  }

  // Waits (at most `bound`) until the report contains `line`.
  bool wait_for_line(const std::string& line, milliseconds bound) {
    const auto until = Steady::now() + bound;
    while (Steady::now() < until) {
      drain();
      if (output_.find(line + "\n") != std::string::npos) return true;
      pollfd p{out_, POLLIN, 0};
      ::poll(&p, 1, 5);
    }
    return false;
  }

 private:
  void drain() {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(out_, buffer, sizeof buffer);
      if (n <= 0) return;
      output_.append(buffer, static_cast<std::size_t>(n));
    }
  }

  pid_t pid_ = -1;
  int out_ = -1;
  std::string output_;
};

// Writes one line to the parent (the child's only way to say anything).
void report(int fd, const std::string& line) {
  const std::string text = line + "\n";
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n <= 0) return;
    written += static_cast<std::size_t>(n);
  }
}

Deadline in(milliseconds budget) { return Clock::system()->steady_now() + budget; }

// ---- fixtures ----------------------------------------------------------------------------

#if defined(__SANITIZE_THREAD__)
#define AZKMS_UNDER_TSAN 1
#elif defined(__SANITIZE_ADDRESS__)
#define AZKMS_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define AZKMS_UNDER_TSAN 1
#elif __has_feature(address_sanitizer)
#define AZKMS_UNDER_ASAN 1
#endif
#endif

// Every test here forks. ThreadSanitizer kills a child of a threaded process that starts a
// thread, and the children here do (the cache's refresher).
class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef AZKMS_UNDER_TSAN
    GTEST_SKIP() << "ThreadSanitizer does not let a child of a threaded process start threads";
#endif
  }
};

// ---- shutdown ------------------------------------------------------------------------------

// A loopback port that accepts connections (the kernel completes the handshake). Without
// answer() nothing ever answers: a hung identity endpoint.
class LoopbackPort {
 public:
  LoopbackPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot listen on loopback");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~LoopbackPort() { ::close(fd_); }
  LoopbackPort(const LoopbackPort&) = delete;
  LoopbackPort& operator=(const LoopbackPort&) = delete;
  std::string authority() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // Answers every request with `response` from a thread of its own (left running: the
  // process it runs in exits).
  void answer(std::string response) {
    std::thread([fd = fd_, response = std::move(response)] {
      for (;;) {
        const int client = ::accept(fd, nullptr, nullptr);
        if (client < 0) return;
        char buffer[4096];
        std::string request;
        while (request.find("\r\n\r\n") == std::string::npos) {
          const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
          if (n <= 0) break;
          request.append(buffer, static_cast<std::size_t>(n));
        }
        (void)::send(client, response.data(), response.size(), MSG_NOSIGNAL);
        ::close(client);
      }
    }).detach();
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// The first token comes from memory; every later fetch (the renewal) goes to IMDS at
// `authority` through the process-wide client, with IMDS's own retry policy. Against a hung
// endpoint such a fetch lasts until the cache's refresh deadline (60 s), attempt after
// timed-out attempt.
class FirstTokenThenImds final : public TokenSource {
 public:
  explicit FirstTokenThenImds(const std::string& authority) {
    SourceContext context;
    context.http = std::make_shared<testing::LoopbackOnlyHttpClient>(default_http_client());
    imds_ = testing::require_loopback(
        make_source(MapEnvironment({{"AZURE_POD_IDENTITY_AUTHORITY_HOST", authority}}),
                    SourceKind::kImds, context));
  }
  [[nodiscard]] SourceKind kind() const override { return SourceKind::kImds; }
  AccessToken fetch(const TokenRequest& request, Deadline deadline) override {
    if (!served_.exchange(true)) {
      AccessToken token;
      token.token = Secret("first-token");
      token.resource = request.resource;
      token.expires_on = std::chrono::system_clock::now() + std::chrono::hours{1};
      token.refresh_on = std::chrono::system_clock::now();  // renew as soon as allowed
      return token;
    }
    return imds_->fetch(request, deadline);
  }

 private:
  std::shared_ptr<TokenSource> imds_;
  std::atomic<bool> served_{false};
};

// A child whose function-local static TokenCache is renewing against `endpoint` calls exit().
// Returns how long the child took to exit after saying it would, or nullopt when it was still
// running after 5 s and had to be killed.
std::optional<milliseconds> exit_while_renewing(LoopbackPort& endpoint,
                                                const std::string& answer = {}) {
  Child child([&](int out) {
    if (!answer.empty()) endpoint.answer(answer);
    static int report_fd = -1;
    report_fd = out;
    // Registered before the cache exists, so it runs right after exit() has destroyed it:
    // what follows (the sanitizers' exit-time checks, say) is not the cache's business.
    std::atexit([] {
      report(report_fd, "destroyed");
      ::_exit(0);
    });
    CacheOptions options;
    options.min_refresh_interval = milliseconds{50};
    static TokenCache cache(options);  // destroyed by exit(), like any static cache
    TokenHandle handle = cache.handle(std::make_shared<FirstTokenThenImds>(endpoint.authority()));
    (void)handle.get(in(seconds{5}));
    const auto until = Steady::now() + seconds{10};
    while (handle.stats().upstream_requests < 2 && Steady::now() < until) {
      std::this_thread::sleep_for(milliseconds{10});
    }
    // The renewal has started; give its request time to reach the endpoint.
    std::this_thread::sleep_for(milliseconds{300});
    report(out, handle.stats().upstream_requests >= 2 ? "exiting" : "no-renewal");
    std::exit(0);
  });
  if (!child.wait_for_line("exiting", seconds{20})) {
    ADD_FAILURE() << "the child's cache never started renewing";
    return std::nullopt;
  }
  const ChildOutcome outcome = child.wait_at_most(seconds{5});
  if (!outcome.finished) return std::nullopt;
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_NE(outcome.output.find("destroyed\n"), std::string::npos);
  return outcome.waited;
}

// The parent is quiet while it forks (no emulator), so these run under AddressSanitizer too.
class ShutdownTest : public ProcessTest {};

TEST_F(ShutdownTest, ExitWhileRenewingAgainstAHungEndpointIsPrompt) {
  LoopbackPort hung;
  const auto took = exit_while_renewing(hung);
  ASSERT_TRUE(took.has_value()) << "exit() was still waiting for the renewal after 5 s";
}

TEST_F(ShutdownTest, ExitWhileARenewalWaitsToRetryIsPrompt) {
  // IMDS throttling: the renewal's retry loop waits 30 s before its next attempt.
  LoopbackPort throttling;
  const auto took = exit_while_renewing(
      throttling,
      "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Type: application/json\r\n"
      "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
  ASSERT_TRUE(took.has_value()) << "exit() was still waiting for the renewal after 5 s";
}

}  // namespace
}  // namespace azkms
