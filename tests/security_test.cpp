// Security properties, each with a test that fails when the property breaks:
//  - Azure Arc key files outside the key directory, not named *.key, over 4096 bytes (or not
//    regular files) are refused without being read: inotify shows the file never opened;
//  - no file azkms reads can block it: a FIFO, a link to one, a directory or an oversized file
//    as the federated token file, the provider configuration or the key vault file is a typed
//    error at once (also through `azkms token`), and an Arc key file swapped for a FIFO after
//    the check never hangs a fetch;
//  - a Service Fabric endpoint presenting a certificate with another thumbprint is refused,
//    also on a connection that a correctly pinned request has just used;
//  - TLS to Key Vault is always verified (untrusted anchors, wrong host names and protocol
//    versions below TLS 1.2 are refused, through the HTTP client and through CryptSession),
//    and no option or code path turns verification off;
//  - no request to an identity endpoint follows a redirect, whatever the status;
//  - secrets sent to identity endpoints are marked sensitive and never described;
//  - response bodies over the cap are cut off while streaming.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "azkms/crypt_session.hpp"
#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"
#include "certificate.hpp"
#include "certificate_authority.hpp"
#include "emulator.hpp"
#include "fault_matrix.hpp"
#include "key_vault.hpp"
#include "loopback_only.hpp"
#include "sources/azure_arc.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using emulator::Endpoint;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

Deadline in_seconds(int n) { return std::chrono::steady_clock::now() + seconds{n}; }

void write_file(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// ---------------------------------------------------------------------------------------------
// Azure Arc key files

// Reports every open or read of the watched files (inotify follows the inode, so a read through
// a symbolic link or another path to the same file is seen too). stat() and lstat() are not
// reported: checking a file is allowed, opening it is not.
class FileWatch {
 public:
  FileWatch() : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    if (fd_ < 0) throw std::runtime_error("inotify_init1 failed");
  }
  ~FileWatch() { ::close(fd_); }
  FileWatch(const FileWatch&) = delete;
  FileWatch& operator=(const FileWatch&) = delete;

  void watch(const fs::path& path) {
    const int wd = ::inotify_add_watch(fd_, path.c_str(), IN_OPEN | IN_ACCESS);
    if (wd < 0) throw std::runtime_error("inotify_add_watch failed for " + path.string());
    names_[wd] = path.string();
  }
  // Files opened or read since the last call.
  std::set<std::string> touched() {
    std::set<std::string> seen;
    alignas(inotify_event) char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(fd_, buffer, sizeof(buffer));
      if (n <= 0) break;
      for (ssize_t i = 0; i < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + i);
        seen.insert(names_[event->wd]);
        i += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
    return seen;
  }

 private:
  int fd_;
  std::map<int, std::string> names_;
};

// The Arc agent as the source sees it: 401 with the test's realm, then a token for whoever
// answers the challenge. Records what the answer carried.
class ArcAgent final : public HttpClient {
 public:
  explicit ArcAgent(std::string realm) : realm_(std::move(realm)) {}
  HttpResponse send(const HttpRequest& request, const HttpOptions&) override {
    HttpResponse response;
    if (auto authorization = request.header("Authorization")) {
      ++answers;
      answered_with = *authorization;
      response.status = 200;
      response.body = R"({"access_token":"arc-token-for-the-test","expires_in":"3599"})";
      return response;
    }
    ++challenges;
    response.status = 401;
    response.headers.push_back({"WWW-Authenticate", "Basic realm=" + realm_});
    return response;
  }
  std::atomic<int> challenges{0};
  std::atomic<int> answers{0};
  std::string answered_with;

 private:
  std::string realm_;
};

class ArcKeyFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::make_temp_dir("azkms-arc-security");
    dir_ = root_ / "tokens";
    fs::create_directories(dir_ / "sub");
    fs::create_directories(dir_ / "dir.key");
    write_file(dir_ / "good.key", "good-key-contents-1f2e3d");
    write_file(dir_ / "max.key", std::string(4096, 'm'));
    write_file(dir_ / "big.key", std::string(4097, 'b'));
    write_file(dir_ / "key.txt", "txt-key-contents-4c5b6a");
    write_file(dir_ / "key.key.txt", "double-extension-contents");
    write_file(dir_ / "sub" / "nested.key", "nested-key-contents-7d8e9f");
    write_file(root_ / "outside.key", "outside-key-contents-0a1b2c");
    fs::create_symlink(root_ / "outside.key", dir_ / "link.key");
    ASSERT_EQ(::mkfifo((dir_ / "pipe.key").c_str(), 0600), 0);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::shared_ptr<HttpTokenSource> source(const std::shared_ptr<ArcAgent>& agent) {
    SourceContext context;
    context.http = agent;
    context.retry_policy = RetryPolicy::no_retries();
    context.attempt_timeout = seconds{5};
    ArcOptions options;
    options.endpoint = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
    options.key_directory = dir_.string();
    return make_azure_arc_source(options, context);
  }

  fs::path root_;
  fs::path dir_;
};

