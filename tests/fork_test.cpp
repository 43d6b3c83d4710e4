// What a pre-fork server (Apache prefork, PHP-FPM, uwsgi with a C extension) and exit() do to
// azkms, proved with real child processes.
//
//  - Fork: parent and children fetch different identities and resources at the same time,
//    over hundreds of forks, through the process-wide pooled HTTP client and through one
//    TokenCache they share the memory of. The emulator's ledger (kept by the parent, whose
//    threads serve every request) says whom each token was issued to: a token that reached a
//    process that did not ask for it is a cross-delivery. A child that does not finish in its
//    bounded time is killed by pid and counted as a hang. And a child's inherited cache renews
//    in the background, with a refresher of the child's own.
//  - Shutdown: a child whose static TokenCache is renewing against an endpoint that never
//    answers, or is waiting to retry a throttled one, calls exit(); it must be gone within a
//    few seconds, not when the renewal's deadline runs out.
//
//  - Locks and waits: a child uses a CryptSession, its named-provider bridge, the log hook and
//    the system clock while a parent thread was inside them at the fork, and must not block.
//
// ThreadSanitizer does not let the child of a threaded process start threads, so this file is
// kept out of the tsan stage (which builds the *cache* and *concurrency* tests) and the tests
// whose children do skip themselves there; ForkedStateTest's children start none and run under
// it in a ThreadSanitizer build. AddressSanitizer and UBSan run the file, except the tests
// whose parent allocates on several threads while it forks (see ForkTest).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include "azkms/crypt_session.hpp"
#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "azkms/log.hpp"
#include "emulator.hpp"
#include "key_vault.hpp"
#include "kms/named_provider_bridge.hpp"
#include "log.hpp"
#include "loopback_listener.hpp"
#include "loopback_only.hpp"
#include "test_tls.hpp"

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

#ifdef AZKMS_UNDER_TSAN
// A child forked while a parent thread runs inherits ThreadSanitizer's record of that thread,
// and its _exit() reports the thread as never joined (exit status 66). That thread is the
// parent's, and the parent joins it; nothing in a child can. Every test here forks, so this
// program, and only it, goes without thread-leak reports. What that gives up: a thread these
// tests' parents leave unjoined would go unreported under TSan (only the ForkedStateTest
// tests run there, and they join theirs); the library's own threads are checked for leaks
// by the cache and concurrency suites, whose reports stay on.
extern "C" const char* __tsan_default_options() { return "report_thread_leaks=0"; }
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

// ---- fork ----------------------------------------------------------------------------------

// Tests whose parent threads keep working while the main thread forks.
class BusyParentForkTest : public ProcessTest {
 protected:
  void SetUp() override {
    ProcessTest::SetUp();
#ifdef AZKMS_UNDER_ASAN
    // The parent's threads allocate all along; AddressSanitizer's allocator (GCC's runtime) is
    // not prepared for fork(), so a child can inherit one of its locks held and hang in malloc.
    // The unit stage runs these tests; the others here fork from a quiet parent and run under
    // AddressSanitizer too.
    GTEST_SKIP() << "AddressSanitizer's allocator may deadlock a child forked mid-allocation";
#endif
  }
};

// The emulator, for the tests whose parent fetches while it forks.
class ForkTest : public BusyParentForkTest {
 public:
  static void SetUpTestSuite() {
    emulator::Options options;
    options.identities = emulator::default_identities();
    emulator_ = new emulator::Emulator(options);
    emulator_->start();
  }
  static void TearDownTestSuite() {
    delete emulator_;
    emulator_ = nullptr;
  }

  static emulator::Emulator& emu() { return *emulator_; }
  static const emulator::Identity& identity(std::size_t index) {
    return emu().options().identities.at(index);
  }

  // An IMDS source on the emulator that sends through the process-wide (pooled) client, one
  // attempt per fetch so that every outcome is seen as it is.
  static std::shared_ptr<HttpTokenSource> imds_source() {
    SourceContext context;
    context.http = std::make_shared<testing::LoopbackOnlyHttpClient>(default_http_client());
    context.retry_policy = RetryPolicy::no_retries();
    context.attempt_timeout = seconds{5};
    return testing::require_loopback(make_source(
        MapEnvironment(emu().client_environment(Endpoint::kImds)), SourceKind::kImds, context));
  }

 private:
  static emulator::Emulator* emulator_;
};

