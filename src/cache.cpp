// TokenCache: see include/azkms/cache.hpp for the rules. How they are kept:
//
// Hot path. Each entry publishes its token under its mutex and then bumps an atomic
// generation. A reader keeps, per thread, a few direct-mapped slots {entry id, generation,
// usable-until, token pointer}; when the entry's generation still matches its slot and the
// clock is before usable-until, the read is done: one acquire load, compares, one clock
// read. Only when the generation moved does the reader lock the entry (briefly: writers
// never hold it across a fetch) to refill its slot, copying a shared_ptr kept in a
// parallel thread-local array so the token outlives the entry's next publication. Entry
// ids are never reused, so a slot can never match a newer entry at the same address.
//
// Clock. With the process's system clock, the hot path reads CLOCK_REALTIME_COARSE
// directly (a few nanoseconds, a few milliseconds of resolution against a one-minute
// threshold); with any other clock it calls Clock::now(), so a ManualClock governs every
// rule in tests.
//
// Flights. At most one fetch per entry runs at a time. Callers without a usable token join
// it and wait on the entry's condition variable; with a non-system clock they wake every
// 2 ms of real time to compare the injected clock with their deadline (a polling interval,
// not a timing rule).
//
// Refresher. One thread per cache, started with the first entry (so that no caller's first
// get() pays for a thread start), sleeps until the earliest entry is due, or 30 s at most;
// only a due time earlier than its planned wake-up needs to wake it. With the system
// clock it sleeps on its own condition variable under the cache mutex, so a new earlier due
// time or the destructor wakes it with a plain notify. With any other clock it sleeps
// through Clock::sleep_until, and is woken with Clock::wake_all(), repeated until it has
// left its sleep, because a wake sent just before it starts sleeping would otherwise be
// lost. Its renewals run under a ScopedCancellation that the destructor cancels.
//
// fork(). Cores and entries register with fork_safety.hpp: their mutexes are held across
// fork() so that the child's copy is consistent, and the child forgets the refresher thread,
// the flights and the condition-variable waiters of the parent (after_fork_in_child).
#include "azkms/cache.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <new>
#include <thread>
#include <tuple>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "fork_safety.hpp"
#include "log.hpp"
#include "sha256.hpp"

namespace azkms {
namespace detail {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

std::int64_t to_ns(SystemTime t) noexcept {
  return duration_cast<nanoseconds>(t.time_since_epoch()).count();
}

std::int64_t coarse_realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

constexpr std::size_t kSlots = 8;  // power of two

// The refresher never sleeps longer than this. A new due time later than its planned wake
// then needs no wake-up at all (it re-plans when it wakes), so the caller that published a
// day-long or hour-long token does not pay for waking a thread on its first get().
constexpr std::chrono::seconds kLongestSleep{30};

struct FastSlot {
  std::uint64_t entry_id = 0;
  std::uint64_t generation = 0;
  std::int64_t usable_until_ns = 0;
  const AccessToken* token = nullptr;
};

// Trivially destructible, so access needs no initialisation guard.
thread_local std::array<FastSlot, kSlots> t_slots{};
// Keeps each slot's token alive; touched only when a slot is refilled.
thread_local std::array<std::shared_ptr<const AccessToken>, kSlots> t_owners;

milliseconds doubled(milliseconds initial, milliseconds max, int failures) {
  milliseconds value = initial;
  for (int i = 1; i < failures && value < max; ++i) value *= 2;
  return std::min(value, max);
}

std::string seconds_text(SystemTime::duration d) {
  return std::to_string(duration_cast<std::chrono::seconds>(d).count()) + " s";
}

}  // namespace

struct Flight {
  std::uint64_t seq = 0;
  bool done = false;
  // Cancelled because the cache is being destroyed: no outcome. Its waiters fetch themselves.
  bool abandoned = false;
  std::shared_ptr<const AccessToken> token;
  std::optional<Error> error;
  std::uint64_t generation = 0;  // generation it was published as; 0 when not published
  std::int64_t usable_until_ns = 0;
};

class CacheCore final : private ForkAware {
 public:
  using Key = std::tuple<const TokenSource*, std::string, IdentitySelector::Kind, std::string>;