TEST_F(ArcKeyFiles, RefusedWithoutBeingRead) {
  struct Case {
    std::string realm;
    fs::path watched;  // the file that must not be opened
    const char* why;
  };
  const std::vector<Case> cases{
      {(root_ / "outside.key").string(), root_ / "outside.key", "outside the directory"},
      {(dir_ / ".." / "outside.key").string(), root_ / "outside.key", "'..' out of the directory"},
      {"outside.key", root_ / "outside.key", "relative path"},
      {(dir_ / "key.txt").string(), dir_ / "key.txt", "not named *.key"},
      {(dir_ / "key.key.txt").string(), dir_ / "key.key.txt", ".key not at the end"},
      {(dir_ / "big.key").string(), dir_ / "big.key", "4097 bytes"},
      {(dir_ / "link.key").string(), root_ / "outside.key", "symbolic link out of the directory"},
      {(dir_ / "sub" / "nested.key").string(), dir_ / "sub" / "nested.key", "in a subdirectory"},
      {(dir_ / "pipe.key").string(), dir_ / "pipe.key", "a FIFO (opening it would block)"},
      {(dir_ / "dir.key").string(), dir_ / "dir.key", "a directory"},
  };
  for (const auto& test : cases) {
    SCOPED_TRACE(std::string(test.why) + ": " + test.realm);
    FileWatch watch;
    watch.watch(test.watched);
    auto agent = std::make_shared<ArcAgent>(test.realm);
    try {
      source(agent)->fetch({}, in_seconds(10));
      ADD_FAILURE() << "the key file was accepted";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kArcChallenge) << error.what();
      EXPECT_THAT(error.what(), Not(HasSubstr("-contents-")));
    }
    EXPECT_TRUE(watch.touched().empty()) << "the refused file was opened or read";
    EXPECT_EQ(agent->challenges.load(), 1);
    EXPECT_EQ(agent->answers.load(), 0) << "the challenge was answered";
  }
}

// The controls: the watch does see a file being read, and 4096 bytes is still allowed.
TEST_F(ArcKeyFiles, AValidKeyFileIsReadAndSent) {
  for (const auto& [name, contents] : std::vector<std::pair<std::string, std::string>>{
           {"good.key", "good-key-contents-1f2e3d"}, {"max.key", std::string(4096, 'm')}}) {
    SCOPED_TRACE(name);
    FileWatch watch;
    watch.watch(dir_ / name);
    auto agent = std::make_shared<ArcAgent>((dir_ / name).string());
    const AccessToken token = source(agent)->fetch({}, in_seconds(10));
    EXPECT_EQ(token.token.reveal(), "arc-token-for-the-test");
    EXPECT_EQ(agent->answered_with, "Basic " + contents);
    EXPECT_EQ(watch.touched(), std::set<std::string>{(dir_ / name).string()});
  }
}

// The same against the emulator's agent: its faulty key files hold valid keys, so a client
// that read one would get a token. None is issued.
TEST(ArcKeyFilesEndToEnd, TheEmulatorsFaultyKeyFilesEarnNoToken) {
  fault_matrix::Harness harness;
  auto arc = harness.source(Endpoint::kAzureArc);
  for (const char* fault : {"arc-outside-dir", "arc-not-key", "arc-big-key"}) {
    SCOPED_TRACE(fault);
    const auto issued = harness.emu().tokens_issued(Endpoint::kAzureArc);
    harness.emu().inject(Endpoint::kAzureArc, fault);
    try {
      arc->fetch({}, in_seconds(10));
      ADD_FAILURE() << "accepted";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kArcChallenge) << error.what();
      EXPECT_THAT(error.what(), HasSubstr("not read"));
    }
    EXPECT_EQ(harness.emu().tokens_issued(Endpoint::kAzureArc), issued);
  }
}

// ---------------------------------------------------------------------------------------------
// Hostile files: a FIFO, a link, a directory or an oversized file where azkms expects a small
// regular file. Reading one must end at once with a typed error, never block: a FIFO opened
// without O_NONBLOCK waits for a writer forever, whatever the caller's deadline.

constexpr seconds kHangLimit{30};  // generous: every read here should end in milliseconds

// Runs `work` on a thread and waits up to `limit` for it. Returns false when it did not finish
// in time, after calling `unblock` until it did, so that a hang fails the test instead of
// hanging the suite.
bool finishes_within(seconds limit, const std::function<void()>& work,
                     const std::function<void()>& unblock) {
  std::atomic<bool> done{false};
  std::thread worker([&] {
    work();
    done = true;
  });
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  const bool in_time = done;
  while (!done) {
    unblock();
    std::this_thread::sleep_for(10ms);
  }
  worker.join();
  return in_time;
}