emulator::Emulator* ForkTest::emulator_ = nullptr;

constexpr const char* kParentResource = "https://vault.azure.net";
constexpr const char* kChildResource = "https://storage.azure.com";

// What the parent found out about the tokens it and its children received.
struct Tally {
  std::atomic<int> right{0};
  std::atomic<int> wrong{0};  // issued to another identity or for another resource
  std::atomic<int> unknown{0};
  std::atomic<int> errors{0};
  std::atomic<int> hangs{0};
  std::atomic<int> bad_exits{0};
  std::mutex mutex;
  std::map<std::string, int> error_codes;  // code name -> count (never a message: no tokens)

  void error(const std::string& code) {
    ++errors;
    std::lock_guard lock(mutex);
    ++error_codes[code];
  }
  std::string error_summary() {
    std::lock_guard lock(mutex);
    std::string text;
    for (const auto& [code, count] : error_codes) text += code + " x" + std::to_string(count) + " ";
    return text;
  }
};

// Checks against the ledger that `token` was issued to `client_id` for `resource`. Never
// prints the token.
void check_token(Tally& tally, const std::string& token, const std::string& client_id,
                 const std::string& resource) {
  const auto issued = ForkTest::emu().ledger().lookup(token);
  if (!issued) {
    ++tally.unknown;
  } else if (issued->client_id != client_id || issued->resource != resource) {
    ++tally.wrong;
  } else {
    ++tally.right;
  }
}

TEST_F(ForkTest, ParentAndChildrenNeverReceiveEachOthersTokens) {
  const std::string parent_client = identity(0).client_id;  // system-assigned
  const std::string child_client = identity(1).client_id;   // user-assigned
  ASSERT_TRUE(identity(0).system_assigned);
  ASSERT_NE(parent_client, child_client);

  auto source = imds_source();
  const TokenRequest parent_request{kParentResource, IdentitySelector::system_assigned()};
  const TokenRequest child_request{kChildResource, IdentitySelector::client_id(child_client)};
  TokenCache cache;
  TokenHandle parent_handle = cache.handle(source, parent_request);
  Tally tally;

  // Parent calls, each checked against the ledger at once.
  auto parent_call = [&](const std::function<std::string()>& fetch) {
    try {
      check_token(tally, fetch(), parent_client, kParentResource);
    } catch (const Error& e) {
      tally.error(std::string(to_string(e.code())));
    }
  };
  auto parent_direct = [&] {
    parent_call([&] { return source->fetch(parent_request, in(seconds{5})).token.reveal(); });
  };
  // Two parent threads keep the pool and the cache's single flight busy all along: one
  // fetches directly, the other makes the cache fetch again and again.
  std::atomic<bool> stop{false};
  auto parent_loop = [&](const std::function<void()>& call) {
    while (!stop.load()) {
      call();
      std::this_thread::sleep_for(milliseconds{2});
    }
  };
  std::thread direct(parent_loop, parent_direct);
  std::thread cached(parent_loop, [&] {
    parent_call([&] { return parent_handle.force_refresh(in(seconds{5}))->token.reveal(); });
  });

  // Each child fetches its own identity and resource directly and through the cache it
  // inherited, and forces the inherited entry of the parent's identity too (whose fetch may
  // have been in flight in a parent thread at the fork). Every call has a 5 s deadline.
  auto child_body = [&](int out) {
    TokenHandle child_handle = cache.handle(source, child_request);
    auto attempt = [&](const char* kind, const std::function<std::string()>& fetch) {
      try {
        report(out, std::string(kind) + " " + fetch());
      } catch (const Error& e) {
        report(out, "E " + std::string(to_string(e.code())));
      }
    };
    for (int i = 0; i < 2; ++i) {
      attempt("C", [&] { return source->fetch(child_request, in(seconds{5})).token.reveal(); });
      attempt("C", [&] { return child_handle.force_refresh(in(seconds{5}))->token.reveal(); });
      attempt("C", [&] { return child_handle.get(in(seconds{5})).token.reveal(); });
      attempt("P", [&] { return parent_handle.force_refresh(in(seconds{5}))->token.reveal(); });
      attempt("P", [&] { return parent_handle.get(in(seconds{5})).token.reveal(); });
    }
  };
  auto settle = [&](Child& child) {
    const ChildOutcome outcome = child.wait_at_most(seconds{20});
    if (!outcome.finished) ++tally.hangs;
    if (outcome.finished && outcome.exit_code != 0) ++tally.bad_exits;
    std::istringstream lines(outcome.output);
    std::string kind;
    std::string value;
    while (lines >> kind >> value) {
      if (kind == "C") {
        check_token(tally, value, child_client, kChildResource);
      } else if (kind == "P") {
        check_token(tally, value, parent_client, kParentResource);
      } else {
        tally.error(value);
      }
    }
  };

  constexpr int kForks = 200;
  constexpr std::size_t kAtOnce = 3;
  int forks = 0;
  std::vector<std::unique_ptr<Child>> running;
  // A broken build fails after a few bad rounds rather than after all of them.
  auto broken = [&] {
    return tally.wrong + tally.hangs + tally.unknown + tally.bad_exits >= 5 || tally.errors >= 20;
  };
  for (; forks < kForks && !broken(); ++forks) {
    if (running.size() >= kAtOnce) {
      settle(*running.front());
      running.erase(running.begin());
    }
    // Like a pre-fork server: the forking thread fetched just before (its connection is idle
    // in the pool at the fork) and goes on fetching right after, while the child starts.
    parent_direct();
    running.push_back(std::make_unique<Child>(child_body));
    for (int i = 0; i < 3; ++i) parent_direct();
  }
  for (auto& child : running) settle(*child);
  running.clear();
  stop = true;
  direct.join();
  cached.join();

  SCOPED_TRACE("after " + std::to_string(forks) + " forks: " + std::to_string(tally.right) +
               " right, " + std::to_string(tally.wrong) + " wrong, " +
               std::to_string(tally.unknown) + " unknown, " + std::to_string(tally.hangs) +
               " hung children, errors: " + tally.error_summary());
  EXPECT_EQ(tally.wrong.load(), 0) << "tokens for another identity or resource were delivered";
  EXPECT_EQ(tally.unknown.load(), 0) << "tokens the emulator never issued were delivered";
  EXPECT_EQ(tally.hangs.load(), 0) << "children did not finish within 20 s";
  EXPECT_EQ(tally.bad_exits.load(), 0);
  EXPECT_EQ(tally.errors.load(), 0) << tally.error_summary();
  EXPECT_EQ(forks, kForks);
  // Not vacuous: every child call and many parent calls were checked against the ledger.
  EXPECT_GE(tally.right.load(), kForks * 10);
}

