// Token cache benchmarks against the identity emulator on loopback (IMDS endpoint, real
// IMDS source, real libcurl client). Each figure has a baseline measured in the same run;
// docs/performance.md gives the method and the figures as ratios.
//
//   cached read      BM_CachedRead_*        ns per call on 1 and 2 threads, heap allocations
//                                           per call; baselines: a mutex + shared_ptr cache,
//                                           and a mutex + by-value copy (the Azure SDK's shape)
//   cold stampede    BM_ColdStampede64/N    64 threads at once on an empty cache, 200 ms
//                                           endpoint delay: upstream requests (N=1), against
//                                           the same 64 callers without a cache (N=0)
//   renewals         BM_RenewalHammer/N     2 threads calling for 8 s while 3 s tokens are
//                                           renewed with a 200 ms endpoint delay: slowest
//                                           call. N=0 azkms, N=1 azkms with no renewal due
//                                           (the machine's noise floor), N=2 a cache that
//                                           renews under its lock (the Azure SDK's shape)
//   first token      BM_FirstToken_Paired   a cold cache's first get() against a bare libcurl
//                                           GET of the same request on a reused connection,
//                                           in one loop in shuffled order, medians (against an
//                                           IMDS-shaped httplib server on loopback, see
//                                           LocalImds)
#include <benchmark/benchmark.h>
#include <curl/curl.h>
#include <httplib.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <latch>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "azkms/cache.hpp"
#include "azkms/detect.hpp"
#include "azkms/environment.hpp"
#include "emulator.hpp"
#include "http_token_source.hpp"

// ---- heap allocations, counted per thread ---------------------------------------------------
//
// Sanitizers bring their own operator new: under them the counts are not taken (reported -1).

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define AZKMS_BENCH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define AZKMS_BENCH_SANITIZED 1
#endif
#endif

namespace {
#ifdef AZKMS_BENCH_SANITIZED
constexpr bool kCountsAllocations = false;
#else
constexpr bool kCountsAllocations = true;
#endif
thread_local std::uint64_t t_allocations = 0;
}  // namespace

#ifndef AZKMS_BENCH_SANITIZED
// GCC sees operator new's pointer reach free() once these are inlined and takes the pair for
// a mismatch; here malloc and free are the pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
void* counted_alloc(std::size_t size) {
  ++t_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* counted_aligned_alloc(std::size_t size, std::align_val_t align) {
  ++t_allocations;
  const auto a = static_cast<std::size_t>(align);
  return std::aligned_alloc(a, (std::max<std::size_t>(size, 1) + a - 1) / a * a);
}
}  // namespace