// Lets a reader blocked in open() of this FIFO go on (it then reads end of file).
void release_fifo(const fs::path& fifo) {
  const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0) ::close(fd);
}

// An HTTP client that records requests and answers every one with a token.
class TokenEverywhere final : public HttpClient {
 public:
  HttpResponse send(const HttpRequest& request, const HttpOptions&) override {
    std::lock_guard lock(mutex_);
    bodies_.push_back(request.body);
    return HttpResponse{200, {}, R"({"access_token":"tok","expires_in":"3599"})"};
  }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> bodies_;
};

class HostileFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("azkms-hostile-files");
    ASSERT_EQ(::mkfifo((dir_ / "fifo").c_str(), 0600), 0);
    fs::create_symlink(dir_ / "fifo", dir_ / "link-to-fifo");
    fs::create_directories(dir_ / "directory");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A sparse file of `size` bytes: over a reader's cap without writing megabytes.
  fs::path oversized(std::uintmax_t size) {
    const fs::path path = dir_ / "oversized";
    write_file(path, "{}");
    fs::resize_file(path, size);
    return path;
  }

  struct Case {
    fs::path path;
    const char* says;
  };
  std::vector<Case> hostile_cases(std::uintmax_t cap) {
    return {{dir_ / "fifo", "it is a FIFO (named pipe), not a regular file"},
            {dir_ / "link-to-fifo", "it is a FIFO (named pipe), not a regular file"},
            {dir_ / "directory", "it is a directory, not a regular file"},
            {oversized(cap + 1), "bytes, more than the"}};
  }

  // Runs `read` on each hostile path; each must throw `code` saying `says`, in time.
  void expect_refused(std::uintmax_t cap, ErrorCode code,
                      const std::function<void(const fs::path&)>& read) {
    for (const auto& test : hostile_cases(cap)) {
      SCOPED_TRACE(test.path.filename().string());
      std::optional<Error> error;
      const bool in_time = finishes_within(
          kHangLimit,
          [&] {
            try {
              read(test.path);
            } catch (const Error& e) {
              error = e;
            }
          },
          [&] { release_fifo(dir_ / "fifo"); });
      EXPECT_TRUE(in_time) << "reading blocked (the file was opened as a FIFO)";
      ASSERT_TRUE(error.has_value()) << "accepted";
      EXPECT_EQ(error->code(), code) << error->what();
      EXPECT_THAT(error->what(), HasSubstr(test.says));
      EXPECT_THAT(error->what(), HasSubstr(test.path.filename().string()));
    }
  }

  fs::path dir_;
};

TEST_F(HostileFiles, TheFederatedTokenFileMustBeARegularFile) {
  auto http = std::make_shared<TokenEverywhere>();
  expect_refused(64 * 1024, ErrorCode::kConfiguration, [&](const fs::path& path) {
    SourceContext context;
    context.http = http;
    context.retry_policy = RetryPolicy::no_retries();
    auto source = make_source(MapEnvironment({{"AZURE_FEDERATED_TOKEN_FILE", path.string()},
                                              {"AZURE_CLIENT_ID", "app-client-id"},
                                              {"AZURE_TENANT_ID", "tenant-1"},
                                              {"AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/"}}),
                              SourceKind::kWorkloadIdentity, context);
    source->fetch({}, in_seconds(10));
  });
  EXPECT_TRUE(http->bodies().empty()) << "a refused file was sent";
}

// The control: the kubelet projects the token as a link into a "..data" directory link, and a
// link to a regular file is read.
TEST_F(HostileFiles, TheFederatedTokenIsReadThroughTheKubeletsLinks) {
  fs::create_directories(dir_ / "..2024_01_01_00_00_00.1");
  write_file(dir_ / "..2024_01_01_00_00_00.1" / "azure-identity-token", "header.payload.sig\n");
  fs::create_directory_symlink("..2024_01_01_00_00_00.1", dir_ / "..data");
  fs::create_symlink("..data/azure-identity-token", dir_ / "azure-identity-token");
  auto http = std::make_shared<TokenEverywhere>();
  SourceContext context;
  context.http = http;
  auto source = make_source(
      MapEnvironment({{"AZURE_FEDERATED_TOKEN_FILE", (dir_ / "azure-identity-token").string()},
                      {"AZURE_CLIENT_ID", "app-client-id"},
                      {"AZURE_TENANT_ID", "tenant-1"},
                      {"AZURE_AUTHORITY_HOST", "http://127.0.0.1:9/"}}),
      SourceKind::kWorkloadIdentity, context);
  source->fetch({}, in_seconds(10));
  ASSERT_EQ(http->bodies().size(), 1u);
  EXPECT_THAT(http->bodies()[0], HasSubstr("client_assertion=header.payload.sig&"));
}

