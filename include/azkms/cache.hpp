// TokenCache: tokens from memory on the request path, renewed before anyone waits, and an
// identity endpoint that is asked as rarely as the tokens allow.
//
// A TokenCache owns entries keyed by (token source, resource, identity selector) and one
// background refresher thread (started with the first entry, stopped by the
// destructor). TokenCache::handle() looks the entry up once; TokenHandle::get() is the hot
// path: with a usable token cached it reads one atomic, a thread-local slot and the clock,
// and takes no lock, makes no heap allocation and writes no shared memory.
//
// The rules, all timed by the injected Clock (CacheOptions::clock):
//
//  - Usable. A token is handed out only while more than `min_remaining` (default one
//    minute, the MongoDB specification's rule) is left before it expires. A token that
//    arrives with no more than that left goes to the callers that waited for it (unless it
//    has expired already), and then counts as a failure of the endpoint: a renewal keeps the
//    current token and retries later, and without a usable token the fail-fast window below
//    applies (kMalformedResponse), so that short-lived answers never turn every call into an
//    upstream request.
//  - Renewal time (plan_renewal()): the endpoint's refresh_in when it gave one; otherwise
//    half the lifetime for tokens living `half_life_from` (2 h) or more; otherwise
//    `renewal_margin` (5 min) before the token stops being usable, or halfway through the
//    usable window when that is shorter. A 70 s token is usable for 10 s and renewed after
//    5 s: one upstream request per 5 s however many callers there are, and no caller ever
//    finds it unusable while the endpoint answers. Renewal never comes earlier than
//    `min_refresh_interval` after the token arrived (bounded by half the window), and a
//    refresh_in beyond the latest safe point is brought forward to it.
//  - No stall. While a usable token exists, renewal happens in the background refresher;
//    callers keep getting the current token and never wait for it.
//  - Single flight. Callers that find no usable token share one upstream request: the
//    first one runs it (with its own deadline), the others wait for its token or its
//    error, each until its own deadline. A renewal already in flight is joined the same way.
//  - Stale-if-error. When a renewal fails while the token is still usable, callers keep
//    getting it; the refresher tries again after `retry_initial`, doubling up to
//    `retry_max`, but never later than halfway to the end of the usable window, so that
//    tries get denser as it closes. Failures are counted (CacheStats), logged through
//    azkms::log and reported to CacheOptions::on_event.
//  - No poisoned state. When a fetch fails and no usable token exists, the callers that
//    shared it get its error. Calls in the next `error_backoff_initial` (doubling with each
//    consecutive failure up to `error_backoff_max`) get the same error at once without an
//    upstream request, so a failing endpoint is not hammered; the first call after that
//    window tries again, and one success clears everything.
//  - invalidate() drops the token (after Key Vault answered 401 to it): the next get()
//    fetches, and a fetch that was already in flight is not trusted to replace it.
//    force_refresh() fetches a new token now (after a role change) while other callers keep
//    the current one until the new one arrives.
//
// Lifetimes: a TokenHandle keeps its entry (and the source) alive and stays safe to use
// after its TokenCache is destroyed; without the refresher it then renews only when a
// caller finds no usable token. The destructor of TokenCache stops the refresher at once
// when it is idle, and cancels a renewal it is running (see ScopedCancellation in http.hpp:
// an HTTP exchange ends within about a second, a wait between retries on the process clock
// at once), so that exit() never waits for a hung endpoint. Tokens stay in memory while a
// thread's slot refers to them (until the thread's slot is reused or the thread exits), even
// after invalidate().
//
// fork(): a child keeps the tokens its parent cached (they are for the same identities) but
// nothing of the parent's threads: a fetch a parent thread was running is forgotten (the
// child's next caller fetches its own), and the child starts a refresher of its own on its
// first call that finds no token in its thread's slot.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "azkms/clock.hpp"
#include "azkms/export.h"
#include "azkms/source.hpp"
#include "azkms/token.hpp"