  explicit CacheCore(CacheOptions opts)
      : options(std::move(opts)),
        clock(options.clock ? options.clock : Clock::system()),
        system_clock(clock.get() == Clock::system().get()) {
    options.clock = clock;
  }

  ~CacheCore() = default;  // fork_registration goes first
  CacheCore(const CacheCore&) = delete;
  CacheCore& operator=(const CacheCore&) = delete;

  // Tells the refresher that an entry is due at `when` (starting it if none runs).
  void schedule(SystemTime when);
  // Starts the refresher if none runs (in a forked child, the parent's did not come along).
  void resume();
  void shutdown();
  // Starts the refresher thread once; `lock` holds `mutex`.
  void start_refresher(std::unique_lock<std::mutex>& lock);
  std::shared_ptr<CacheEntry> entry(std::shared_ptr<TokenSource> source, TokenRequest request,
                                    const std::shared_ptr<CacheCore>& self);
  std::vector<std::shared_ptr<CacheEntry>> snapshot() const {
    std::lock_guard lock(mutex);
    std::vector<std::shared_ptr<CacheEntry>> list;
    list.reserve(entries.size());
    for (const auto& [key, e] : entries) list.push_back(e);
    return list;
  }

  void note_error(const std::string& message) {
    std::lock_guard lock(error_mutex);
    last_error = message;
  }
  std::string latest_error() const {
    std::lock_guard lock(error_mutex);
    return last_error;
  }

  CacheOptions options;
  const std::shared_ptr<Clock> clock;
  const bool system_clock;
  // Set by shutdown(): the refresher's fetch, which observes it, ends within about a second.
  const std::shared_ptr<Cancellation> cancellation = std::make_shared<Cancellation>();
  std::atomic<bool> stopping{false};

 private:
  void before_fork() override {
    mutex.lock();
    error_mutex.lock();
  }
  void after_fork_in_parent() override {
    error_mutex.unlock();
    mutex.unlock();
  }
  void after_fork_in_child() override;

  mutable std::mutex error_mutex;
  std::string last_error;

  void run();

  mutable std::mutex mutex;
  std::condition_variable acknowledged;  // the refresher left its sleep, or exited
  std::condition_variable wakeup;        // the refresher's sleep with the system clock
  std::map<Key, std::shared_ptr<CacheEntry>> entries;
  std::thread refresher;
  bool started = false;  // a refresher thread of this process runs (or ran, until shutdown)
  bool sleeping = false;
  bool exited = false;
  std::uint64_t wake_requests = 0;
  std::uint64_t sleep_epoch = 0;
  SystemTime planned_wake = SystemTime::max();
  // Last: registered once everything above exists, unregistered before any of it goes.
  ForkRegistration fork_registration{*this};
};

class CacheEntry final : private ForkAware {
 public:
  CacheEntry(std::uint64_t entry_id, std::shared_ptr<CacheCore> owner,
             std::shared_ptr<TokenSource> token_source, TokenRequest token_request)
      : id(entry_id),
        coarse_clock(owner->system_clock),
        clock(owner->clock.get()),
        core(std::move(owner)),
        source(std::move(token_source)),
        request(std::move(token_request)),
        source_name(source->name()) {}
  ~CacheEntry() = default;  // fork_registration goes first
  CacheEntry(const CacheEntry&) = delete;
  CacheEntry& operator=(const CacheEntry&) = delete;

  // Hot path, see TokenHandle::get.
  const AccessToken* try_fast() const noexcept {
    const std::uint64_t current = generation.load(std::memory_order_acquire);
    const FastSlot& slot = t_slots[id & (kSlots - 1)];
    if (slot.entry_id != id || slot.generation != current) return nullptr;
    const std::int64_t now = coarse_clock ? coarse_realtime_ns() : to_ns(clock->now());
    return now < slot.usable_until_ns ? slot.token : nullptr;
  }

  const AccessToken& get_slow(std::optional<Deadline> deadline);
  std::shared_ptr<const AccessToken> get_shared(std::optional<Deadline> deadline);
  std::shared_ptr<const AccessToken> force_refresh(Deadline deadline);
  void invalidate(std::string_view claims);
  // Refresher: renews when due. Returns the next due time, if any.
  std::optional<SystemTime> refresh_if_due();
  CacheStats stats() const;