TEST_F(HostileFiles, TheProviderConfigurationMustBeARegularFile) {
  expect_refused(1024 * 1024, ErrorCode::kConfiguration,
                 [](const fs::path& path) { (void)KmsProviders::from_file(path); });
  // Through a link (a Kubernetes ConfigMap), a regular file is read.
  write_file(dir_ / "kms.json", R"({"providers": {"azure": {"source": "imds"}}})");
  fs::create_symlink(dir_ / "kms.json", dir_ / "link.json");
  EXPECT_EQ(KmsProviders::from_file(dir_ / "link.json").names(), std::vector<std::string>{"azure"});
}

TEST_F(HostileFiles, TheKeyVaultFileMustBeARegularFile) {
  expect_refused(16 * 1024 * 1024, ErrorCode::kKeyVault, [](const fs::path& path) {
    FileKeyVault vault(path);
    (void)vault.find(KeyQuery{}, in_seconds(10));
  });
}

// The command line: `azkms token` with the FIFO as its token file ends with the configuration
// error, within --timeout-ms (the read used to block before any deadline applied).
TEST_F(HostileFiles, TheCommandLineDoesNotHangOnAFifo) {
  const fs::path cli = fs::read_symlink("/proc/self/exe").parent_path() / "azkms";
  if (!fs::exists(cli)) GTEST_FAIL() << "the command-line program is not built at " << cli;
  int err[2];
  ASSERT_EQ(::pipe2(err, O_CLOEXEC), 0);
  const std::vector<std::string> env_strings{
      "PATH=/usr/bin:/bin", "AZURE_FEDERATED_TOKEN_FILE=" + (dir_ / "fifo").string(),
      "AZURE_CLIENT_ID=app-client-id", "AZURE_TENANT_ID=tenant-1",
      // Never reached: the file is refused first. Loopback all the same.
      "AZURE_AUTHORITY_HOST=http://127.0.0.1:9/"};
  const std::vector<std::string> arg_strings{cli.string(),        "token",        "--source",
                                             "workload-identity", "--timeout-ms", "3000"};
  std::vector<char*> env;
  std::vector<char*> argv;
  for (const auto& s : env_strings) env.push_back(const_cast<char*>(s.c_str()));
  for (const auto& s : arg_strings) argv.push_back(const_cast<char*>(s.c_str()));
  env.push_back(nullptr);
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t child = -1;
  const int spawned =
      ::posix_spawn(&child, cli.c_str(), &actions, nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(err[1]);
  ASSERT_EQ(spawned, 0);

  int status = 0;
  const bool in_time = finishes_within(
      kHangLimit,
      [&] {
        while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
      },
      [&] { ::kill(child, SIGKILL); });
  std::string stderr_text;
  char buffer[4096];
  for (ssize_t n; (n = ::read(err[0], buffer, sizeof(buffer))) > 0;) stderr_text.append(buffer, n);
  ::close(err[0]);
  EXPECT_TRUE(in_time) << "azkms token blocked on the FIFO past --timeout-ms";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_THAT(stderr_text, HasSubstr("AZURE_FEDERATED_TOKEN_FILE"));
  EXPECT_THAT(stderr_text, HasSubstr("not a regular file"));
}

// The Arc key file swapped for a FIFO between the source's check and its open (by whoever can
// write in the key directory): the open must not block. A thread swaps the file back and forth
// while the source answers challenges; every fetch ends, with the key or a refusal.
TEST_F(ArcKeyFiles, AKeySwappedForAFifoNeverHangsTheFetch) {
  const fs::path race = dir_ / "race.key";
  const fs::path other = dir_ / "other";
  const std::string key = "race-key-contents-5e6f7a";
  write_file(race, key);
  ASSERT_EQ(::mkfifo(other.c_str(), 0600), 0);

  // One renameat2 exchanges the two names atomically: the key file and the FIFO trade places
  // as fast as the kernel allows, and the FIFO is always under one of the two names.
  std::atomic<bool> stop{false};
  std::atomic<long> swaps{0};
  std::thread swapper([&] {
    while (!stop) {
      if (::renameat2(AT_FDCWD, race.c_str(), AT_FDCWD, other.c_str(), RENAME_EXCHANGE) != 0) {
        ADD_FAILURE() << "renameat2: " << std::strerror(errno);
        return;
      }
      ++swaps;
    }
  });
  const auto release = [&] {
    stop = true;
    release_fifo(race);
    release_fifo(other);
  };

  // At least this many fetches and swaps (the swapper may start late on a loaded machine), and
  // until both outcomes were seen, for at most 20 s: the old check-then-open blocked within a
  // few thousand fetches.
  constexpr int kFetches = 5000;
  constexpr long kSwaps = 200'000;
  int read_key = 0;
  int refused = 0;
  std::vector<std::string> other_errors;
  auto agent = std::make_shared<ArcAgent>(race.string());
  auto arc = source(agent);
  const bool in_time = finishes_within(
      seconds{60},
      [&] {
        const auto until = std::chrono::steady_clock::now() + 20s;
        const auto enough = [&] {
          return read_key + refused + static_cast<int>(other_errors.size()) >= kFetches &&
                 swaps >= kSwaps && read_key > 0 && refused > 0;
        };
        while (!enough() && std::chrono::steady_clock::now() < until) {
          try {
            arc->fetch({}, in_seconds(10));
            ++read_key;
          } catch (const Error& error) {
            if (error.code() == ErrorCode::kArcChallenge &&
                std::string(error.what()).find("not a regular file") != std::string::npos) {
              ++refused;
            } else {
              other_errors.emplace_back(error.what());
            }
          }
        }
      },
      release);
  stop = true;
  swapper.join();

  EXPECT_TRUE(in_time) << "a fetch blocked opening the FIFO swapped in for the key file";
  EXPECT_TRUE(other_errors.empty()) << ::testing::PrintToString(other_errors);
  EXPECT_GT(read_key, 0) << "the swaps never let a fetch read the key";
  EXPECT_GT(refused, 0) << "the swaps never put the FIFO in a fetch's way";
  if (read_key > 0) {
    EXPECT_EQ(agent->answered_with, "Basic " + key);
  }
}

// ---------------------------------------------------------------------------------------------
// Service Fabric certificate pinning

TEST(ServiceFabricPin, AnotherThumbprintIsRefused) {
  fault_matrix::Harness harness;
  auto& emu = harness.emu();
  fault_matrix::Vars vars = harness.environment_of(Endpoint::kServiceFabric);
  const std::string right = vars.at("IDENTITY_SERVER_THUMBPRINT");
  // A real certificate's thumbprint, as a misconfigured or attacker-controlled server would have.
  const std::string other = emulator::make_self_signed_certificate().sha1_thumbprint;
  ASSERT_NE(other, right);

  auto fabric = [&](const std::string& thumbprint) {
    fault_matrix::Vars v = vars;
    v["IDENTITY_SERVER_THUMBPRINT"] = thumbprint;
    return testing::require_loopback(
        detect(MapEnvironment(v), std::nullopt, harness.context(RetryPolicy::identity_endpoint()))
            .source);
  };

  const auto served = emu.requests_served(Endpoint::kServiceFabric);
  const auto issued = emu.tokens_issued(Endpoint::kServiceFabric);
  try {
    fabric(other)->fetch({}, in_seconds(10));
    ADD_FAILURE() << "a certificate with another thumbprint was accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTls) << error.what();
    EXPECT_EQ(error.attempts(), 1) << "a pin mismatch is not worth retrying";
    EXPECT_THAT(error.what(), Not(HasSubstr(fault_matrix::Harness::kIdentityHeader)));
  }
  // Refused during the handshake: the request (and its Secret header) never left.
  EXPECT_EQ(emu.requests_served(Endpoint::kServiceFabric), served);
  EXPECT_EQ(emu.tokens_issued(Endpoint::kServiceFabric), issued);

  // The right thumbprint, in any of the forms people paste it in, is accepted.
  std::string colons;
  for (std::size_t i = 0; i < right.size(); i += 2) {
    colons += (i ? ":" : "") + right.substr(i, 2);
  }
  std::string lower = right;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& form : {right, colons, lower}) {
    EXPECT_FALSE(fabric(form)->fetch({}, in_seconds(10)).token.empty()) << form;
  }
}

