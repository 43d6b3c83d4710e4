// The libcurl HttpClient against local httplib servers (127.0.0.1 and, when available, [::1]).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "http/curl_client.hpp"
#include "http/proxy_bypass.hpp"
#include "loopback_listener.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

using namespace std::chrono_literals;

constexpr const char* kSecret = "s3cr3t-identity-header-value";

// An httplib server on a free loopback port, serving from its own thread. Handlers that must
// hang (slow endpoints) wait on release(), which the destructor calls, so no test waits for a
// sleeping handler.
class TestServer {
 public:
  explicit TestServer(std::unique_ptr<httplib::Server> server = std::make_unique<httplib::Server>(),
                      std::string scheme = "http", std::string host = "127.0.0.1")
      : server_(std::move(server)), scheme_(std::move(scheme)), host_(std::move(host)) {
    server_->new_task_queue = [] { return new httplib::ThreadPool(16); };
    server_->set_keep_alive_timeout(5);
    server_->set_keep_alive_max_count(1000);
    // Without it httplib's separate header and body writes meet delayed ACKs (40 ms each).
    server_->set_tcp_nodelay(true);
  }
  ~TestServer() { stop(); }

  httplib::Server& operator*() { return *server_; }
  httplib::Server* operator->() { return server_.get(); }

  // False when the host cannot be bound (no IPv6 on this machine, say).
  bool start() {
    port_ = server_->bind_to_any_port(host_);
    if (port_ <= 0) return false;
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    while (!server_->is_running()) std::this_thread::sleep_for(1ms);
    return true;
  }

  void stop() {
    release();
    if (thread_.joinable()) {
      server_->stop();
      thread_.join();
    }
  }

  void release() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    cv_.notify_all();
  }

  // Blocks a handler until release() or the bound, whichever comes first.
  void hang(std::chrono::milliseconds bound = 10s) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, bound, [this] { return released_; });
  }

  std::string url(const std::string& path) const {
    const std::string authority = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
    return scheme_ + "://" + authority + ":" + std::to_string(port_) + path;
  }
  int port() const { return port_; }

 private:
  std::unique_ptr<httplib::Server> server_;
  std::string scheme_;
  std::string host_;
  int port_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool released_ = false;
};

HttpRequest get(const std::string& url) {
  HttpRequest request;
  request.url = url;
  return request;
}

HttpOptions with_timeout(std::chrono::milliseconds timeout) {
  HttpOptions options;
  options.timeout = timeout;
  return options;
}

// Runs the call, expects an Error, returns it.
template <typename F>
Error expect_error(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected an azkms::Error";
  return Error(ErrorCode::kConfiguration, "<none thrown>");
}

// A loopback port on which nothing listens: bound (so nothing else takes it) but not listening.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("cannot bind a loopback socket");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A loopback server speaking raw bytes: for answers no HTTP library would send. Each
// connection's request is read up to its blank line, then `answer` is written and the
// connection closed; an empty answer means never answering (the connection stays open until
// the server is destroyed).
class RawServer {
 public:
  explicit RawServer(std::string answer) : answer_(std::move(answer)) {
    const auto listener = testing::listen_on_loopback();
    fd_ = listener.fd;
    port_ = listener.port;
    thread_ = std::thread([this] { serve(); });
  }
  ~RawServer() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(fd_);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;