namespace azkms {

// What happened to an entry; given to CacheOptions::on_event. No secrets in it.
struct AZKMS_EXPORT CacheEvent {
  enum class Kind : std::uint8_t {
    kFetched,        // a token arrived (first fetch, renewal, or after invalidate)
    kRefreshFailed,  // a renewal failed; the still-usable token keeps being served
    kFetchFailed,    // a fetch failed with no usable token: callers got the error
  };
  Kind kind = Kind::kFetched;
  std::string source;    // the source's display name
  std::string resource;  // the token request's resource
  std::string error;     // the failure's message (empty for kFetched)
  int consecutive_failures = 0;
  std::optional<SystemTime> usable_until;  // of the token being served, if any
  std::optional<SystemTime> next_attempt;  // when the refresher tries again, if it will
};

struct AZKMS_EXPORT CacheOptions {
  std::shared_ptr<Clock> clock;  // null: Clock::system()
  std::chrono::seconds min_remaining{60};
  std::chrono::hours half_life_from{2};
  std::chrono::seconds renewal_margin{300};
  std::chrono::milliseconds min_refresh_interval{1'000};
  // Deadline of each background renewal, and of get() called without a deadline.
  std::chrono::milliseconds refresh_timeout{60'000};
  std::chrono::milliseconds default_timeout{30'000};
  // Renewal retries while a usable token is served.
  std::chrono::milliseconds retry_initial{10'000};
  std::chrono::milliseconds retry_max{300'000};
  // Fail-fast window after a failed fetch when no usable token exists.
  std::chrono::milliseconds error_backoff_initial{1'000};
  std::chrono::milliseconds error_backoff_max{15'000};
  // Called on the thread that ran the fetch, without any cache lock held. Must not block
  // for long (it may run on the refresher thread).
  std::function<void(const CacheEvent&)> on_event;
};

// Counters of one entry (TokenHandle::stats) or a whole cache (TokenCache::stats).
struct AZKMS_EXPORT CacheStats {
  std::uint64_t entries = 0;
  std::uint64_t upstream_requests = 0;    // fetches started (each may make several HTTP attempts)
  std::uint64_t renewals = 0;             // fetches that replaced a still-usable token
  std::uint64_t refresh_failures = 0;     // failed fetches while a usable token was served
  std::uint64_t fetch_failures = 0;       // failed fetches with no usable token left
  std::uint64_t errors_from_backoff = 0;  // calls answered with the last error, no request
  std::uint64_t invalidations = 0;
  std::uint64_t waiting = 0;  // callers waiting right now for a fetch in flight
  std::uint64_t waits = 0;    // callers that ever waited for a fetch (none while a token is usable)
  std::string last_error;     // most recent failure's message (no secrets); empty if none
};

// When a token received at `received` stops being handed out, and when to renew it.
struct AZKMS_EXPORT RenewalPlan {
  SystemTime usable_until{};
  SystemTime refresh_at{};
  // False when the token arrived with no more than min_remaining left: the callers that
  // waited for it get it, but it is not reused.
  bool reusable = false;
};
[[nodiscard]] AZKMS_EXPORT RenewalPlan plan_renewal(const AccessToken& token, SystemTime received,
                                                    const CacheOptions& options);

namespace detail {
class CacheEntry;
class CacheCore;
}  // namespace detail

// A cheap, copyable reference to one cache entry. Thread-safe.
class AZKMS_EXPORT TokenHandle {
 public:
  TokenHandle() = default;

  // A usable token, fetched (single flight) if none is cached. Throws azkms::Error: the
  // fetch's error, the last error during the fail-fast window, or kTimeout when the deadline
  // passes while waiting. The reference stays valid until the calling thread next calls
  // get(), get_shared() or force_refresh() on any TokenHandle, or exits; use get_shared()
  // or a copy to keep a token longer.
  const AccessToken& get(Deadline deadline);
  // As get(deadline), with CacheOptions::default_timeout.
  const AccessToken& get();
  [[nodiscard]] std::shared_ptr<const AccessToken> get_shared(Deadline deadline);
  [[nodiscard]] std::shared_ptr<const AccessToken> get_shared();

  // Drops the cached token: the next get() fetches a new one. `claims`: the resource's claims
  // challenge (JSON), if it sent one with its refusal; the next fetch passes it on.
  void invalidate(std::string_view claims = {});
  // Fetches a new token now (joining a fetch started after this call, never one started
  // before) and returns it. Others keep the current token until the new one arrives.
  std::shared_ptr<const AccessToken> force_refresh(Deadline deadline);

  [[nodiscard]] CacheStats stats() const;
  [[nodiscard]] const TokenRequest& request() const;
  [[nodiscard]] explicit operator bool() const noexcept { return entry_ != nullptr; }

 private:
  friend class TokenCache;
  explicit TokenHandle(std::shared_ptr<detail::CacheEntry> entry) : entry_(std::move(entry)) {}
  std::shared_ptr<detail::CacheEntry> entry_;
};

class AZKMS_EXPORT TokenCache {
 public:
  explicit TokenCache(CacheOptions options = {});
  ~TokenCache();
  TokenCache(const TokenCache&) = delete;
  TokenCache& operator=(const TokenCache&) = delete;

  // The entry for (source, request.resource, request.identity), created on first use. The
  // source is identified by its address: pass the same shared_ptr to share an entry.
  [[nodiscard]] TokenHandle handle(std::shared_ptr<TokenSource> source, TokenRequest request = {});

  [[nodiscard]] CacheStats stats() const;
  [[nodiscard]] const CacheOptions& options() const;

 private:
  std::shared_ptr<detail::CacheCore> core_;
};

// A TokenSource that answers from a cache: compose it wherever a source is expected. Each
// fetch() looks the entry up; keep handle() for the hot path.
class AZKMS_EXPORT CachedTokenSource final : public TokenSource {
 public:
  // A null cache means a cache of its own with default options.
  explicit CachedTokenSource(std::shared_ptr<TokenSource> inner,
                             std::shared_ptr<TokenCache> cache = nullptr);

  [[nodiscard]] SourceKind kind() const override;
  [[nodiscard]] std::string name() const override;
  AccessToken fetch(const TokenRequest& request, Deadline deadline) override;

  [[nodiscard]] TokenHandle handle(TokenRequest request = {});
  [[nodiscard]] const std::shared_ptr<TokenCache>& cache() const noexcept { return cache_; }
  [[nodiscard]] const std::shared_ptr<TokenSource>& inner() const noexcept { return inner_; }

 private:
  std::shared_ptr<TokenSource> inner_;
  std::shared_ptr<TokenCache> cache_;
};

}  // namespace azkms