// A connection verified for one pin is never reused for a request pinned to another.
TEST(ServiceFabricPin, NoConnectionReuseAcrossPins) {
  fault_matrix::Harness harness;
  auto& emu = harness.emu();
  const auto vars = harness.environment_of(Endpoint::kServiceFabric);
  auto client = make_curl_http_client();
  HttpRequest request;
  request.url = emu.token_url(Endpoint::kServiceFabric) +
                "?api-version=2019-07-01-preview&resource=https%3A%2F%2Fvault.azure.net";
  request.headers.push_back({"Secret", vars.at("IDENTITY_HEADER"), true});
  HttpOptions options;
  options.timeout = seconds{5};
  options.pinned_sha1_thumbprint = vars.at("IDENTITY_SERVER_THUMBPRINT");
  EXPECT_EQ(client->send(request, options).status, 200);
  options.pinned_sha1_thumbprint = emulator::make_self_signed_certificate().sha1_thumbprint;
  const auto issued = emu.tokens_issued(Endpoint::kServiceFabric);
  try {
    client->send(request, options);
    ADD_FAILURE() << "the second pin was not checked";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kTls) << error.what();
  }
  EXPECT_EQ(emu.tokens_issued(Endpoint::kServiceFabric), issued);
}

TEST(ServiceFabricPin, PlainHttpOrAMalformedThumbprintIsAConfigurationError) {
  fault_matrix::Harness harness;
  fault_matrix::Vars vars = harness.environment_of(Endpoint::kServiceFabric);
  const std::string https = vars.at("IDENTITY_ENDPOINT");
  ASSERT_EQ(https.rfind("https://", 0), 0u);
  {
    fault_matrix::Vars v = vars;
    v["IDENTITY_ENDPOINT"] = "http://" + https.substr(8);
    try {
      detect(MapEnvironment(v), std::nullopt, harness.context());
      ADD_FAILURE() << "Service Fabric over plain http was accepted";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kConfiguration) << error.what();
    }
  }
  for (const char* bad : {"not-a-thumbprint", "0123", "ZZ11223344556677889900AABBCCDDEEFF001122"}) {
    fault_matrix::Vars v = vars;
    v["IDENTITY_SERVER_THUMBPRINT"] = bad;
    try {
      detect(MapEnvironment(v), std::nullopt, harness.context());
      ADD_FAILURE() << "thumbprint " << bad << " was accepted";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kConfiguration) << error.what();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// TLS to Key Vault

// An HTTPS server on loopback with the given certificate (PEM files) and an OpenSSL context hook.
class TlsServer {
 public:
  TlsServer(const fs::path& cert, const fs::path& key,
            std::function<void(SSL_CTX*)> tweak = nullptr)
      : server_([cert, key, tweak](SSL_CTX& ctx) {
          SSL_CTX_set_min_proto_version(&ctx, 0);
          if (SSL_CTX_use_certificate_chain_file(&ctx, cert.c_str()) != 1) return false;
          if (SSL_CTX_use_PrivateKey_file(&ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) return false;
          if (tweak) tweak(&ctx);
          return true;
        }) {
    server_.Get("/", [this](const httplib::Request&, httplib::Response& res) {
      ++hits;
      res.set_content("{}", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(milliseconds{1});
  }
  ~TlsServer() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_) + "/"; }
  std::atomic<int> hits{0};

 private:
  httplib::SSLServer server_;
  int port_ = 0;
  std::thread thread_;
};

ErrorCode get_error(const std::string& url, const std::string& ca_file) {
  HttpRequest request;
  request.url = url;
  HttpOptions options;
  options.timeout = seconds{5};
  options.ca_file = ca_file;
  try {
    const auto response = make_curl_http_client()->send(request, options);
    ADD_FAILURE() << url << " answered " << response.status << " over unverified TLS";
  } catch (const Error& error) {
    return error.code();
  }
  return ErrorCode::kConfiguration;
}

class KeyVaultTls : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::make_temp_dir("azkms-kv-tls");
    authority_ = std::make_unique<emulator::CertificateAuthority>("azkms security test CA");
    write_file(dir_ / "ca.pem", authority_->certificate_pem());
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A leaf certificate from the test CA, written as PEM files.
  std::pair<fs::path, fs::path> leaf(const std::string& name, std::vector<std::string> dns,
                                     std::vector<std::string> ips) {
    const auto pem = authority_->issue_server_certificate(name, dns, ips);
    write_file(dir_ / (name + ".crt"), pem.certificate_pem);
    write_file(dir_ / (name + ".key"), pem.private_key_pem);
    return {dir_ / (name + ".crt"), dir_ / (name + ".key")};
  }

  fs::path dir_;
  std::unique_ptr<emulator::CertificateAuthority> authority_;
};

TEST_F(KeyVaultTls, TheEmulatorsCertificateIsTrustedOnlyThroughItsCa) {
  emulator::TokenLedger ledger;
  emulator::KeyVaultServer vault(ledger);
  vault.start();
  const std::string url = vault.url() + "/keys/none/wrapkey?api-version=7.1";
  // No extra anchors: the system store does not know the emulator's CA.
  EXPECT_EQ(get_error(url, ""), ErrorCode::kTls);
  // Another CA as the only extra anchor does not help either.
  EXPECT_EQ(get_error(url, (dir_ / "ca.pem").string()), ErrorCode::kTls);
  EXPECT_EQ(vault.requests_served(), 0u);
  // The emulator's CA: the handshake completes and the vault answers (an error status: the
  // request has no token and is not a POST, which does not matter here).
  HttpRequest request;
  request.url = url;
  HttpOptions options;
  options.ca_file = vault.ca_file();
  EXPECT_GE(make_curl_http_client()->send(request, options).status, 400);
  EXPECT_EQ(vault.requests_served(), 1u);
}

TEST_F(KeyVaultTls, TheHostNameIsVerified) {
  const auto [wrong_cert, wrong_key] = leaf("vault-example", {"vault.example.net"}, {});
  const auto [right_cert, right_key] = leaf("loopback", {"localhost"}, {"127.0.0.1"});
  {
    TlsServer server(wrong_cert, wrong_key);
    EXPECT_EQ(get_error(server.url(), (dir_ / "ca.pem").string()), ErrorCode::kTls);
    EXPECT_EQ(server.hits.load(), 0);
  }
  {
    TlsServer server(right_cert, right_key);
    HttpRequest request;
    request.url = server.url();
    HttpOptions options;
    options.ca_file = (dir_ / "ca.pem").string();
    EXPECT_EQ(make_curl_http_client()->send(request, options).status, 200);
    EXPECT_EQ(server.hits.load(), 1);
  }
}

TEST_F(KeyVaultTls, ProtocolsBelowTls12AreRefused) {
  const auto [cert, key] = leaf("old-tls", {"localhost"}, {"127.0.0.1"});
  TlsServer server(cert, key, [](SSL_CTX* ctx) {
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION);
  });
  EXPECT_EQ(get_error(server.url(), (dir_ / "ca.pem").string()), ErrorCode::kTls);
  EXPECT_EQ(server.hits.load(), 0);
}

TEST_F(KeyVaultTls, CryptSessionRefusesAnUntrustedKeyVault) {
  emulator::TokenLedger ledger;
  emulator::KeyVaultOptions vault_options;
  vault_options.keys = {"mongo-key"};
  emulator::KeyVaultServer vault(ledger, vault_options);
  vault.start();
  auto providers = std::make_shared<KmsProviders>();
  providers->add_callback("azure", [&ledger](const TokenRequest& request, Deadline) {
    AccessToken token;
    token.token = Secret(
        ledger.issue("5a1c0f8e-2b3d-4c6e-8f70-000000000001", request.resource, seconds{3600}));
    token.expires_on = std::chrono::system_clock::now() + seconds{3600};
    return token;
  });
  auto keys = std::make_shared<FileKeyVault>(dir_ / "keys.json");
  for (const std::string& ca_file : {std::string(), (dir_ / "ca.pem").string()}) {
    SCOPED_TRACE("ca_file '" + ca_file + "'");
    CryptSessionOptions options;
    options.providers = providers;
    options.key_vault = keys;
    options.ca_file = ca_file;
    options.kms_attempt_timeout = seconds{5};
    CryptSession session(options);
    try {
      session.create_data_key({"azure", vault.endpoint(), "mongo-key", ""});
      ADD_FAILURE() << "a data key was wrapped over unverified TLS";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kTls) << error.what();
    }
    EXPECT_EQ(vault.requests_served(), 0u);
    EXPECT_TRUE(keys->all().empty());
  }
  // The control: trusting the emulator's CA, the same session works.
  CryptSessionOptions options;
  options.providers = providers;
  options.key_vault = keys;
  options.ca_file = vault.ca_file();
  CryptSession session(options);
  (void)session.create_data_key({"azure", vault.endpoint(), "mongo-key", ""});
  EXPECT_EQ(keys->all().size(), 1u);
}