  std::string url(const std::string& path = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int connections() const { return connections_.load(); }

 private:
  void serve() {
    while (!stopping_) {
      const int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) return;
      ++connections_;
      std::string request;
      char buffer[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        request.append(buffer, static_cast<std::size_t>(n));
      }
      if (answer_.empty()) {
        held_.push_back(client);
        continue;
      }
      std::size_t sent = 0;
      while (sent < answer_.size()) {
        const ssize_t n =
            ::send(client, answer_.data() + sent, answer_.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      ::close(client);
    }
  }

  std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::vector<int> held_;  // touched by the server thread only, until it is joined
  std::thread thread_;
};

// One self-signed certificate pair for the whole binary (RSA key generation is the slow part).
struct TlsFixture {
  std::filesystem::path dir = testing::make_temp_dir("azkms-http-test");
  testing::TlsFiles server = testing::make_self_signed_cert(dir, "server");
  testing::TlsFiles other = testing::make_self_signed_cert(dir, "other");
  ~TlsFixture() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

TlsFixture& tls() {
  static TlsFixture fixture;
  return fixture;
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(HttpClient, GetSendsHeadersAndReturnsStatusHeadersAndBody) {
  TestServer server;
  std::mutex mutex;
  std::optional<httplib::Request> seen;
  server->Get("/token", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mutex);
      seen = req;
    }
    res.set_header("X-Reply", "yes");
    res.set_content(R"({"access_token":"abc"})", "application/json");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  HttpRequest request = get(server.url("/token?api-version=2019-08-01&resource=" +
                                       url_encode("https://vault.azure.net")));
  request.headers = {{"Metadata", "true", false}, {"X-IDENTITY-HEADER", kSecret, true}};
  const HttpResponse response = client->send(request, {});

  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, R"({"access_token":"abc"})");
  EXPECT_EQ(response.header("x-reply"), "yes");
  EXPECT_EQ(response.header("Content-Type"), "application/json");
  std::lock_guard lock(mutex);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->method, "GET");
  EXPECT_EQ(seen->get_header_value("Metadata"), "true");
  EXPECT_EQ(seen->get_header_value("X-IDENTITY-HEADER"), kSecret);
  EXPECT_EQ(seen->get_param_value("api-version"), "2019-08-01");
  EXPECT_EQ(seen->get_param_value("resource"), "https://vault.azure.net");
  EXPECT_TRUE(seen->body.empty());
}

TEST(HttpClient, PostSendsBodyVerbatim) {
  TestServer server;
  std::mutex mutex;
  std::optional<httplib::Request> seen;
  server->Post("/oauth2/token", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mutex);
      seen = req;
    }
    res.status = 201;
    res.set_content("created", "text/plain");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  HttpRequest request;
  request.method = "POST";
  request.url = server.url("/oauth2/token");
  request.headers = {{"Content-Type", "application/x-www-form-urlencoded", false},
                     {"Metadata", "true", false}};
  // Large enough that libcurl would ask for "Expect: 100-continue" if allowed to.
  request.body =
      "resource=" + url_encode("https://vault.azure.net") + "&pad=" + std::string(4096, 'x');
  const HttpResponse response = client->send(request, {});

  EXPECT_EQ(response.status, 201);
  EXPECT_EQ(response.body, "created");
  std::lock_guard lock(mutex);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->method, "POST");
  EXPECT_EQ(seen->body, request.body);
  EXPECT_EQ(seen->get_header_value("Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_FALSE(seen->has_header("Expect"));
}

TEST(HttpClient, ErrorStatusesAreResponsesNotErrors) {
  TestServer server;
  server->Get("/404", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content(R"({"error":"not_found"})", "application/json");
  });
  server->Get("/500", [](const httplib::Request&, httplib::Response& res) {
    res.status = 500;
    res.set_content("<html>oops</html>", "text/html");
  });
  server->Get("/429", [](const httplib::Request&, httplib::Response& res) {
    res.status = 429;
    res.set_header("Retry-After", "3");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  auto r404 = client->send(get(server.url("/404")), {});
  EXPECT_EQ(r404.status, 404);
  EXPECT_EQ(r404.body, R"({"error":"not_found"})");
  auto r500 = client->send(get(server.url("/500")), {});
  EXPECT_EQ(r500.status, 500);
  EXPECT_EQ(r500.body, "<html>oops</html>");
  auto r429 = client->send(get(server.url("/429")), {});
  EXPECT_EQ(r429.status, 429);
  EXPECT_EQ(r429.header("retry-after"), "3");
}

TEST(HttpClient, WorksOverIpv6Loopback) {
  TestServer server(std::make_unique<httplib::Server>(), "http", "::1");
  server->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("six", "text/plain");
  });
  if (!server.start()) GTEST_SKIP() << "no IPv6 loopback on this machine";
  auto client = make_curl_http_client();
  EXPECT_EQ(client->send(get(server.url("/")), {}).body, "six");
}

// ---------------------------------------------------------------------------------------------
// Deadline