  // Read on the hot path; written only under `mutex` when a token is published or dropped.
  alignas(64) const std::uint64_t id;
  std::atomic<std::uint64_t> generation{1};
  const bool coarse_clock;
  Clock* const clock;

  alignas(64) const std::shared_ptr<CacheCore> core;
  const std::shared_ptr<TokenSource> source;
  const TokenRequest request;
  const std::string source_name;

 private:
  // Returns the current token when usable; fills the calling thread's slot.
  std::shared_ptr<const AccessToken> usable_current(SystemTime now);
  // Takes the flight's result: fills the slot, returns the token or throws.
  std::shared_ptr<const AccessToken> take(const Flight& flight);
  // Waits (mutex held by `lock`) until the flight is done or the deadline passes.
  void wait_for(std::unique_lock<std::mutex>& lock, const Flight& flight, Deadline deadline);
  // Runs one fetch as the flight's leader; `lock` is held on entry and on return.
  std::shared_ptr<Flight> run_flight(std::unique_lock<std::mutex>& lock, Deadline deadline);
  void publish(std::shared_ptr<const AccessToken> token, const RenewalPlan& plan);
  // Notes the current token as refused (mutex held), for the revocation protocol.
  void remember_refused();
  // The failure a token that arrived with no more than min_remaining left counts as: what the
  // callers after those that waited for it get (all of them, when it had expired already).
  Error short_lived_error(const AccessToken& token, SystemTime now) const;
  void report(const CacheEvent& event) const;
  // In a forked child, the first slow-path call starts the child's own refresher.
  void resume_after_fork() {
    if (resume_pending.load(std::memory_order_relaxed) && resume_pending.exchange(false)) {
      core->resume();
    }
  }

  void before_fork() override { mutex.lock(); }
  void after_fork_in_parent() override { mutex.unlock(); }
  void after_fork_in_child() override;
  Deadline default_deadline() const { return clock->steady_now() + core->options.default_timeout; }