// There is no switch to turn verification off: no such option, and no code that does it.
template <class T>
concept HasVerificationSwitch = requires(T t) {
  t.insecure;
}
|| requires(T t) { t.verify; }
|| requires(T t) { t.verify_peer; }
|| requires(T t) { t.verify_tls; }
|| requires(T t) { t.tls_verify; }
|| requires(T t) { t.skip_verification; }
|| requires(T t) { t.allow_insecure; };
static_assert(!HasVerificationSwitch<HttpOptions>);
static_assert(!HasVerificationSwitch<CryptSessionOptions>);
static_assert(!HasVerificationSwitch<SourceContext>);

TEST(TlsVerification, NoCodePathTurnsItOff) {
  const fs::path root = fs::path(__FILE__).parent_path().parent_path();
  const std::regex forbidden(
      R"(SSL_VERIFYPEER\s*,\s*0|SSL_VERIFYHOST\s*,\s*0|SSL_VERIFY_NONE|set_verify\s*\(\s*[^,]+,\s*SSL_VERIFY_NONE|CURLSSLOPT_NO_REVOKE|enable_server_certificate_verification\s*\(\s*false)");
  int scanned = 0;
  for (const char* part : {"src", "include", "tools"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / part)) {
      if (!entry.is_regular_file()) continue;
      const auto ext = entry.path().extension();
      if (ext != ".cpp" && ext != ".hpp" && ext != ".h" && ext != ".c") continue;
      std::ifstream in(entry.path());
      std::string line;
      int number = 0;
      while (std::getline(in, line)) {
        ++number;
        EXPECT_FALSE(std::regex_search(line, forbidden))
            << entry.path() << ":" << number << " turns TLS verification off: " << line;
      }
      ++scanned;
    }
  }
  EXPECT_GT(scanned, 20);
}