TEST(HttpClient, TimeoutOnSlowEndpoint) {
  TestServer server;
  server->Get("/slow", [&](const httplib::Request&, httplib::Response& res) {
    server.hang();
    res.set_content("late", "text/plain");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  const auto started = std::chrono::steady_clock::now();
  const Error e =
      expect_error([&] { client->send(get(server.url("/slow")), with_timeout(300ms)); });
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
  EXPECT_LT(elapsed, 5s) << "the 300 ms budget was not honoured";
  EXPECT_NE(std::string(e.what()).find("/slow"), std::string::npos) << e.what();
}

TEST(HttpClient, TimeoutCoversASlowBodyNotJustTheHeaders) {
  TestServer server;
  server->Get("/trickle", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content_provider(1000, "text/plain",
                             [&](size_t offset, size_t, httplib::DataSink& sink) {
                               if (offset == 0) {
                                 sink.write("first bytes", 11);
                                 return true;
                               }
                               server.hang();
                               return false;
                             });
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  const auto started = std::chrono::steady_clock::now();
  const Error e =
      expect_error([&] { client->send(get(server.url("/trickle")), with_timeout(300ms)); });
  EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

TEST(HttpClient, NoTimeLeftFailsWithoutSending) {
  TestServer server;
  std::atomic<int> hits{0};
  server->Get("/", [&](const httplib::Request&, httplib::Response&) { ++hits; });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  for (auto budget : {0ms, -5ms}) {
    const Error e = expect_error([&] { client->send(get(server.url("/")), with_timeout(budget)); });
    EXPECT_EQ(e.code(), ErrorCode::kTimeout) << e.what();
  }
  EXPECT_EQ(hits.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// Size cap

TEST(HttpClient, DeclaredLengthOverCapIsRefusedBeforeTheBody) {
  TestServer server;
  // Declares 64 MiB, sends a few bytes, then stalls: only a refusal on the declared length
  // can end this before the 8 s budget.
  server->Get("/giant", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content_provider(64u << 20, "application/json",
                             [&](size_t offset, size_t, httplib::DataSink& sink) {
                               if (offset == 0) {
                                 sink.write("{\"a\":", 5);
                                 return true;
                               }
                               server.hang();
                               return false;
                             });
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  const Error e = expect_error([&] { client->send(get(server.url("/giant")), with_timeout(8s)); });
  EXPECT_EQ(e.code(), ErrorCode::kResponseTooLarge) << e.what();
  const std::string message = e.what();
  EXPECT_NE(message.find(std::to_string(1u << 20)), std::string::npos) << message;
  EXPECT_NE(message.find(std::to_string(64u << 20)), std::string::npos) << message;
  EXPECT_NE(message.find("identity responses are small"), std::string::npos) << message;
}

TEST(HttpClient, ChunkedBodyOverCapIsAbortedWhileStreaming) {
  TestServer server;
  std::atomic<std::size_t> sent{0};
  server->Get("/stream", [&](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("application/json", [&](size_t, httplib::DataSink& sink) {
      static const std::string chunk(16 * 1024, 'x');
      if (sent.load() >= (256u << 20)) {  // a bound, so a broken client cannot hang the test
        sink.done();
        return true;
      }
      sent += chunk.size();
      return sink.write(chunk.data(), chunk.size());
    });
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  HttpOptions options = with_timeout(8s);
  options.max_response_bytes = 64 * 1024;
  const Error e = expect_error([&] { client->send(get(server.url("/stream")), options); });
  EXPECT_EQ(e.code(), ErrorCode::kResponseTooLarge) << e.what();
  EXPECT_NE(std::string(e.what()).find("65536"), std::string::npos) << e.what();
  EXPECT_LT(sent.load(), 256u << 20) << "the client read far past its cap";
}

TEST(HttpClient, BodyExactlyAtCapIsAcceptedOneMoreIsNot) {
  TestServer server;
  server->Get("/exact", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(1000, 'a'), "text/plain");
  });
  server->Get("/one-more-chunked", [](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("text/plain", [](size_t offset, httplib::DataSink& sink) {
      if (offset >= 1001) {
        sink.done();
        return true;
      }
      const std::string part(offset == 0 ? 1000 : 1, 'b');
      return sink.write(part.data(), part.size());
    });
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  HttpOptions options;
  options.max_response_bytes = 1000;
  EXPECT_EQ(client->send(get(server.url("/exact")), options).body.size(), 1000u);
  const Error e =
      expect_error([&] { client->send(get(server.url("/one-more-chunked")), options); });
  EXPECT_EQ(e.code(), ErrorCode::kResponseTooLarge) << e.what();
}

// ---------------------------------------------------------------------------------------------
// Redirects

TEST(HttpClient, RedirectIsRefusedAndNeverFollowed) {
  TestServer server;
  std::atomic<int> target_hits{0};
  server->Get("/target", [&](const httplib::Request&, httplib::Response& res) {
    ++target_hits;
    res.set_content("followed", "text/plain");
  });
  server->Get("/msi/token", [&](const httplib::Request&, httplib::Response& res) {
    res.set_redirect(server.url("/target?leak=1"), 302);
  });
  server->Get("/relative", [&](const httplib::Request&, httplib::Response& res) {
    res.status = 307;
    res.set_header("Location", "/target");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  HttpRequest request = get(server.url("/msi/token?api-version=2019-08-01"));
  request.headers = {{"X-IDENTITY-HEADER", kSecret, true}};
  const Error e = expect_error([&] { client->send(request, {}); });
  EXPECT_EQ(e.code(), ErrorCode::kRedirect) << e.what();
  const std::string message = e.what();
  EXPECT_NE(message.find(server.url("/msi/token")), std::string::npos) << message;
  EXPECT_NE(message.find("302"), std::string::npos) << message;
  EXPECT_NE(message.find("127.0.0.1:" + std::to_string(server.port())), std::string::npos)
      << message;
  EXPECT_EQ(message.find("leak"), std::string::npos) << "the Location query leaked: " << message;

  const Error relative = expect_error([&] { client->send(get(server.url("/relative")), {}); });
  EXPECT_EQ(relative.code(), ErrorCode::kRedirect) << relative.what();
  EXPECT_EQ(target_hits.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// Transport failures

TEST(HttpClient, ConnectionRefusedIsAConnectionError) {
  ClosedPort closed;
  auto client = make_curl_http_client();
  const std::string url = "http://127.0.0.1:" + std::to_string(closed.port()) + "/msi/token";
  const Error e = expect_error([&] { client->send(get(url + "?api-version=1"), {}); });
  EXPECT_EQ(e.code(), ErrorCode::kConnection) << e.what();
  EXPECT_NE(std::string(e.what()).find(url), std::string::npos) << e.what();
}

TEST(HttpClient, ConnectionClosedMidBodyIsAConnectionError) {
  TestServer server;
  server->Get("/cut", [](const httplib::Request&, httplib::Response& res) {
    res.set_content_provider(10'000, "application/json",
                             [](size_t offset, size_t, httplib::DataSink& sink) {
                               if (offset == 0) {
                                 sink.write("{\"access_token\":\"", 17);
                                 return true;
                               }
                               return false;  // httplib drops the connection
                             });
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  const Error e = expect_error([&] { client->send(get(server.url("/cut")), with_timeout(8s)); });
  EXPECT_EQ(e.code(), ErrorCode::kConnection) << e.what();
  // The client is still usable afterwards.
  server->Get("/ok", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  EXPECT_EQ(client->send(get(server.url("/ok")), {}).body, "ok");
}

TEST(HttpClient, RequestsThatCannotBeSentAreConfigurationErrors) {
  auto client = make_curl_http_client();
  for (const char* url : {"", "not a url", "ftp://127.0.0.1/x", "file:///etc/passwd"}) {
    const Error e = expect_error([&] { client->send(get(url), {}); });
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << url << ": " << e.what();
  }
  HttpRequest injected = get("http://127.0.0.1:9/");
  injected.headers = {{"X-IDENTITY-HEADER", std::string(kSecret) + "\r\nX-Evil: 1", true}};
  const Error e = expect_error([&] { client->send(injected, {}); });
  EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << e.what();
  EXPECT_EQ(std::string(e.what()).find(kSecret), std::string::npos) << e.what();
}

// ---------------------------------------------------------------------------------------------
// Answers that are not HTTP, or not of a sane size

TEST(HttpClient, AnAnswerWithoutAStatusLineIsAMalformedResponse) {
  // libcurl calls this HTTP/0.9 and refuses it. Nothing in the request was wrong: whatever
  // listens there does not speak HTTP.
  RawServer server("SSH-2.0-OpenSSH_9.2\r\nnot an HTTP server\r\n");
  auto client = make_curl_http_client();
  const Error e = expect_error([&] { client->send(get(server.url("/token")), with_timeout(5s)); });
  EXPECT_EQ(e.code(), ErrorCode::kMalformedResponse) << e.what();
  EXPECT_NE(std::string(e.what()).find("not HTTP"), std::string::npos) << e.what();
}

TEST(HttpClient, AHeaderOverLibcurlsLimitIsAResponseTooLarge) {
  // One 200 KiB header line: libcurl 7.x gives up with "out of memory".
  RawServer server("HTTP/1.1 200 OK\r\nX-Filler: " + std::string(200 * 1024, 'a') +
                   "\r\nContent-Length: 2\r\n\r\n{}");
  auto client = make_curl_http_client();
  const Error e = expect_error([&] { client->send(get(server.url()), with_timeout(5s)); });
  EXPECT_EQ(e.code(), ErrorCode::kResponseTooLarge) << e.what();
  EXPECT_NE(std::string(e.what()).find("headers"), std::string::npos) << e.what();
}

TEST(HttpClient, ManyHeadersOverTheTotalLimitAreAResponseTooLarge) {
  // Each line is small; together they are far more than any identity endpoint sends.
  std::string answer = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 4000; ++i)
    answer += "X-Filler-" + std::to_string(i) + ": " + std::string(40, 'b') + "\r\n";
  answer += "Content-Length: 2\r\n\r\n{}";
  RawServer server(answer);
  auto client = make_curl_http_client();
  const Error e = expect_error([&] { client->send(get(server.url()), with_timeout(5s)); });
  EXPECT_EQ(e.code(), ErrorCode::kResponseTooLarge) << e.what();
}

// ---------------------------------------------------------------------------------------------
// Cancellation

TEST(HttpClient, ACancelledExchangeEndsWithoutWaitingForTheAnswer) {
  RawServer silent("");  // accepts, never answers
  auto client = make_curl_http_client();
  auto cancellation = std::make_shared<Cancellation>();
  HttpOptions options = with_timeout(60s);
  options.cancellation = cancellation;
  auto outcome = std::async(std::launch::async, [&] {
    return expect_error([&] { client->send(get(silent.url()), options); });
  });
  while (silent.connections() == 0) std::this_thread::sleep_for(1ms);
  cancellation->cancel();
  // Bounded wait: without cancellation the exchange would last its 60 s budget.
  ASSERT_EQ(outcome.wait_for(20s), std::future_status::ready);
  const Error e = outcome.get();
  EXPECT_EQ(e.code(), ErrorCode::kCancelled) << e.what();
  // Nothing starts once cancelled.
  const Error again = expect_error([&] { client->send(get(silent.url()), options); });
  EXPECT_EQ(again.code(), ErrorCode::kCancelled) << again.what();
  EXPECT_EQ(silent.connections(), 1);
}

TEST(HttpClient, AScopedCancellationReachesExchangesOnItsThreadOnly) {
  RawServer silent("");
  auto client = make_curl_http_client();
  auto cancellation = std::make_shared<Cancellation>();
  auto outcome = std::async(std::launch::async, [&] {
    const ScopedCancellation scope(cancellation);
    return expect_error([&] { client->send(get(silent.url()), with_timeout(60s)); });
  });
  while (silent.connections() == 0) std::this_thread::sleep_for(1ms);
  cancellation->cancel();
  ASSERT_EQ(outcome.wait_for(20s), std::future_status::ready);
  EXPECT_EQ(outcome.get().code(), ErrorCode::kCancelled);
  EXPECT_FALSE(ScopedCancellation::requested());  // this thread has no scope
  // Another thread's exchange does not see it.
  RawServer ok("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_EQ(client->send(get(ok.url()), with_timeout(5s)).body, "ok");
}

// ---------------------------------------------------------------------------------------------
// Connection reuse and concurrency

TEST(HttpClient, ReusesTheConnectionAcrossRequests) {
  TestServer server;
  std::mutex mutex;
  std::vector<int> remote_ports;
  server->Get("/", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mutex);
      remote_ports.push_back(req.remote_port);
    }
    res.set_content("ok", "text/plain");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  for (int i = 0; i < 3; ++i) EXPECT_EQ(client->send(get(server.url("/")), {}).status, 200);
  EXPECT_EQ(client->stats().requests, 3u);
  EXPECT_EQ(client->stats().connections_opened, 1u);
  std::lock_guard lock(mutex);
  ASSERT_EQ(remote_ports.size(), 3u);
  EXPECT_EQ(remote_ports[0], remote_ports[1]);
  EXPECT_EQ(remote_ports[1], remote_ports[2]);
}

TEST(HttpClient, ConcurrentRequestsAllSucceed) {
  TestServer server;
  std::atomic<int> hits{0};
  server->Get("/echo", [&](const httplib::Request& req, httplib::Response& res) {
    ++hits;
    res.set_content(req.get_param_value("n"), "text/plain");
  });
  ASSERT_TRUE(server.start());
  auto client = make_curl_http_client();

  constexpr int kThreads = 8;
  constexpr int kPerThread = 20;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string n = std::to_string(t * 1000 + i);
        try {
          const auto response = client->send(get(server.url("/echo?n=" + n)), {});
          if (response.status == 200 && response.body == n) ++ok;
        } catch (const Error&) {
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  EXPECT_EQ(hits.load(), kThreads * kPerThread);
  const auto stats = client->stats();
  EXPECT_EQ(stats.requests, static_cast<std::uint64_t>(kThreads * kPerThread));
  // At most one handle per concurrent caller, each keeping its connection.
  EXPECT_LE(stats.connections_opened, static_cast<std::uint64_t>(kThreads));
}

TEST(HttpClient, DefaultClientIsOneInstance) {
  EXPECT_EQ(default_http_client().get(), default_http_client().get());
  EXPECT_NE(make_curl_http_client().get(), make_curl_http_client().get());
}

// ---------------------------------------------------------------------------------------------
// Proxy

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(HttpClient, LoopbackBypassesTheEnvironmentProxy) {
  // A "proxy" on loopback that answers everything itself and counts what it saw.
  TestServer proxy;
  std::atomic<int> proxied{0};
  proxy->set_pre_routing_handler([&](const httplib::Request&, httplib::Response& res) {
    ++proxied;
    res.set_content("from proxy", "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  });
  ASSERT_TRUE(proxy.start());
  TestServer server;
  server->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("direct", "text/plain");
  });
  ASSERT_TRUE(server.start());

  const std::string proxy_url = "http://127.0.0.1:" + std::to_string(proxy.port());
  ScopedEnv http_proxy("http_proxy", proxy_url.c_str());
  ScopedEnv no_proxy("no_proxy", nullptr);
  ScopedEnv no_proxy_upper("NO_PROXY", nullptr);
  auto client = make_curl_http_client();

  EXPECT_EQ(client->send(get(server.url("/")), {}).body, "direct");
  std::string localhost_url = server.url("/");
  localhost_url.replace(localhost_url.find("127.0.0.1"), 9, "localhost");
  EXPECT_EQ(client->send(get(localhost_url), {}).body, "direct");
  EXPECT_EQ(proxied.load(), 0);

  // The proxy setting is live for other hosts (a reserved name that never resolves; the
  // request only ever reaches the loopback proxy).
  EXPECT_EQ(client->send(get("http://identity.example.invalid/"), {}).body, "from proxy");
  EXPECT_EQ(proxied.load(), 1);
}

TEST(ProxyBypass, LoopbackAndLinkLocalHosts) {
  for (const char* host : {"127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "api.localhost",
                           "[::1]", "::1", "169.254.169.254", "169.254.0.1", "[fe80::1]",
                           "[fe80::1%25eth0]", "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]"}) {
    EXPECT_TRUE(http_detail::bypasses_proxy(host)) << host;
  }
  for (const char* host :
       {"vault.azure.net", "login.microsoftonline.com", "10.0.0.1", "169.255.0.1", "128.0.0.1",
        "[2001:db8::1]", "localhost.evil.com", "notlocalhost", "[fec0::1]", ""}) {
    EXPECT_FALSE(http_detail::bypasses_proxy(host)) << host;
  }
}

// ---------------------------------------------------------------------------------------------
// TLS

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ssl = std::make_unique<httplib::SSLServer>(tls().server.cert_pem.c_str(),
                                                    tls().server.key_pem.c_str());
    ASSERT_TRUE(ssl->is_valid());
    server_ = std::make_unique<TestServer>(std::move(ssl), "https");
    (**server_).Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("secure", "text/plain");
    });
    ASSERT_TRUE(server_->start());
  }
  void TearDown() override { server_.reset(); }

  std::unique_ptr<TestServer> server_;
};

TEST_F(TlsServerTest, UntrustedCertificateIsRefused) {
  auto client = make_curl_http_client();
  const Error e = expect_error([&] { client->send(get(server_->url("/")), {}); });
  EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
  EXPECT_NE(std::string(e.what()).find(server_->url("/")), std::string::npos) << e.what();
}

TEST_F(TlsServerTest, CaFileAddsATrustAnchor) {
  auto client = make_curl_http_client();
  HttpOptions options;
  options.ca_file = tls().server.cert_pem.string();
  EXPECT_EQ(client->send(get(server_->url("/")), options).body, "secure");
  // The anchor belongs to that request only.
  const Error e = expect_error([&] { client->send(get(server_->url("/")), {}); });
  EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
}

TEST_F(TlsServerTest, CaFileOfAnotherCertificateIsRefused) {
  auto client = make_curl_http_client();
  HttpOptions options;
  options.ca_file = tls().other.cert_pem.string();
  const Error e = expect_error([&] { client->send(get(server_->url("/")), options); });
  EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
}

// The CA file comes from configuration (HttpOptions::ca_file, SSL_CERT_FILE) that another party
// may control. A FIFO there would block the exchange in open() until a writer appears, past
// every deadline; a directory or an endless device must not be read either.
TEST_F(TlsServerTest, CaFileThatIsNotARegularFileIsRefusedWithoutBlocking) {
  const auto dir = azkms::testing::make_temp_dir("ca-file");
  const auto fifo = dir / "ca.pem";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {fifo.string(), dir.string(), std::string("/dev/zero")}) {
    auto client = make_curl_http_client();
    HttpOptions options;
    options.timeout = 2s;
    options.ca_file = path;
    auto sent = std::async(std::launch::async, [&] {
      try {
        client->send(get(server_->url("/")), options);
        return std::optional<Error>{};
      } catch (const Error& e) {
        return std::optional<Error>{e};
      }
    });
    if (sent.wait_for(30s) != std::future_status::ready) {
      // The exchange is stuck in a read that nothing can end (an endless device), or in an
      // open() that only a writer could end: report it and end the process instead of hanging.
      std::fprintf(stderr, "FAILED: the exchange blocked on the CA file %s\n", path.c_str());
      std::fflush(stderr);
      std::_Exit(1);
    }
    const auto error = sent.get();
    ASSERT_TRUE(error.has_value()) << path;
    EXPECT_EQ(error->code(), ErrorCode::kConfiguration) << error->what();
    EXPECT_NE(std::string(error->what()).find(path), std::string::npos) << error->what();
  }
  std::filesystem::remove_all(dir);
}

TEST_F(TlsServerTest, MissingCaFileIsAConfigurationErrorNamingIt) {
  auto client = make_curl_http_client();
  HttpOptions options;
  options.ca_file = "/nonexistent/azkms-ca.pem";
  const Error e = expect_error([&] { client->send(get(server_->url("/")), options); });
  EXPECT_EQ(e.code(), ErrorCode::kConfiguration) << e.what();
  EXPECT_NE(std::string(e.what()).find("/nonexistent/azkms-ca.pem"), std::string::npos) << e.what();
}

TEST_F(TlsServerTest, CaFileStillChecksTheHostName) {
  // The certificate names 127.0.0.1, ::1 and localhost, not 127.0.0.2 (also loopback on
  // Linux, and still the same server: only the name differs).
  TestServer other_loopback(std::make_unique<httplib::SSLServer>(tls().server.cert_pem.c_str(),
                                                                 tls().server.key_pem.c_str()),
                            "https", "127.0.0.2");
  other_loopback->Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("secure", "text/plain");
  });
  if (!other_loopback.start()) GTEST_SKIP() << "127.0.0.2 cannot be bound here";
  auto client = make_curl_http_client();
  HttpOptions options;
  options.ca_file = tls().server.cert_pem.string();
  const Error e = expect_error([&] { client->send(get(other_loopback.url("/")), options); });
  EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
}

TEST_F(TlsServerTest, MatchingPinIsAccepted) {
  auto client = make_curl_http_client();
  HttpOptions options;
  options.pinned_sha1_thumbprint = tls().server.sha1_thumbprint;
  EXPECT_EQ(client->send(get(server_->url("/")), options).body, "secure");

  // Lower case with colons, as some tools print it.
  std::string spaced;
  for (std::size_t i = 0; i < tls().server.sha1_thumbprint.size(); i += 2) {
    if (!spaced.empty()) spaced += ':';
    spaced += static_cast<char>(std::tolower(tls().server.sha1_thumbprint[i]));
    spaced += static_cast<char>(std::tolower(tls().server.sha1_thumbprint[i + 1]));
  }
  options.pinned_sha1_thumbprint = spaced;
  EXPECT_EQ(client->send(get(server_->url("/")), options).body, "secure");
}

TEST_F(TlsServerTest, WrongPinIsRefusedEvenRightAfterAGoodOne) {
  auto client = make_curl_http_client();
  HttpOptions good;
  good.pinned_sha1_thumbprint = tls().server.sha1_thumbprint;
  EXPECT_EQ(client->send(get(server_->url("/")), good).body, "secure");

  // Same host and port: neither a kept connection nor a resumed TLS session may carry the
  // earlier verdict over.
  HttpOptions wrong;
  wrong.pinned_sha1_thumbprint = tls().other.sha1_thumbprint;
  const Error e = expect_error([&] { client->send(get(server_->url("/")), wrong); });
  EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
  const std::string message = e.what();
  EXPECT_NE(message.find("certificate thumbprint " + tls().server.sha1_thumbprint +
                         " does not match IDENTITY_SERVER_THUMBPRINT"),
            std::string::npos)
      << message;
  EXPECT_EQ(client->send(get(server_->url("/")), good).body, "secure");
}

TEST_F(TlsServerTest, PinWithATrustedCaFileStillMustMatch) {
  auto client = make_curl_http_client();
  HttpOptions options;
  options.ca_file = tls().server.cert_pem.string();
  options.pinned_sha1_thumbprint = tls().other.sha1_thumbprint;
  const Error e = expect_error([&] { client->send(get(server_->url("/")), options); });
  EXPECT_EQ(e.code(), ErrorCode::kTls) << e.what();
}

TEST(HttpClientPin, MalformedPinOrPlainHttpIsAConfigurationError) {
  auto client = make_curl_http_client();
  HttpOptions malformed;
  malformed.pinned_sha1_thumbprint = "not-a-thumbprint";
  EXPECT_EQ(expect_error([&] { client->send(get("https://127.0.0.1:9/"), malformed); }).code(),
            ErrorCode::kConfiguration);
  HttpOptions pinned;
  pinned.pinned_sha1_thumbprint = std::string(40, 'A');
  EXPECT_EQ(expect_error([&] { client->send(get("http://127.0.0.1:9/"), pinned); }).code(),
            ErrorCode::kConfiguration);
}

// ---------------------------------------------------------------------------------------------
// Secrets

TEST(HttpClient, ErrorsNeverContainSensitiveHeaderValues) {
  TestServer server;
  server->Get("/slow", [&](const httplib::Request&, httplib::Response&) { server.hang(); });
  server->Get("/redirect", [&](const httplib::Request&, httplib::Response& res) {
    res.set_redirect(server.url("/elsewhere"));
  });
  server->Get("/giant", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(2000, 'g'), "text/plain");
  });
  ASSERT_TRUE(server.start());
  auto ssl = std::make_unique<httplib::SSLServer>(tls().server.cert_pem.c_str(),
                                                  tls().server.key_pem.c_str());
  TestServer tls_server(std::move(ssl), "https");
  ASSERT_TRUE(tls_server.start());
  ClosedPort closed;
  auto client = make_curl_http_client();

  std::vector<std::pair<HttpRequest, HttpOptions>> cases;
  auto add = [&](std::string url, HttpOptions options) {
    HttpRequest request = get(std::move(url));
    request.headers = {{"X-IDENTITY-HEADER", kSecret, true},
                       {"secret", kSecret, true},
                       {"Authorization", std::string("Basic ") + kSecret, true}};
    cases.emplace_back(std::move(request), options);
  };
  add(server.url("/slow"), with_timeout(200ms));
  add(server.url("/redirect"), {});
  HttpOptions small;
  small.max_response_bytes = 100;
  add(server.url("/giant"), small);
  add("http://127.0.0.1:" + std::to_string(closed.port()) + "/", {});
  add(tls_server.url("/"), {});
  HttpOptions wrong_pin;
  wrong_pin.pinned_sha1_thumbprint = tls().other.sha1_thumbprint;
  add(tls_server.url("/"), wrong_pin);

  for (const auto& c : cases) {
    const Error e = expect_error([&] { client->send(c.first, c.second); });
    EXPECT_EQ(std::string(e.what()).find(kSecret), std::string::npos)
        << c.first.url << " leaked a secret: " << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

TEST(UrlEncode, PercentEncodesReservedAndNonAsciiBytes) {
  EXPECT_EQ(url_encode("https://vault.azure.net"), "https%3A%2F%2Fvault.azure.net");
  EXPECT_EQ(url_encode(""), "");
  EXPECT_EQ(url_encode("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(url_encode("a b&c=d/e?f#g+h"), "a%20b%26c%3Dd%2Fe%3Ff%23g%2Bh");
  EXPECT_EQ(url_encode("\xc3\xa9"), "%C3%A9");
  EXPECT_EQ(url_encode(std::string_view("a\0b", 3)), "a%00b");
  EXPECT_EQ(url_encode("/subscriptions/0000/resourceGroups/rg/providers/"
                       "Microsoft.ManagedIdentity/userAssignedIdentities/id"),
            "%2Fsubscriptions%2F0000%2FresourceGroups%2Frg%2Fproviders%2F"
            "Microsoft.ManagedIdentity%2FuserAssignedIdentities%2Fid");
}

TEST(Thumbprint, Normalizes) {
  const std::string upper = "0123456789ABCDEF0123456789ABCDEF01234567";
  EXPECT_EQ(normalize_sha1_thumbprint(upper), upper);
  EXPECT_EQ(
      normalize_sha1_thumbprint("01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67"),
      upper);
  EXPECT_EQ(normalize_sha1_thumbprint("0123 4567 89ab cdef 0123 4567 89AB CDEF 0123 4567"), upper);
  EXPECT_EQ(normalize_sha1_thumbprint(""), std::nullopt);
  EXPECT_EQ(normalize_sha1_thumbprint(upper.substr(1)), std::nullopt);
  EXPECT_EQ(normalize_sha1_thumbprint(upper + "0"), std::nullopt);
  EXPECT_EQ(normalize_sha1_thumbprint("G" + upper.substr(1)), std::nullopt);
}

TEST(TestTls, GeneratesDistinctCertificatesWithTheirThumbprints) {
  EXPECT_EQ(tls().server.sha1_thumbprint.size(), 40u);
  EXPECT_NE(tls().server.sha1_thumbprint, tls().other.sha1_thumbprint);
  EXPECT_TRUE(std::filesystem::exists(tls().server.cert_pem));
  EXPECT_TRUE(std::filesystem::exists(tls().server.key_pem));
}

}  // namespace
}  // namespace azkms