// A cache that a child inherits renews in the background there too: the child's refresher is
// started again, so no caller of the child waits for a renewal. (A callback source: this is
// about the cache's threads, and the parent stays quiet while it forks.)
class ForkedCacheTest : public ProcessTest {};

TEST_F(ForkedCacheTest, ChildRenewsTheInheritedCacheInTheBackground) {
  // Tokens name the process that fetched them.
  std::atomic<int> fetches{0};
  auto source = make_callback_source([&](const TokenRequest&, Deadline) {
    AccessToken token;
    token.token = Secret("token-" + std::to_string(::getpid()) + "-" + std::to_string(++fetches));
    token.expires_on = std::chrono::system_clock::now() + std::chrono::hours{1};
    return token;
  });
  CacheOptions options;
  // Hour-long tokens, usable for 4 s only: renewed about 2 s after they arrive.
  options.min_remaining = seconds{3600 - 4};
  options.min_refresh_interval = milliseconds{100};
  TokenCache cache(options);
  TokenHandle handle = cache.handle(source);
  const std::string first = handle.get(in(seconds{5})).token.reveal();

  Child child([&](int out) {
    // Calls keep being served from memory; a renewal must replace the token before it stops
    // being usable, without any caller waiting for it.
    const auto until = Steady::now() + seconds{15};
    while (Steady::now() < until && handle.stats().renewals == 0) {
      (void)handle.get(in(seconds{5}));
      std::this_thread::sleep_for(milliseconds{20});
    }
    const CacheStats stats = handle.stats();
    report(out, "renewals " + std::to_string(stats.renewals));
    report(out, "waits " + std::to_string(stats.waits));
    report(out, "token " + handle.get(in(seconds{5})).token.reveal());
    report(out, "pid " + std::to_string(::getpid()));
  });
  const ChildOutcome outcome = child.wait_at_most(seconds{30});
  ASSERT_TRUE(outcome.finished);
  EXPECT_EQ(outcome.exit_code, 0);
  std::istringstream lines(outcome.output);
  std::map<std::string, std::string> values;
  std::string key;
  std::string value;
  while (lines >> key >> value) values[key] = value;
  EXPECT_GE(std::atoi(values["renewals"].c_str()), 1)
      << "the child's cache did not renew in the background";
  EXPECT_EQ(values["waits"], "0") << "a caller in the child waited for a token";
  EXPECT_NE(values["token"], first);
  EXPECT_EQ(values["token"].rfind("token-" + values["pid"] + "-", 0), 0u)
      << "the child's token was not fetched by the child";
}