// ---------------------------------------------------------------------------------------------
// Redirects

TEST(Redirects, NoIdentityEndpointRedirectIsFollowed) {
  fault_matrix::Harness harness;
  auto& emu = harness.emu();
  for (auto endpoint : emulator::kAllEndpoints) {
    SCOPED_TRACE(std::string(emulator::display_name(endpoint)));
    auto source = harness.source(endpoint);
    const auto served = emu.requests_served(endpoint);
    const auto issued = emu.tokens_issued(endpoint);
    emu.inject(endpoint, "redirect");
    try {
      source->fetch({}, in_seconds(10));
      ADD_FAILURE() << "the redirect was followed";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kRedirect) << error.what();
      EXPECT_EQ(error.attempts(), 1);
    }
    // The target (which serves a token) was never asked: only the request that got the 302
    // (and Arc's challenge) reached the emulator.
    EXPECT_EQ(emu.requests_served(endpoint) - served, endpoint == Endpoint::kAzureArc ? 2u : 1u);
    EXPECT_EQ(emu.tokens_issued(endpoint), issued);
  }
}

TEST(Redirects, NoRedirectStatusIsFollowedByTheHttpClient) {
  httplib::Server server;
  std::atomic<int> target_hits{0};
  int status = 0;
  server.Get("/token", [&](const httplib::Request&, httplib::Response& res) {
    res.status = status;
    res.set_header("Location", "/target");
  });
  server.Get("/target", [&](const httplib::Request&, httplib::Response& res) {
    ++target_hits;
    res.set_content(R"({"access_token":"followed","expires_in":3599})", "application/json");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread thread([&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::sleep_for(milliseconds{1});
  auto client = make_curl_http_client();
  for (int code : {301, 302, 303, 307, 308}) {
    status = code;
    SCOPED_TRACE(code);
    HttpRequest request;
    request.url = "http://127.0.0.1:" + std::to_string(port) + "/token";
    request.headers.push_back({"X-IDENTITY-HEADER", "redirect-test-secret-9f8e", true});
    try {
      client->send(request, HttpOptions{});
      ADD_FAILURE() << "a " << code << " was not refused";
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kRedirect);
      EXPECT_THAT(error.what(), Not(HasSubstr("redirect-test-secret-9f8e")));
    }
  }
  EXPECT_EQ(target_hits.load(), 0);
  server.stop();
  thread.join();
}

// ---------------------------------------------------------------------------------------------
// Secrets on the wire

TEST(SecretHeaders, EverySecretASourceSendsIsMarkedSensitive) {
  fault_matrix::Harness harness;
  const std::vector<std::pair<Endpoint, std::string>> secrets{
      {Endpoint::kAppService, fault_matrix::Harness::kIdentityHeader},
      {Endpoint::kServiceFabric, fault_matrix::Harness::kIdentityHeader},
      {Endpoint::kAppService2017, fault_matrix::Harness::kMsiSecret},
      {Endpoint::kAzureMl, fault_matrix::Harness::kMsiSecret},
  };
  for (const auto& [endpoint, secret] : secrets) {
    SCOPED_TRACE(std::string(emulator::display_name(endpoint)));
    const HttpRequest request = harness.source(endpoint)->build_request({});
    bool carried = false;
    for (const auto& header : request.headers) {
      if (header.value == secret) {
        carried = true;
        EXPECT_TRUE(header.sensitive) << header.name << " is not marked sensitive";
      }
    }
    EXPECT_TRUE(carried);
    EXPECT_THAT(request.describe(), Not(HasSubstr(secret)));
    EXPECT_THAT(request.url, Not(HasSubstr(secret)));
  }
  // IMDS, Cloud Shell and Arc send the platform's SSRF guard, Metadata: true.
  for (auto endpoint : {Endpoint::kImds, Endpoint::kCloudShell, Endpoint::kAzureArc}) {
    EXPECT_EQ(harness.source(endpoint)->build_request({}).header("Metadata"), "true");
  }
}

// ---------------------------------------------------------------------------------------------
// Response size cap

TEST(ResponseSize, AStreamedBodyOverTheCapIsCutOff) {
  httplib::Server server;
  std::atomic<std::size_t> sent{0};
  constexpr std::size_t kChunk = 64 * 1024;
  constexpr std::size_t kTotal = 16u << 20;
  server.Get("/token", [&](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("application/json", [&](std::size_t, httplib::DataSink& sink) {
      if (sent >= kTotal) {
        sink.done();
        return true;
      }
      const std::string chunk(kChunk, 'x');
      if (!sink.write(chunk.data(), chunk.size())) return false;
      sent += kChunk;
      return true;
    });
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread thread([&] { server.listen_after_bind(); });
  while (!server.is_running()) std::this_thread::sleep_for(milliseconds{1});
  HttpRequest request;
  request.url = "http://127.0.0.1:" + std::to_string(port) + "/token";
  try {
    make_curl_http_client()->send(request, HttpOptions{});
    ADD_FAILURE() << "16 MiB accepted";
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), ErrorCode::kResponseTooLarge) << error.what();
  }
  server.stop();
  thread.join();
  // The client stopped reading soon after the cap, not at the end of the body.
  EXPECT_LT(sent.load(), kTotal);
}

}  // namespace
}  // namespace azkms