void* operator new(std::size_t size) {
  if (void* p = counted_alloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = counted_alloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_alloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_alloc(size);
}
void* operator new(std::size_t size, std::align_val_t align) {
  if (void* p = counted_aligned_alloc(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  if (void* p = counted_aligned_alloc(size, align)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

#endif  // AZKMS_BENCH_SANITIZED

namespace azkms {
namespace {

using emulator::Endpoint;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

emulator::Emulator* g_emulator = nullptr;

emulator::Emulator& emu() {
  if (g_emulator == nullptr) {
    g_emulator = new emulator::Emulator();
    g_emulator->start();
  }
  return *g_emulator;
}

std::shared_ptr<HttpTokenSource> imds_source() {
  SourceContext context;
  context.http = make_curl_http_client();
  context.clock = Clock::system();
  return as_http_source(make_source(MapEnvironment(emu().client_environment(Endpoint::kImds)),
                                    SourceKind::kImds, context));
}

Deadline in(std::chrono::seconds budget) { return Clock::system()->steady_now() + budget; }

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// ---- cached read ----------------------------------------------------------------------------

struct ReadFixture {
  std::shared_ptr<HttpTokenSource> source;
  std::shared_ptr<TokenCache> cache;
  TokenHandle handle;
  AccessToken token;
};

ReadFixture& read_fixture() {
  static ReadFixture fixture = [] {
    ReadFixture f;
    f.source = imds_source();
    f.cache = std::make_shared<TokenCache>();
    f.handle = f.cache->handle(f.source);
    f.token = f.handle.get(in(seconds{10}));
    return f;
  }();
  return fixture;
}

// What typical SDK caches do: one mutex, an expiry check, a shared_ptr copy per read.
class MutexSharedPtrCache {
 public:
  explicit MutexSharedPtrCache(const AccessToken& token)
      : token_(std::make_shared<const AccessToken>(token)),
        usable_until_(token.expires_on - seconds{60}) {}
  std::shared_ptr<const AccessToken> get() {
    std::lock_guard lock(mutex_);
    if (std::chrono::system_clock::now() >= usable_until_) return nullptr;
    return token_;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<const AccessToken> token_;
  SystemTime usable_until_;
};

// The Azure SDK for C++'s shape: one mutex, the token returned by value.
class MutexCopyCache {
 public:
  explicit MutexCopyCache(const AccessToken& token)
      : token_(token), usable_until_(token.expires_on - seconds{60}) {}
  AccessToken get() {
    std::lock_guard lock(mutex_);
    if (std::chrono::system_clock::now() >= usable_until_) return {};
    return token_;
  }

 private:
  std::mutex mutex_;
  AccessToken token_;
  SystemTime usable_until_;
};

void report_reads(benchmark::State& state, std::uint64_t allocations_before) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["allocs_per_call"] = benchmark::Counter(
      kCountsAllocations
          ? static_cast<double>(t_allocations - allocations_before) /
                static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1))
          : -1.0,
      benchmark::Counter::kAvgThreads);
}

void BM_CachedRead_Azkms(benchmark::State& state) {
  TokenHandle handle = read_fixture().handle;
  const Deadline deadline = in(seconds{3600});
  handle.get(deadline);  // fills this thread's slot
  const std::uint64_t before = t_allocations;
  for (auto _ : state) {
    const AccessToken& token = handle.get(deadline);
    benchmark::DoNotOptimize(&token);
  }
  report_reads(state, before);
}
BENCHMARK(BM_CachedRead_Azkms)->Threads(1)->Threads(2)->UseRealTime();

void BM_CachedRead_MutexSharedPtr(benchmark::State& state) {
  static MutexSharedPtrCache cache(read_fixture().token);
  const std::uint64_t before = t_allocations;
  for (auto _ : state) {
    auto token = cache.get();
    benchmark::DoNotOptimize(token.get());
  }
  report_reads(state, before);
}
BENCHMARK(BM_CachedRead_MutexSharedPtr)->Threads(1)->Threads(2)->UseRealTime();

void BM_CachedRead_MutexCopy(benchmark::State& state) {
  static MutexCopyCache cache(read_fixture().token);
  const std::uint64_t before = t_allocations;
  for (auto _ : state) {
    AccessToken token = cache.get();
    benchmark::DoNotOptimize(token.token.size());
  }
  report_reads(state, before);
}
BENCHMARK(BM_CachedRead_MutexCopy)->Threads(1)->Threads(2)->UseRealTime();

// Two threads against one, in alternating blocks: each round runs `calls` reads on one thread,
// then `calls` reads on each of two threads, timed from a common start to the last finish
// (threads are created and parked before the clock starts). The figure is the median over
// rounds of (two-thread throughput / one-thread throughput), which a busy neighbour disturbs
// far less than two separate runs would be.
template <class Read>
double calls_per_second(int threads, std::uint64_t calls, const Read& read) {
  std::latch parked(threads + 1);
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&] {
      Read local = read;  // each thread its own copy (a handle, or a pointer to the cache)
      parked.arrive_and_wait();
      while (!go.load(std::memory_order_acquire)) {
      }
      for (std::uint64_t n = 0; n < calls; ++n) local();
    });
  }
  parked.arrive_and_wait();
  const auto t0 = steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& worker : workers) worker.join();
  const double seconds_taken = std::chrono::duration<double>(steady_clock::now() - t0).count();
  return static_cast<double>(calls) * threads / seconds_taken;
}

template <class Read>
void paired_scaling(benchmark::State& state, std::uint64_t calls, const Read& read) {
  std::vector<double> ratios;
  std::vector<double> one_ns;
  std::vector<double> two_ns;
  for (auto _ : state) {
    const double one = calls_per_second(1, calls, read);
    const double two = calls_per_second(2, calls, read);
    ratios.push_back(two / one);
    one_ns.push_back(1e9 / one);
    two_ns.push_back(1e9 / two);
  }
  state.counters["two_over_one"] = median(ratios);
  state.counters["ns_per_call_1t"] = median(one_ns);
  state.counters["ns_per_call_2t_aggregate"] = median(two_ns);
}

void BM_ReadScaling_Azkms(benchmark::State& state) {
  const Deadline deadline = in(seconds{3600});
  struct Read {
    TokenHandle handle;
    Deadline deadline;
    void operator()() { benchmark::DoNotOptimize(&handle.get(deadline)); }
  };
  paired_scaling(state, 20'000'000, Read{read_fixture().handle, deadline});
}
BENCHMARK(BM_ReadScaling_Azkms)->Iterations(15)->UseRealTime()->Unit(benchmark::kMillisecond);

// What the machine gives two threads right now: thread-local work that shares nothing. On an
// idle two-core machine this is 2; on a shared one it says how much of the second core the
// neighbours left, the ceiling for any cache.
void BM_ReadScaling_SharesNothing(benchmark::State& state) {
  struct Read {
    std::uint64_t x = 0x9e3779b97f4a7c15ULL;
    void operator()() {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      benchmark::DoNotOptimize(x);
    }
  };
  paired_scaling(state, 50'000'000, Read{});
}
BENCHMARK(BM_ReadScaling_SharesNothing)
    ->Iterations(15)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_ReadScaling_MutexSharedPtr(benchmark::State& state) {
  static MutexSharedPtrCache cache(read_fixture().token);
  struct Read {
    MutexSharedPtrCache* cache;
    void operator()() {
      auto token = cache->get();
      benchmark::DoNotOptimize(token.get());
    }
  };
  paired_scaling(state, 2'000'000, Read{&cache});
}
BENCHMARK(BM_ReadScaling_MutexSharedPtr)
    ->Iterations(15)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// What the hot path's clock read costs: the virtual Clock::now() (clock_gettime REALTIME)
// against the coarse clock the cache reads when it runs on the system clock.
void BM_ClockRead_ClockNow(benchmark::State& state) {
  Clock& clock = *Clock::system();
  for (auto _ : state) benchmark::DoNotOptimize(clock.now());
}
BENCHMARK(BM_ClockRead_ClockNow);

void BM_ClockRead_Coarse(benchmark::State& state) {
  for (auto _ : state) {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    benchmark::DoNotOptimize(ts);
  }
}
BENCHMARK(BM_ClockRead_Coarse);

// The cold path's own cost, without a network: a source that hands back a prepared token.
class PreparedSource final : public TokenSource {
 public:
  explicit PreparedSource(AccessToken token) : token_(std::move(token)) {}
  [[nodiscard]] SourceKind kind() const override { return SourceKind::kCustom; }
  AccessToken fetch(const TokenRequest&, Deadline) override {
    AccessToken token = token_;
    token.expires_on = std::chrono::system_clock::now() + std::chrono::hours{24};
    return token;
  }

 private:
  AccessToken token_;
};

void BM_ColdGet_PreparedSource(benchmark::State& state) {
  auto source = std::make_shared<PreparedSource>(read_fixture().token);
  for (auto _ : state) {
    state.PauseTiming();
    auto cache = std::make_unique<TokenCache>();
    TokenHandle handle = cache->handle(source);
    state.ResumeTiming();
    benchmark::DoNotOptimize(&handle.get(in(seconds{10})));
    state.PauseTiming();
    handle = TokenHandle();
    cache.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_ColdGet_PreparedSource)->Iterations(5000)->Unit(benchmark::kMicrosecond);

void BM_InvalidateGet_PreparedSource(benchmark::State& state) {
  auto source = std::make_shared<PreparedSource>(read_fixture().token);
  TokenCache cache;
  TokenHandle handle = cache.handle(source);
  for (auto _ : state) {
    handle.invalidate();
    benchmark::DoNotOptimize(&handle.get(in(seconds{10})));
  }
}
BENCHMARK(BM_InvalidateGet_PreparedSource)->Unit(benchmark::kMicrosecond);

void BM_SourceOnly_PreparedSource(benchmark::State& state) {
  PreparedSource source(read_fixture().token);
  for (auto _ : state) benchmark::DoNotOptimize(source.fetch({}, in(seconds{10})));
}
BENCHMARK(BM_SourceOnly_PreparedSource)->Unit(benchmark::kMicrosecond);

// ---- 64 callers on an empty cache -----------------------------------------------------------

void BM_ColdStampede64(benchmark::State& state) {
  constexpr int kCallers = 64;
  const bool cached = state.range(0) == 1;
  auto source = imds_source();
  source->fetch({}, in(seconds{10}));  // warm: this measures requests, not connection set-up
  emu().set_response_delay(milliseconds{200});
  std::uint64_t requests = 0;
  std::uint64_t cache_upstream = 0;
  std::int64_t slowest_ns = 0;
  int failures = 0;
  for (auto _ : state) {
    auto cache = std::make_shared<TokenCache>();
    TokenHandle handle = cache->handle(source);
    const std::uint64_t served_before = emu().requests_served(Endpoint::kImds);
    std::latch start(kCallers);
    std::atomic<int> failed{0};
    std::atomic<std::int64_t> slowest{0};
    std::vector<std::thread> callers;
    for (int i = 0; i < kCallers; ++i) {
      callers.emplace_back([&] {
        start.arrive_and_wait();
        const auto t0 = steady_clock::now();
        try {
          if (cached) {
            benchmark::DoNotOptimize(&handle.get(in(seconds{30})));
          } else {
            benchmark::DoNotOptimize(source->fetch({}, in(seconds{30})));
          }
        } catch (const std::exception&) {
          ++failed;
        }
        const auto took = duration_cast<nanoseconds>(steady_clock::now() - t0).count();
        std::int64_t seen = slowest.load();
        while (took > seen && !slowest.compare_exchange_weak(seen, took)) {
        }
      });
    }
    for (auto& caller : callers) caller.join();
    requests += emu().requests_served(Endpoint::kImds) - served_before;
    cache_upstream += cache->stats().upstream_requests;
    slowest_ns = std::max(slowest_ns, slowest.load());
    failures += failed.load();
  }
  emu().set_response_delay(milliseconds{0});
  const auto n = static_cast<double>(state.iterations());
  state.counters["endpoint_requests"] = static_cast<double>(requests) / n;
  state.counters["cache_upstream"] = cached ? static_cast<double>(cache_upstream) / n : 0;
  state.counters["slowest_ms"] = static_cast<double>(slowest_ns) / 1e6;
  state.counters["failures"] = failures;
}
BENCHMARK(BM_ColdStampede64)
    ->Arg(0)
    ->Arg(1)
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// ---- callers across many renewals -----------------------------------------------------------

// Renews under its lock, as the Azure SDK for C++ does: every caller waits for the fetch.
class StallingCache {
 public:
  StallingCache(std::shared_ptr<TokenSource> source, CacheOptions options)
      : source_(std::move(source)), options_(std::move(options)) {}
  std::shared_ptr<const AccessToken> get() {
    std::lock_guard lock(mutex_);
    const SystemTime now = std::chrono::system_clock::now();
    if (!token_ || now >= refresh_at_) {
      token_ = std::make_shared<const AccessToken>(source_->fetch({}, in(seconds{30})));
      refresh_at_ = plan_renewal(*token_, std::chrono::system_clock::now(), options_).refresh_at;
      ++fetches_;
    }
    return token_;
  }
  int fetches() {
    std::lock_guard lock(mutex_);
    return fetches_;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<TokenSource> source_;
  CacheOptions options_;
  std::shared_ptr<const AccessToken> token_;
  SystemTime refresh_at_{};
  int fetches_ = 0;
};

void BM_RenewalHammer(benchmark::State& state) {
  constexpr int kCallers = 2;
  constexpr auto kRun = seconds{8};
  const int mode = static_cast<int>(state.range(0));  // 0 azkms, 1 no renewal due, 2 stalling
  emu().set_token_lifetime(mode == 1 ? seconds{3600} : seconds{3});
  auto source = imds_source();
  source->fetch({}, in(seconds{10}));
  emu().set_response_delay(milliseconds{200});
  // A 3 s token with one minute of margin would never be usable: scale the margin down with
  // the lifetime (3 s token, 1 s margin: usable ~1.8 s, renewed ~0.9 s after arrival).
  CacheOptions options;
  options.min_remaining = seconds{1};

  std::int64_t slowest_ns = 0;
  std::uint64_t calls = 0;
  std::uint64_t over_1ms = 0;
  std::uint64_t renewals = 0;
  std::uint64_t cache_waits = 0;
  int failures = 0;
  for (auto _ : state) {
    TokenCache cache(options);
    TokenHandle handle = cache.handle(source);
    StallingCache stalling(source, options);
    if (mode == 2) {
      stalling.get();
    } else {
      handle.get(in(seconds{30}));
    }
    std::atomic<bool> stop{false};
    std::atomic<std::int64_t> slowest{0};
    std::atomic<std::uint64_t> total{0};
    std::atomic<std::uint64_t> slow{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> callers;
    for (int i = 0; i < kCallers; ++i) {
      callers.emplace_back([&] {
        const Deadline deadline = in(seconds{60});
        std::int64_t local_slowest = 0;
        std::uint64_t local_calls = 0;
        std::uint64_t local_slow = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          const auto t0 = steady_clock::now();
          try {
            if (mode == 2) {
              benchmark::DoNotOptimize(stalling.get().get());
            } else {
              benchmark::DoNotOptimize(&handle.get(deadline));
            }
          } catch (const std::exception&) {
            ++failed;
          }
          const auto took = duration_cast<nanoseconds>(steady_clock::now() - t0).count();
          local_slowest = std::max(local_slowest, took);
          ++local_calls;
          if (took > 1'000'000) ++local_slow;
        }
        std::int64_t seen = slowest.load();
        while (local_slowest > seen && !slowest.compare_exchange_weak(seen, local_slowest)) {
        }
        total += local_calls;
        slow += local_slow;
      });
    }
    std::this_thread::sleep_for(kRun);
    stop = true;
    for (auto& caller : callers) caller.join();
    slowest_ns = std::max(slowest_ns, slowest.load());
    calls += total.load();
    over_1ms += slow.load();
    failures += failed.load();
    renewals += mode == 2 ? static_cast<std::uint64_t>(stalling.fetches() - 1)
                          : handle.stats().upstream_requests - 1;
    cache_waits += mode == 2 ? 0 : handle.stats().waits;
  }
  emu().set_response_delay(milliseconds{0});
  emu().set_token_lifetime(seconds{3600});
  state.counters["slowest_call_us"] = static_cast<double>(slowest_ns) / 1e3;
  state.counters["calls_over_1ms"] = static_cast<double>(over_1ms);
  state.counters["calls"] = static_cast<double>(calls);
  state.counters["renewals"] = static_cast<double>(renewals);
  // Callers that waited inside the cache for a fetch (azkms only; the first get() is made
  // before the callers start).
  state.counters["cache_waits"] = static_cast<double>(cache_waits);
  state.counters["failures"] = failures;
}
BENCHMARK(BM_RenewalHammer)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

// ---- first token: cold cache against a bare libcurl GET ------------------------------------

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

// An IMDS-shaped endpoint on loopback with TCP_NODELAY. The identity emulator's server does
// not set it yet, so a reused connection there can wait ~40 ms for a delayed ACK on any
// request (Nagle on the server's second write), which would swamp both sides of this ratio.
class LocalImds {
 public:
  LocalImds() {
    server_.set_tcp_nodelay(true);
    // A token of the size Azure issues (~1.5 KB).
    const std::string token(1500, 'x');
    server_.Get("/metadata/identity/oauth2/token", [token](const httplib::Request& request,
                                                           httplib::Response& response) {
      if (request.get_header_value("Metadata") != "true") {
        response.status = 400;
        return;
      }
      const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      response.set_content(R"({"access_token":")" + token +
                               R"(","expires_in":"3599","expires_on":")" +
                               std::to_string(now + 3599) +
                               R"(","ext_expires_in":"3599","not_before":")" + std::to_string(now) +
                               R"(","resource":"https://vault.azure.net","token_type":"Bearer"})",
                           "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~LocalImds() {
    server_.stop();
    thread_.join();
  }
  LocalImds(const LocalImds&) = delete;
  LocalImds& operator=(const LocalImds&) = delete;

  std::shared_ptr<HttpTokenSource> source() const {
    SourceContext context;
    context.http = make_curl_http_client();
    context.clock = Clock::system();
    return as_http_source(make_source(
        MapEnvironment(
            {{"AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:" + std::to_string(port_)}}),
        SourceKind::kImds, context));
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

void BM_FirstToken_Paired(benchmark::State& state) {
  LocalImds endpoint;
  auto source = endpoint.source();
  source->fetch({}, in(seconds{10}));  // the source's connection is open and reused

  // The same request, sent by a bare easy handle that keeps its connection.
  const HttpRequest request = source->build_request(TokenRequest{});
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  for (const auto& header : request.headers) {
    headers = curl_slist_append(headers, (header.name + ": " + header.value).c_str());
  }
  std::string body;
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_perform(curl);  // opens the connection

  std::vector<double> cold_us;
  std::vector<double> bare_us;
  std::vector<double> cold_with_handle_us;
  std::vector<double> source_us;
  int bad = 0;
  auto micros = [](steady_clock::time_point t0, steady_clock::time_point t1) {
    return std::chrono::duration<double, std::micro>(t1 - t0).count();
  };
  TokenCache warm_cache;
  TokenHandle warm_handle = warm_cache.handle(source);
  warm_handle.get(in(seconds{10}));
  std::vector<double> refetch_us;
  const std::array<std::function<void()>, 5> measures = {
      [&] {
        // A cache that has been running: invalidate(), then the next get() fetches.
        warm_handle.invalidate();
        const auto t0 = steady_clock::now();
        const AccessToken& token = warm_handle.get(in(seconds{10}));
        const auto t1 = steady_clock::now();
        benchmark::DoNotOptimize(&token);
        refetch_us.push_back(micros(t0, t1));
      },
      [&] {
        auto cache = std::make_unique<TokenCache>();
        TokenHandle handle = cache->handle(source);
        const auto t0 = steady_clock::now();
        const AccessToken& token = handle.get(in(seconds{10}));
        const auto t1 = steady_clock::now();
        benchmark::DoNotOptimize(&token);
        cold_us.push_back(micros(t0, t1));
      },
      [&] {
        // The same, counting the entry's creation (the refresher thread starts there).
        auto cache = std::make_unique<TokenCache>();
        const auto t0 = steady_clock::now();
        TokenHandle handle = cache->handle(source);
        const AccessToken& token = handle.get(in(seconds{10}));
        const auto t1 = steady_clock::now();
        benchmark::DoNotOptimize(&token);
        cold_with_handle_us.push_back(micros(t0, t1));
      },
      [&] {
        // The source alone (request, libcurl client, retry loop, parsing), no cache.
        const auto t0 = steady_clock::now();
        const AccessToken token = source->fetch({}, in(seconds{10}));
        const auto t1 = steady_clock::now();
        benchmark::DoNotOptimize(token.token.size());
        source_us.push_back(micros(t0, t1));
      },
      [&] {
        body.clear();
        const auto t0 = steady_clock::now();
        const CURLcode code = curl_easy_perform(curl);
        const auto t1 = steady_clock::now();
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (code != CURLE_OK || status != 200 || body.empty()) ++bad;
        bare_us.push_back(micros(t0, t1));
      },
  };
  // A different order every iteration, so that no measure always follows the same one.
  std::array<int, 5> order = {0, 1, 2, 3, 4};
  std::minstd_rand shuffler(42);
  for (auto _ : state) {
    std::shuffle(order.begin(), order.end(), shuffler);
    for (const int index : order) measures[static_cast<std::size_t>(index)]();
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  const double cold = median(cold_us);
  const double bare = median(bare_us);
  state.counters["cold_get_us"] = cold;
  state.counters["cold_handle_get_us"] = median(cold_with_handle_us);
  state.counters["source_fetch_us"] = median(source_us);
  state.counters["refetch_after_invalidate_us"] = median(refetch_us);
  state.counters["bare_curl_us"] = bare;
  state.counters["ratio"] = bare > 0 ? cold / bare : 0;
  state.counters["ratio_with_handle"] = bare > 0 ? median(cold_with_handle_us) / bare : 0;
  state.counters["bad_answers"] = bad;
}
BENCHMARK(BM_FirstToken_Paired)->Iterations(2000)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace azkms

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  delete azkms::g_emulator;
  return 0;
}