// ---- a CryptSession across forks -------------------------------------------------------------

// A CryptSession made before the fork (App Service identity, HTTPS Key Vault emulator), used by
// parent threads all along while the main thread forks, and by every child. The parent's
// threads are inside the session (its handle's lock, libmongocrypt's key cache) at random
// moments of the fork. They encrypt deterministically: random encryption draws on OpenSSL's
// random generator, whose locks OpenSSL 3.0 does not release in a child (docs/security.md),
// and a child's TLS handshake needs that generator.
class CryptForkTest : public BusyParentForkTest {
 protected:
  void SetUp() override {
    BusyParentForkTest::SetUp();
    if (IsSkipped()) return;
    identity_ = std::make_unique<emulator::Emulator>();
    identity_->start();
    emulator::KeyVaultOptions vault_options;
    vault_options.keys = {"mongo-key"};
    vault_ = std::make_unique<emulator::KeyVaultServer>(identity_->ledger(), vault_options);
    vault_->start();
    dir_ = testing::make_temp_dir("azkms-crypt-fork");
  }
  void TearDown() override {
    vault_.reset();
    identity_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<CryptSession> session() {
    KmsProvidersOptions provider_options;
    provider_options.environment = std::make_shared<MapEnvironment>(
        identity_->client_environment(emulator::Endpoint::kAppService));
    auto providers = std::make_shared<KmsProviders>(provider_options);
    providers->add("azure");  // detected: App Service
    // With libmongocrypt >= 1.9 a named provider too, so that the session has a bridge.
    if (CryptSession::supports_named_providers()) {
      providers->add(kNamedProvider, ProviderConfig{SourceKind::kAppService, {}});
    }
    CryptSessionOptions options;
    options.providers = providers;
    options.key_vault = std::make_shared<FileKeyVault>(dir_ / "keys.json");
    options.ca_file = vault_->ca_file();
    options.kms_attempt_timeout = seconds{5};
    return std::make_unique<CryptSession>(options);
  }
  AzureMasterKey master_key(const std::string& provider = "azure") const {
    return {provider, vault_->endpoint(), "mongo-key", ""};
  }
  static constexpr const char* kNamedProvider = "azure:fork";

  std::unique_ptr<emulator::Emulator> identity_;
  std::unique_ptr<emulator::KeyVaultServer> vault_;
  std::filesystem::path dir_;
};

TEST_F(CryptForkTest, ChildrenUseASessionThatParentThreadsWereUsingAtTheFork) {
  auto crypt = session();
  const DataKeyId key = crypt->create_data_key(master_key(), {"fork"});
  std::vector<BsonValue> parent_ciphertexts = {
      crypt->encrypt(BsonValue::utf8("from the parent"), key, Algorithm::kRandom)};
  if (CryptSession::supports_named_providers()) {
    const DataKeyId named_key = crypt->create_data_key(master_key(kNamedProvider));
    parent_ciphertexts.push_back(
        crypt->encrypt(BsonValue::utf8("from the parent"), named_key, Algorithm::kRandom));
  }
  std::string expected_output;
  for (std::size_t i = 0; i < parent_ciphertexts.size(); ++i) {
    expected_output += "decrypted from the parent\n";
  }
  expected_output += "own child\n";

  std::atomic<bool> stop{false};
  std::atomic<int> parent_failures{0};
  std::atomic<int> parent_operations{0};
  std::vector<std::thread> parent_threads;
  for (int t = 0; t < 3; ++t) {
    parent_threads.emplace_back([&] {
      while (!stop.load()) {
        try {
          const BsonValue ciphertext =
              crypt->encrypt(BsonValue::utf8("parent"), key, Algorithm::kDeterministic);
          if (crypt->decrypt(ciphertext).as_utf8() != "parent") ++parent_failures;
        } catch (const Error&) {
          ++parent_failures;
        }
        ++parent_operations;
      }
    });
  }

  // Each child decrypts what the parent encrypted (with the named provider's key too, when
  // there is one), and encrypts and decrypts a value of its own, each with a 10 s deadline.
  auto child_body = [&](int out) {
    auto within = [] { return in(seconds{10}); };
    try {
      for (const auto& ciphertext : parent_ciphertexts) {
        report(out, "decrypted " + crypt->decrypt(ciphertext, within()).as_utf8());
      }
      const BsonValue own =
          crypt->encrypt(BsonValue::utf8("child"), "fork", Algorithm::kDeterministic, within());
      report(out, "own " + crypt->decrypt(own, within()).as_utf8());
    } catch (const Error& e) {
      report(out, "error " + std::string(to_string(e.code())));
    }
  };

  constexpr int kForks = 60;
  int forks = 0;
  int hangs = 0;
  int right = 0;
  std::string unexpected;
  for (; forks < kForks && hangs < 2; ++forks) {
    Child child(child_body);
    const ChildOutcome outcome = child.wait_at_most(seconds{20});
    if (!outcome.finished) {
      ++hangs;
    } else if (outcome.exit_code == 0 && outcome.output == expected_output) {
      ++right;
    } else if (unexpected.empty()) {
      unexpected = outcome.output;
    }
  }
  stop = true;
  for (auto& thread : parent_threads) thread.join();

  SCOPED_TRACE("after " + std::to_string(forks) + " forks and " +
               std::to_string(parent_operations.load()) + " parent operations");
  EXPECT_EQ(hangs, 0) << "children were still blocked after 20 s";
  EXPECT_EQ(right, forks) << "a child said: " << unexpected;
  EXPECT_EQ(parent_failures.load(), 0);
}

// The named-provider bridge of a session (libmongocrypt >= 1.9) answers token requests and
// looks up whose token a Key Vault request carries, under its lock; here parent threads do both
// all along while the main thread forks, and each child looks a token up.
class BridgeForkTest : public BusyParentForkTest {};

TEST_F(BridgeForkTest, ChildrenLookUpTokensWhileParentThreadsAnsweredAtTheFork) {
  NamedProviderBridge bridge({"azure:prod"});
  const std::string provider = "azure:prod";
  AccessToken token;
  token.token = Secret("bridge-fork-token");
  token.expires_on = std::chrono::system_clock::now() + std::chrono::hours{1};
  (void)bridge.answer(provider, token, std::chrono::system_clock::now());

  std::atomic<bool> stop{false};
  std::vector<std::thread> parent_threads;
  for (int t = 0; t < 3; ++t) {
    parent_threads.emplace_back([&] {
      while (!stop.load()) {
        (void)bridge.answer(provider, token, std::chrono::system_clock::now());
        (void)bridge.provider_of_token("bridge-fork-token");
      }
    });
  }
  constexpr int kForks = 100;
  int forks = 0;
  int hangs = 0;
  int right = 0;
  for (; forks < kForks && hangs < 2; ++forks) {
    Child child([&](int out) {
      const auto named = bridge.provider_of_token("bridge-fork-token");
      report(out, named.value_or("none"));
    });
    const ChildOutcome outcome = child.wait_at_most(seconds{20});
    if (!outcome.finished) {
      ++hangs;
    } else if (outcome.exit_code == 0 && outcome.output == provider + "\n") {
      ++right;
    }
  }
  stop = true;
  for (auto& thread : parent_threads) thread.join();
  SCOPED_TRACE("after " + std::to_string(forks) + " forks");
  EXPECT_EQ(hangs, 0) << "children were still blocked after 20 s";
  EXPECT_EQ(right, forks);
}

// ---- locks and waits of the parent's threads -----------------------------------------------

// A parent thread is inside one of azkms's process-wide objects at the fork; the child (one
// thread, which starts none) then uses that object and must not block on what the parent's
// thread left behind. The parent is quiet while it forks (its other thread waits rather than
// allocates), so these run under AddressSanitizer, and under ThreadSanitizer too.
class ForkedStateTest : public ::testing::Test {};

// set_log_hook() drops the previous hook while it holds the hook's lock: a hook whose captured
// state takes long to destroy keeps a parent thread inside that lock while the main thread
// forks. The child installs a hook of its own and logs.
TEST_F(ForkedStateTest, AChildLogsWhenAParentThreadHeldTheLogHookAtTheFork) {
  std::atomic<bool> holding{false};
  std::atomic<bool> forking{false};
  {
    // Destroyed by the set_log_hook() that replaces the hook: it holds the lock from then until
    // half a second after the main thread starts forking.
    std::shared_ptr<int> slow_to_destroy(new int(0), [&](const int* value) {
      holding = true;
      while (!forking.load()) std::this_thread::sleep_for(milliseconds{1});
      std::this_thread::sleep_for(milliseconds{500});
      delete value;
    });
    set_log_hook([slow_to_destroy](LogLevel, std::string_view) {});
  }
  std::thread replacer([] { set_log_hook([](LogLevel, std::string_view) {}); });
  const auto until = Steady::now() + seconds{20};
  while (!holding.load() && Steady::now() < until) std::this_thread::sleep_for(milliseconds{1});
  ASSERT_TRUE(holding.load()) << "the replaced hook was never destroyed";

  forking = true;
  Child child([](int out) {
    set_log_hook([out](LogLevel, std::string_view message) {
      report(out, "logged " + std::string(message));
    });
    log(LogLevel::kWarning, "from-the-child");
    report(out, "done");
  });
  const ChildOutcome outcome = child.wait_at_most(seconds{20});
  replacer.join();
  set_log_hook(nullptr);
  ASSERT_TRUE(outcome.finished) << "the child was still blocked after 20 s";
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_NE(outcome.output.find("logged from-the-child\n"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("done\n"), std::string::npos);
}

// exit() in a child runs the static destructors, the system clock's among them, and then
// this: registered during static initialisation, before the first Clock::system() call (a
// function-local static) registers the clock's destruction, so it runs after that. It reports
// the clock's destruction to the parent and ends the child without the rest of exit().
int g_exit_report_fd = -1;
const bool g_exit_reporter = [] {
  std::atexit([] {
    if (g_exit_report_fd < 0) return;
    report(g_exit_report_fd, "clock-destroyed");
    ::_exit(0);
  });
  return true;
}();

// A parent thread sleeping in the system clock at the fork is a waiter that the child's copy of
// the clock's condition variable still counts, and never loses: glibc's
// pthread_cond_destroy() waits until every counted waiter has left. The child sleeps and wakes
// the clock's sleepers a few times, then exits like a pre-fork server's worker, which destroys
// the clock.
TEST_F(ForkedStateTest, AChildSleepsWakesAndExitsWhenAParentThreadSleptInTheClockAtTheFork) {
  ASSERT_TRUE(g_exit_reporter);
  auto clock = Clock::system();
  std::atomic<bool> asleep{false};
  std::atomic<bool> stop{false};
  std::thread sleeper([&] {
    while (!stop.load()) {
      asleep = true;
      clock->sleep_until(clock->steady_now() + std::chrono::hours{1});
    }
  });
  const auto until = Steady::now() + seconds{20};
  while (!asleep.load() && Steady::now() < until) std::this_thread::sleep_for(milliseconds{1});
  // Time to get from the flag into the wait.
  std::this_thread::sleep_for(milliseconds{300});

  Child child([&](int out) {
    for (int i = 0; i < 3; ++i) {
      clock->sleep_until(clock->steady_now() + milliseconds{20});
      clock->wake_all();
    }
    report(out, "slept-and-woke");
    clock.reset();  // the static in Clock::system() is then the last owner
    g_exit_report_fd = out;
    std::exit(0);
  });
  const ChildOutcome outcome = child.wait_at_most(seconds{20});
  stop = true;
  clock->wake_all();
  sleeper.join();
  ASSERT_TRUE(outcome.finished) << "the child was still blocked after 20 s, having said: "
                                << outcome.output;
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_NE(outcome.output.find("slept-and-woke\n"), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("clock-destroyed\n"), std::string::npos) << outcome.output;
}

// ---- shutdown ------------------------------------------------------------------------------

// A loopback port that accepts connections (the kernel completes the handshake). Without
// answer() nothing ever answers: a hung identity endpoint.
class LoopbackPort {
 public:
  LoopbackPort() {
    const auto listener = testing::listen_on_loopback();
    fd_ = listener.fd;
    port_ = listener.port;
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