  mutable std::mutex mutex;
  std::condition_variable flight_done;
  std::shared_ptr<const AccessToken> current;
  SystemTime usable_until{};
  std::optional<SystemTime> next_background;  // when the refresher should renew
  std::shared_ptr<Flight> flight;
  std::uint64_t flight_seq = 0;
  std::uint64_t min_trusted_seq = 0;  // flights started before an invalidate() are not published
  // SHA-256 (hex) of the token last refused through invalidate() or force_refresh(): sent with
  // the next fetch (TokenRequest::token_sha256_to_refresh) until a token arrives.
  std::string refused_token_sha256;
  // The claims challenge given to invalidate(): sent with the next fetch until a token arrives.
  std::string pending_claims;
  int background_failures = 0;
  int foreground_failures = 0;
  std::optional<Error> last_fetch_error;  // served during the fail-fast window
  SystemTime error_until{};
  CacheStats counters;
  std::atomic<bool> resume_pending{false};
  // Last: registered once everything above exists, unregistered before any of it goes.
  ForkRegistration fork_registration{*this};
};

// ---- CacheEntry -------------------------------------------------------------------------

std::shared_ptr<const AccessToken> CacheEntry::usable_current(SystemTime now) {
  if (!current || now >= usable_until) return nullptr;
  const std::size_t index = id & (kSlots - 1);
  t_owners[index] = current;
  t_slots[index] =
      FastSlot{id, generation.load(std::memory_order_relaxed), to_ns(usable_until), current.get()};
  return current;
}

std::shared_ptr<const AccessToken> CacheEntry::take(const Flight& f) {
  if (!f.token) throw Error(*f.error);
  const std::size_t index = id & (kSlots - 1);
  t_owners[index] = f.token;
  // An unpublished token (not reusable, or fetched before an invalidate) matches no slot.
  t_slots[index] =
      FastSlot{f.generation != 0 ? id : 0, f.generation, f.usable_until_ns, f.token.get()};
  return f.token;
}

void CacheEntry::wait_for(std::unique_lock<std::mutex>& lock, const Flight& f, Deadline deadline) {
  struct Waiting {
    std::uint64_t& count;
    explicit Waiting(std::uint64_t& c) : count(c) { ++count; }
    ~Waiting() { --count; }
    Waiting(const Waiting&) = delete;
    Waiting& operator=(const Waiting&) = delete;
  } waiting(counters.waiting);  // guarded by `mutex`, which `lock` holds whenever it changes
  ++counters.waits;
  while (!f.done) {
    const SteadyTime now = clock->steady_now();
    if (now >= deadline) {
      throw Error(ErrorCode::kTimeout, "the caller's deadline passed while the token for " +
                                           request.resource + " from " + source_name +
                                           " was being fetched")
          .with_source(source_name);
    }
    if (coarse_clock) {
      flight_done.wait_until(lock, deadline);
    } else {
      flight_done.wait_for(lock, std::min<SteadyTime::duration>(deadline - now, milliseconds{2}));
    }
  }
}

void CacheEntry::publish(std::shared_ptr<const AccessToken> token, const RenewalPlan& plan) {
  current = std::move(token);
  usable_until = plan.usable_until;
  next_background = plan.reusable ? std::optional(plan.refresh_at) : std::nullopt;
  generation.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<Flight> CacheEntry::run_flight(std::unique_lock<std::mutex>& lock,
                                               Deadline deadline) {
  auto f = std::make_shared<Flight>();
  f->seq = ++flight_seq;
  flight = f;
  ++counters.upstream_requests;
  TokenRequest asked = request;
  asked.token_sha256_to_refresh = refused_token_sha256;
  asked.claims = pending_claims;
  lock.unlock();

  std::shared_ptr<const AccessToken> token;
  std::optional<Error> error;
  try {
    token = std::make_shared<const AccessToken>(source->fetch(asked, deadline));
  } catch (const Error& e) {
    error = e;
  } catch (const std::exception& e) {
    error = Error(ErrorCode::kCallback, std::string("token source failed: ") + e.what())
                .with_source(source_name);
  } catch (...) {
    error = Error(ErrorCode::kCallback, "token source failed with a non-standard exception")
                .with_source(source_name);
  }
  const SystemTime now = clock->now();

  lock.lock();
  if (token) {
    refused_token_sha256.clear();
    pending_claims.clear();
  }
  const auto& o = core->options;
  CacheEvent event;
  event.source = source_name;
  event.resource = request.resource;
  std::optional<SystemTime> schedule;
  const bool had_usable = current && now < usable_until;
  // A token that cannot be reused counts as a failure for everyone after the callers that
  // waited for it; one that has expired already is not even given to them.
  std::optional<Error> failure = error;
  RenewalPlan plan;
  if (token) {
    plan = plan_renewal(*token, now, o);
    if (!plan.reusable) {
      failure = short_lived_error(*token, now);
      if (token->expires_on <= now) token.reset();
    }
  }
  if (!token && error && error->code() == ErrorCode::kCancelled && core->stopping.load()) {
    // The cache is being destroyed: not the endpoint's failure. No backoff and no event; a
    // caller that waited for it fetches with its own deadline.
    f->abandoned = true;
  } else if (!failure) {
    if (f->seq >= min_trusted_seq) {
      if (had_usable) ++counters.renewals;
      publish(token, plan);
      f->generation = generation.load(std::memory_order_relaxed);
      f->usable_until_ns = to_ns(usable_until);
      schedule = next_background;
      event.usable_until = usable_until;
      event.next_attempt = next_background;
    }
    background_failures = 0;
    foreground_failures = 0;
    last_fetch_error.reset();
    event.kind = CacheEvent::Kind::kFetched;
  } else {
    counters.last_error = failure->what();
    event.error = counters.last_error;
    if (had_usable) {
      ++counters.refresh_failures;
      ++background_failures;
      const auto remaining = duration_cast<milliseconds>(usable_until - now);
      auto delay =
          std::min(doubled(o.retry_initial, o.retry_max, background_failures), remaining / 2);
      delay = std::max(delay, o.min_refresh_interval);
      next_background = now + delay < usable_until ? std::optional(now + delay) : std::nullopt;
      schedule = next_background;
      event.kind = CacheEvent::Kind::kRefreshFailed;
      event.consecutive_failures = background_failures;
      event.usable_until = usable_until;
      event.next_attempt = next_background;
    } else {
      ++counters.fetch_failures;
      ++foreground_failures;
      next_background.reset();
      last_fetch_error = failure;
      error_until =
          now + doubled(o.error_backoff_initial, o.error_backoff_max, foreground_failures);
      event.kind = CacheEvent::Kind::kFetchFailed;
      event.consecutive_failures = foreground_failures;
    }
  }
  f->token = std::move(token);
  f->error = f->token ? std::nullopt : std::move(failure);
  f->done = true;
  // Another flight in its place can only be one a forked child started after forgetting this
  // one (see after_fork_in_child), when fork() was called from inside the source.
  if (flight == f) flight = nullptr;
  flight_done.notify_all();
  lock.unlock();

  if (!f->abandoned) {
    // Outside the entry's lock, like everything that locks elsewhere: no cache lock is ever
    // taken inside another, so fork()'s before_fork() hooks can take them in any order.
    if (event.kind != CacheEvent::Kind::kFetched) core->note_error(event.error);
    if (schedule) core->schedule(*schedule);
    report(event);
  }
  lock.lock();
  return f;
}

Error CacheEntry::short_lived_error(const AccessToken& token, SystemTime now) const {
  const auto seconds = [](SystemTime::duration d) {
    return std::to_string(duration_cast<std::chrono::seconds>(d).count());
  };
  const auto epoch = [&](SystemTime t) { return seconds(t.time_since_epoch()); };
  const std::string min_remaining = std::to_string(core->options.min_remaining.count());
  std::string message = source_name + " returned a token for " + request.resource;
  if (token.expires_on <= now) {
    message += " that had already expired when it arrived (expiry " + epoch(token.expires_on) +
               ", local clock " + epoch(now) +
               ", in Unix seconds); check the local clock, which may be wrong";
  } else {
    message += " that expires in " + seconds(token.expires_on - now) + " s, not more than the " +
               min_remaining +
               " s a token must have left to be used; the callers that waited for it got it, "
               "but it is not reused and the endpoint is asked again only after a backoff, as "
               "after a failure (check the endpoint's token lifetime and the local clock)";
  }
  return Error(ErrorCode::kMalformedResponse, std::move(message)).with_source(source_name);
}

void CacheEntry::report(const CacheEvent& event) const {
  switch (event.kind) {
    case CacheEvent::Kind::kFetched:
      log(LogLevel::kDebug,
          "token cache: token for " + event.resource + " from " + event.source + " received" +
              (event.next_attempt
                   ? "; renewal in " + seconds_text(*event.next_attempt - clock->now())
                   : std::string()));
      break;
    case CacheEvent::Kind::kRefreshFailed:
      log(LogLevel::kWarning,
          "token cache: renewal of the token for " + event.resource + " from " + event.source +
              " failed (" + std::to_string(event.consecutive_failures) +
              " in a row): " + event.error + "; the current token stays in use for " +
              seconds_text(*event.usable_until - clock->now()) +
              (event.next_attempt
                   ? "; next try in " + seconds_text(*event.next_attempt - clock->now())
                   : "; no time left for another background try"));
      break;
    case CacheEvent::Kind::kFetchFailed:
      log(LogLevel::kError, "token cache: no usable token for " + event.resource + " from " +
                                event.source + ": " + event.error);
      break;
  }
  if (core->options.on_event) {
    try {
      core->options.on_event(event);
    } catch (...) {
      // A throwing hook must not break the cache or the refresher.
    }
  }
}

const AccessToken& CacheEntry::get_slow(std::optional<Deadline> deadline) {
  return *get_shared(deadline);
}

std::shared_ptr<const AccessToken> CacheEntry::get_shared(std::optional<Deadline> deadline) {
  resume_after_fork();
  std::unique_lock lock(mutex);
  for (;;) {
    const SystemTime now = clock->now();
    if (auto token = usable_current(now)) return token;
    if (flight) {
      const std::shared_ptr<Flight> f = flight;
      if (!deadline) deadline = default_deadline();
      wait_for(lock, *f, *deadline);
      if (f->seq >= min_trusted_seq && !f->abandoned) return take(*f);
      continue;  // started before an invalidate(), or cancelled: look again
    }
    if (last_fetch_error && now < error_until) {
      ++counters.errors_from_backoff;
      throw Error(*last_fetch_error);
    }
    if (!deadline) deadline = default_deadline();
    return take(*run_flight(lock, *deadline));
  }
}

std::shared_ptr<const AccessToken> CacheEntry::force_refresh(Deadline deadline) {
  resume_after_fork();
  std::unique_lock lock(mutex);
  remember_refused();
  const std::uint64_t wanted = flight_seq + 1;  // a flight started from now on
  for (;;) {
    if (flight) {
      const std::shared_ptr<Flight> f = flight;
      wait_for(lock, *f, deadline);
      if (f->seq >= wanted && !f->abandoned) return take(*f);
      continue;
    }
    return take(*run_flight(lock, deadline));
  }
}

void CacheEntry::remember_refused() {
  if (current) refused_token_sha256 = sha256_hex(current->token.reveal());
}

void CacheEntry::invalidate(std::string_view claims) {
  std::lock_guard lock(mutex);
  remember_refused();
  pending_claims = claims;
  current.reset();
  usable_until = SystemTime{};
  next_background.reset();
  min_trusted_seq = flight_seq + 1;
  ++counters.invalidations;
  generation.fetch_add(1, std::memory_order_release);
}

std::optional<SystemTime> CacheEntry::refresh_if_due() {
  std::unique_lock lock(mutex);
  if (flight || !next_background) return std::nullopt;  // a finishing flight reschedules
  if (*next_background > clock->now()) return next_background;
  next_background.reset();
  run_flight(lock, clock->steady_now() + core->options.refresh_timeout);
  return next_background;
}

CacheStats CacheEntry::stats() const {
  std::lock_guard lock(mutex);
  CacheStats s = counters;
  s.entries = 1;
  return s;
}

// The thread running the flight and those waiting for it were the parent's; nobody would ever
// finish the flight here, so it is forgotten and the next caller starts a fetch of the child's
// own. The condition variable is made anew rather than reused: glibc's would go on counting the
// parent's waiters, and a notify could wait for them forever. (The old one is not destroyed,
// for the same reason; reusing its storage is allowed, nothing depends on its destructor.)
// A usable token stays: it was fetched for this entry's identity, and reusing it is what a
// pre-fork server wants.
void CacheEntry::after_fork_in_child() {
  new (&flight_done) std::condition_variable();
  if (flight) {
    flight.reset();  // its leader's copy keeps it alive: nothing is freed here
    // The refresher clears next_background when it starts a renewal: renew at once instead.
    if (current && !next_background) next_background = SystemTime{};
  }
  counters.waiting = 0;
  // Every reader's next get() takes the slow path once, which starts the child's refresher.
  resume_pending.store(true, std::memory_order_relaxed);
  generation.fetch_add(1, std::memory_order_release);
  mutex.unlock();
}

// ---- CacheCore --------------------------------------------------------------------------

std::shared_ptr<CacheEntry> CacheCore::entry(std::shared_ptr<TokenSource> source,
                                             TokenRequest request,
                                             const std::shared_ptr<CacheCore>& self) {
  static std::atomic<std::uint64_t> next_id{1};
  Key key{source.get(), request.resource, request.identity.kind(), request.identity.value()};
  {
    std::lock_guard lock(mutex);
    auto it = entries.find(key);
    if (it != entries.end()) return it->second;
  }
  // Made (and, when another thread was first, destroyed) outside `mutex`: an entry registers
  // for fork() under the registry's lock, which is taken before this one.
  auto created = std::make_shared<CacheEntry>(next_id.fetch_add(1), self, std::move(source),
                                              std::move(request));
  std::unique_lock lock(mutex);
  const auto [it, inserted] = entries.emplace(std::move(key), created);
  // Started here, with the first entry, so that no caller's first get() pays for it.
  if (inserted) start_refresher(lock);
  return it->second;
}

void CacheCore::start_refresher(std::unique_lock<std::mutex>& lock) {
  (void)lock;  // held by the caller
  if (started || stopping.load()) return;
  started = true;
  exited = false;
  refresher = std::thread([this] { run(); });
}

void CacheCore::resume() {
  std::unique_lock lock(mutex);
  start_refresher(lock);
}

// The refresher, and any thread waiting for it, were the parent's. Its std::thread is
// forgotten (destroying it would terminate the program, joining it would wait forever) and the
// condition variables are made anew (see CacheEntry::after_fork_in_child); resume() or the
// next schedule() starts a refresher of the child's own. A renewal it was running is the
// entry's business (its flight is forgotten there).
void CacheCore::after_fork_in_child() {
  if (refresher.joinable()) new (&refresher) std::thread();
  new (&wakeup) std::condition_variable();
  new (&acknowledged) std::condition_variable();
  started = false;
  sleeping = false;
  exited = false;
  planned_wake = SystemTime::max();
  error_mutex.unlock();
  mutex.unlock();
}

void CacheCore::schedule(SystemTime when) {
  std::unique_lock lock(mutex);
  if (stopping.load()) return;
  ++wake_requests;
  start_refresher(lock);
  if (!sleeping || when >= planned_wake) return;  // it looks again before sleeping
  if (system_clock) {
    wakeup.notify_all();  // it waits on `wakeup` under `mutex`: nothing can be lost
    return;
  }
  // It sleeps in Clock::sleep_until, outside `mutex`: a wake_all() sent just before it got
  // there would be lost, so repeat until it has left that sleep.
  const std::uint64_t epoch = sleep_epoch;
  while (sleeping && sleep_epoch == epoch) {
    lock.unlock();
    clock->wake_all();
    lock.lock();
    acknowledged.wait_for(lock, milliseconds{1}, [&] { return !sleeping || sleep_epoch != epoch; });
  }
}

void CacheCore::run() {
  // Renewals run under the cache's cancellation: shutdown() ends one in flight at once.
  const ScopedCancellation cancellable(cancellation);
  std::unique_lock lock(mutex);
  while (!stopping.load()) {
    const std::uint64_t seen = wake_requests;
    lock.unlock();
    SystemTime next = clock->now() + kLongestSleep;
    for (const auto& e : snapshot()) {
      if (stopping.load()) break;
      if (auto due = e->refresh_if_due()) next = std::min(next, *due);
    }
    lock.lock();
    if (stopping.load()) break;
    if (wake_requests != seen) continue;
    // Steady time first: if the clock moves between the two reads, the wake-up comes early
    // (and the loop looks again), never late.
    const SteadyTime steady = clock->steady_now();
    const SystemTime now = clock->now();
    if (next <= now) continue;
    planned_wake = next;
    sleeping = true;
    ++sleep_epoch;
    const SteadyTime until = steady + (next - now);
    if (system_clock) {
      // The system clock's steady time is std::chrono::steady_clock's.
      wakeup.wait_until(lock, until, [&] { return stopping.load() || wake_requests != seen; });
    } else {
      lock.unlock();
      clock->sleep_until(until);
      lock.lock();
    }
    sleeping = false;
    planned_wake = SystemTime::max();
    acknowledged.notify_all();
  }
  exited = true;
  acknowledged.notify_all();
}

void CacheCore::shutdown() {
  std::unique_lock lock(mutex);
  stopping.store(true);
  // A renewal in flight ends within about a second (its transfer observes the cancellation)
  // instead of running to its deadline: exit() must not wait for a hung endpoint.
  cancellation->cancel();
  if (started) {
    while (!exited) {
      if (system_clock) wakeup.notify_all();
      // Wakes the refresher's own sleep (other clocks), and a renewal waiting between two
      // attempts on its source's clock: usually the process's, or the cache's in tests.
      lock.unlock();
      clock->wake_all();
      if (!system_clock) Clock::system()->wake_all();
      lock.lock();
      acknowledged.wait_for(lock, milliseconds{1}, [&] { return exited; });
    }
    lock.unlock();
    refresher.join();
    lock.lock();
  }
  // Entries hold the core; dropping them here breaks the cycle. Handles keep theirs.
  auto dropped = std::move(entries);
  entries.clear();
  lock.unlock();
}

}  // namespace detail

// ---- plan_renewal -----------------------------------------------------------------------

RenewalPlan plan_renewal(const AccessToken& token, SystemTime received,
                         const CacheOptions& options) {
  RenewalPlan plan;
  plan.usable_until = token.expires_on - options.min_remaining;
  const SystemTime::duration window = plan.usable_until - received;
  if (window <= SystemTime::duration::zero()) {
    plan.refresh_at = received;
    plan.reusable = false;
    return plan;
  }
  plan.reusable = true;
  const SystemTime::duration lifetime = token.expires_on - received;
  const SystemTime latest =
      plan.usable_until - std::min<SystemTime::duration>(options.renewal_margin, window / 2);
  const SystemTime earliest =
      received + std::min<SystemTime::duration>(options.min_refresh_interval, window / 2);
  SystemTime at;
  if (token.refresh_on) {
    at = std::min(*token.refresh_on, latest);
  } else if (lifetime >= options.half_life_from) {
    at = received + lifetime / 2;
  } else {
    at = latest;
  }
  plan.refresh_at = std::max(at, earliest);
  return plan;
}

// ---- TokenHandle ------------------------------------------------------------------------

namespace {
[[noreturn]] void empty_handle() {
  throw Error(ErrorCode::kConfiguration, "TokenHandle is empty: get one from TokenCache::handle");
}
}  // namespace

const AccessToken& TokenHandle::get(Deadline deadline) {
  if (!entry_) empty_handle();
  if (const AccessToken* token = entry_->try_fast()) return *token;
  return entry_->get_slow(deadline);
}

const AccessToken& TokenHandle::get() {
  if (!entry_) empty_handle();
  if (const AccessToken* token = entry_->try_fast()) return *token;
  return entry_->get_slow(std::nullopt);
}

std::shared_ptr<const AccessToken> TokenHandle::get_shared(Deadline deadline) {
  if (!entry_) empty_handle();
  return entry_->get_shared(deadline);
}

std::shared_ptr<const AccessToken> TokenHandle::get_shared() {
  if (!entry_) empty_handle();
  return entry_->get_shared(std::nullopt);
}

void TokenHandle::invalidate(std::string_view claims) {
  if (!entry_) empty_handle();
  entry_->invalidate(claims);
}

std::shared_ptr<const AccessToken> TokenHandle::force_refresh(Deadline deadline) {
  if (!entry_) empty_handle();
  return entry_->force_refresh(deadline);
}

CacheStats TokenHandle::stats() const {
  if (!entry_) empty_handle();
  return entry_->stats();
}

const TokenRequest& TokenHandle::request() const {
  if (!entry_) empty_handle();
  return entry_->request;
}

// ---- TokenCache -------------------------------------------------------------------------

TokenCache::TokenCache(CacheOptions options)
    : core_(std::make_shared<detail::CacheCore>(std::move(options))) {}

TokenCache::~TokenCache() { core_->shutdown(); }

TokenHandle TokenCache::handle(std::shared_ptr<TokenSource> source, TokenRequest request) {
  if (!source) throw Error(ErrorCode::kConfiguration, "TokenCache::handle needs a token source");
  return TokenHandle(core_->entry(std::move(source), std::move(request), core_));
}

CacheStats TokenCache::stats() const {
  CacheStats total;
  for (const auto& e : core_->snapshot()) {
    const CacheStats s = e->stats();
    total.entries += 1;
    total.upstream_requests += s.upstream_requests;
    total.renewals += s.renewals;
    total.refresh_failures += s.refresh_failures;
    total.fetch_failures += s.fetch_failures;
    total.errors_from_backoff += s.errors_from_backoff;
    total.invalidations += s.invalidations;
    total.waiting += s.waiting;
    total.waits += s.waits;
  }
  total.last_error = core_->latest_error();
  return total;
}

const CacheOptions& TokenCache::options() const { return core_->options; }

// ---- CachedTokenSource ------------------------------------------------------------------

CachedTokenSource::CachedTokenSource(std::shared_ptr<TokenSource> inner,
                                     std::shared_ptr<TokenCache> cache)
    : inner_(std::move(inner)), cache_(cache ? std::move(cache) : std::make_shared<TokenCache>()) {
  if (!inner_) throw Error(ErrorCode::kConfiguration, "CachedTokenSource needs a token source");
}

SourceKind CachedTokenSource::kind() const { return inner_->kind(); }
std::string CachedTokenSource::name() const { return inner_->name(); }

AccessToken CachedTokenSource::fetch(const TokenRequest& request, Deadline deadline) {
  return *cache_->handle(inner_, request).get_shared(deadline);
}

TokenHandle CachedTokenSource::handle(TokenRequest request) {
  return cache_->handle(inner_, std::move(request));
}

}  // namespace azkms
