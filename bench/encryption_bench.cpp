// Encryption throughput: explicit encrypt + decrypt through CryptSession against the local
// emulators, the share of time spent in azkms itself, and how many token requests a run makes.
//
// Setup (once, not measured): the identity emulator and the Key Vault emulator (HTTPS, its CA
// trusted explicitly) on loopback; a KmsProviders registry with "azure" bound to the real App
// Service source (through the registry's TokenCache); a CryptSession on a FileKeyVault; one data
// key created with an Azure master key; one encrypt + decrypt to warm up. libmongocrypt keeps
// the decrypted data key for a minute per session, so after the warm-up a pair needs neither
// Key Vault nor a token; every figure below counts the requests that did happen.
//
// The baseline ("raw") is the same pair done on libmongocrypt directly: its own mongocrypt_t
// configured up front with a fixed {"azure": {"accessToken": ...}} (the token the registry got,
// never printed), raw mongocrypt_ctx calls, the data key document fed from memory, and a bare
// libcurl exchange for Key Vault if libmongocrypt asks (only at warm-up, or when its key cache
// expires). It is deliberately lean (reused buffers, the encryption's output fed straight into
// the decryption), so the overhead measured against it is an upper bound.
//
// Benchmarks, in order:
//   BM_PairAzkms / BM_PairRaw   pairs per second on each path;
//   BM_Overhead                 both paths in alternating blocks (order swapped every round),
//                               median over rounds of the azkms/raw time ratio (wall clock and
//                               thread CPU time): the share of time spent in azkms is that
//                               ratio minus 1;
//   BM_CredentialsDocument      a kmsProviders document from the cached token (what answering
//                               NEED_KMS_CREDENTIALS costs azkms);
//   BM_TokenRequestsWarm        10 000 operations on the warm session: token, credential and
//                               Key Vault requests;
//   BM_TokenRequestsCold        every operation in a new CryptSession (empty libmongocrypt key
//                               cache): each asks for credentials and unwraps at Key Vault, the
//                               token comes from the cache;
//   BM_ShortTokenLifetime       the same for 10 s with 62 s tokens (usable for 2 s under the
//                               MongoDB rule of one minute left): identity endpoint requests
//                               follow the renewal interval, not the operations.
// A summary follows Google Benchmark's table.
//
// Instruction counts (deterministic, immune to a noisy machine):
//   valgrind --tool=callgrind --instr-atstart=no build-*/bin/encryption_bench
//   --callgrind_pairs=2000 runs the setup and warm-up, then dumps one profile part for 2000
//   azkms pairs and one for 2000 raw pairs (CALLGRIND_DUMP_STATS_AT), and exits. Compare their
//   "totals:" lines.
#include <benchmark/benchmark.h>
#include <curl/curl.h>

// libmongocrypt 1.7.2's header declares its functions without extern "C".
extern "C" {
#include <mongocrypt/mongocrypt.h>
}

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(name)
#define RUNNING_ON_VALGRIND 0
#endif

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../emulator/emulator.hpp"
#include "../emulator/key_vault.hpp"
#include "azkms/bson.hpp"
#include "azkms/cache.hpp"
#include "azkms/crypt_session.hpp"
#include "azkms/environment.hpp"
#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using azkms::emulator::Endpoint;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kSample = "457-55-5462";
constexpr const char* kDeterministic = "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic";
constexpr int kWarmOperations = 10'000;  // BM_TokenRequestsWarm
constexpr int kColdOperations = 300;     // BM_TokenRequestsCold
constexpr auto kShortLifetime = 62s;     // BM_ShortTokenLifetime
constexpr auto kShortRun = 10s;

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// A private directory for the key vault file, removed afterwards.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::random_device random;
    path = fs::temp_directory_path() / ("azkms-encryption-bench-" + std::to_string(random()));
    fs::create_directories(path);
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::replace);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

// ---------------------------------------------------------------------------------------------
// The baseline: the same pair on libmongocrypt directly, no azkms code on the way.

class RawLibmongocrypt {
 public:
  RawLibmongocrypt(const azkms::BsonDocument& kms_providers, azkms::BsonDocument key_document,
                   std::string ca_file)
      : crypt_(mongocrypt_new()),
        curl_(curl_easy_init()),
        key_document_(std::move(key_document)),
        ca_file_(std::move(ca_file)) {
    if (crypt_ == nullptr || curl_ == nullptr) throw std::runtime_error("raw: out of memory");
    const auto bytes = kms_providers.bytes();
    mongocrypt_binary_t* providers = mongocrypt_binary_new_from_data(
        const_cast<std::uint8_t*>(bytes.data()), static_cast<std::uint32_t>(bytes.size()));
    const bool ok = mongocrypt_setopt_kms_providers(crypt_, providers) && mongocrypt_init(crypt_);
    mongocrypt_binary_destroy(providers);
    if (!ok) {
      mongocrypt_status_t* status = mongocrypt_status_new();
      mongocrypt_status(crypt_, status);
      const std::string message = mongocrypt_status_message(status, nullptr);
      mongocrypt_status_destroy(status);
      throw std::runtime_error("raw: libmongocrypt init: " + message);
    }
  }
  ~RawLibmongocrypt() {
    mongocrypt_destroy(crypt_);
    curl_easy_cleanup(curl_);
  }
  RawLibmongocrypt(const RawLibmongocrypt&) = delete;
  RawLibmongocrypt& operator=(const RawLibmongocrypt&) = delete;

  // Encrypts {"v": sample} with the key and decrypts the result; throws when it does not
  // round-trip.
  void pair(const azkms::DataKeyId& key, std::string_view sample) {
    bson_t input;
    bson_init(&input);
    bson_append_utf8(&input, "v", 1, sample.data(), static_cast<int>(sample.size()));

    mongocrypt_ctx_t* ctx = mongocrypt_ctx_new(crypt_);
    mongocrypt_binary_t* key_id =
        mongocrypt_binary_new_from_data(const_cast<std::uint8_t*>(key.bytes.data()), 16);
    mongocrypt_binary_t* in = mongocrypt_binary_new_from_data(
        const_cast<std::uint8_t*>(bson_get_data(&input)), input.len);
    const bool started = mongocrypt_ctx_setopt_key_id(ctx, key_id) &&
                         mongocrypt_ctx_setopt_algorithm(ctx, kDeterministic, -1) &&
                         mongocrypt_ctx_explicit_encrypt_init(ctx, in);
    mongocrypt_binary_destroy(in);
    mongocrypt_binary_destroy(key_id);
    bson_destroy(&input);
    if (!started) fail(ctx, "encrypt init");
    drive(ctx, ciphertext_);
    mongocrypt_ctx_destroy(ctx);

    // The encryption's output is already the {"v": <ciphertext>} that decryption takes.
    ctx = mongocrypt_ctx_new(crypt_);
    in = mongocrypt_binary_new_from_data(ciphertext_.data(),
                                         static_cast<std::uint32_t>(ciphertext_.size()));
    const bool decrypting = mongocrypt_ctx_explicit_decrypt_init(ctx, in);
    mongocrypt_binary_destroy(in);
    if (!decrypting) fail(ctx, "decrypt init");
    drive(ctx, plaintext_);
    mongocrypt_ctx_destroy(ctx);

    bson_t out;
    bson_iter_t iter;
    std::uint32_t length = 0;
    const char* text = nullptr;
    if (bson_init_static(&out, plaintext_.data(), plaintext_.size()) &&
        bson_iter_init_find(&iter, &out, "v") && BSON_ITER_HOLDS_UTF8(&iter)) {
      text = bson_iter_utf8(&iter, &length);
    }
    if (text == nullptr || std::string_view(text, length) != sample) {
      throw std::runtime_error("raw: the decrypted value differs from the sample");
    }
  }

  [[nodiscard]] std::uint64_t key_vault_exchanges() const { return kms_exchanges_; }
  [[nodiscard]] std::uint64_t key_reads() const { return key_reads_; }

 private:
  [[noreturn]] static void fail(mongocrypt_ctx_t* ctx, const std::string& what) {
    mongocrypt_status_t* status = mongocrypt_status_new();
    mongocrypt_ctx_status(ctx, status);
    const std::string message = mongocrypt_status_message(status, nullptr);
    mongocrypt_status_destroy(status);
    mongocrypt_ctx_destroy(ctx);
    throw std::runtime_error("raw: " + what + ": " + message);
  }

  void drive(mongocrypt_ctx_t* ctx, std::vector<std::uint8_t>& result) {
    for (;;) {
      switch (mongocrypt_ctx_state(ctx)) {
        case MONGOCRYPT_CTX_NEED_MONGO_KEYS: {
          ++key_reads_;
          const auto bytes = key_document_.bytes();
          mongocrypt_binary_t* doc = mongocrypt_binary_new_from_data(
              const_cast<std::uint8_t*>(bytes.data()), static_cast<std::uint32_t>(bytes.size()));
          const bool fed = mongocrypt_ctx_mongo_feed(ctx, doc);
          mongocrypt_binary_destroy(doc);
          if (!fed || !mongocrypt_ctx_mongo_done(ctx)) fail(ctx, "data key");
          break;
        }
        case MONGOCRYPT_CTX_NEED_KMS:
          while (mongocrypt_kms_ctx_t* kms = mongocrypt_ctx_next_kms_ctx(ctx)) exchange(kms);
          if (!mongocrypt_ctx_kms_done(ctx)) fail(ctx, "Key Vault");
          break;
        case MONGOCRYPT_CTX_READY: {
          mongocrypt_binary_t* out = mongocrypt_binary_new();
          if (!mongocrypt_ctx_finalize(ctx, out)) {
            mongocrypt_binary_destroy(out);
            fail(ctx, "finalize");
          }
          const std::uint8_t* data = mongocrypt_binary_data(out);
          result.assign(data, data + mongocrypt_binary_len(out));
          mongocrypt_binary_destroy(out);
          return;
        }
        default:
          fail(ctx, "unexpected state " + std::to_string(mongocrypt_ctx_state(ctx)));
      }
    }
  }

  static std::size_t collect(char* data, std::size_t size, std::size_t count, void* target) {
    static_cast<std::string*>(target)->append(data, size * count);
    return size * count;
  }

  // One Key Vault exchange with bare libcurl: libmongocrypt's request line and headers, its
  // body, TLS verified against the emulator's CA. Nothing of the request is ever printed (it
  // carries the token).
  void exchange(mongocrypt_kms_ctx_t* kms) {
    ++kms_exchanges_;
    const char* endpoint = nullptr;
    mongocrypt_binary_t* message = mongocrypt_binary_new();
    if (!mongocrypt_kms_ctx_endpoint(kms, &endpoint) || !mongocrypt_kms_ctx_message(kms, message)) {
      mongocrypt_binary_destroy(message);
      throw std::runtime_error("raw: libmongocrypt gave no Key Vault request");
    }
    const std::string bytes(reinterpret_cast<const char*>(mongocrypt_binary_data(message)),
                            mongocrypt_binary_len(message));
    mongocrypt_binary_destroy(message);

    const auto head_end = bytes.find("\r\n\r\n");
    const auto line_end = bytes.find("\r\n");
    const auto space1 = bytes.find(' ');
    const auto space2 = bytes.rfind(' ', line_end);
    if (head_end == std::string::npos || space1 >= space2) {
      throw std::runtime_error("raw: unexpected Key Vault request shape");
    }
    const std::string url =
        "https://" + std::string(endpoint) + bytes.substr(space1 + 1, space2 - space1 - 1);
    const std::string body = bytes.substr(head_end + 4);
    curl_slist* headers = nullptr;
    for (std::size_t at = line_end + 2; at < head_end;) {
      const auto end = bytes.find("\r\n", at);
      std::string header = bytes.substr(at, end - at);
      at = end + 2;
      std::string lower = header.substr(0, header.find(':'));
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower == "host" || lower == "content-length" || lower == "connection") continue;
      headers = curl_slist_append(headers, header.c_str());
    }

    std::string response;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl_, CURLOPT_CAINFO, ca_file_.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, 10'000L);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &RawLibmongocrypt::collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &response);
    const CURLcode code = curl_easy_perform(curl_);
    curl_slist_free_all(headers);
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, nullptr);
    long status = 0;
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &status);
    if (code != CURLE_OK || status != 200) {
      throw std::runtime_error("raw: Key Vault exchange failed (curl " + std::to_string(code) +
                               ", HTTP " + std::to_string(status) + ")");
    }

    const std::string reply =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(response.size()) + "\r\n\r\n" + response;
    std::size_t offset = 0;
    while (mongocrypt_kms_ctx_bytes_needed(kms) > 0 && offset < reply.size()) {
      const std::size_t chunk =
          std::min<std::size_t>(mongocrypt_kms_ctx_bytes_needed(kms), reply.size() - offset);
      mongocrypt_binary_t* view = mongocrypt_binary_new_from_data(
          reinterpret_cast<std::uint8_t*>(const_cast<char*>(reply.data()) + offset),
          static_cast<std::uint32_t>(chunk));
      const bool fed = mongocrypt_kms_ctx_feed(kms, view);
      mongocrypt_binary_destroy(view);
      if (!fed) throw std::runtime_error("raw: libmongocrypt refused Key Vault's response");
      offset += chunk;
    }
  }

  mongocrypt_t* crypt_;
  CURL* curl_;
  azkms::BsonDocument key_document_;
  std::string ca_file_;
  std::vector<std::uint8_t> ciphertext_;
  std::vector<std::uint8_t> plaintext_;
  std::uint64_t kms_exchanges_ = 0;
  std::uint64_t key_reads_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The setup shared by every benchmark.

struct Setup {
  azkms::emulator::Emulator identity;
  std::unique_ptr<azkms::emulator::KeyVaultServer> vault;
  std::shared_ptr<azkms::MapEnvironment> environment = std::make_shared<azkms::MapEnvironment>();
  std::shared_ptr<azkms::HttpClient> key_vault_http = azkms::make_curl_http_client();
  ScratchDir scratch;
  std::shared_ptr<azkms::FileKeyVault> store;
  std::shared_ptr<azkms::KmsProviders> providers;
  azkms::CryptSessionOptions session_options;
  std::unique_ptr<azkms::CryptSession> session;
  azkms::DataKeyId key_id;
  azkms::BsonValue plain = azkms::BsonValue::utf8(kSample);
  azkms::BsonValue ciphertext;
  std::unique_ptr<RawLibmongocrypt> raw;

  Setup() {
    identity.start();
    azkms::emulator::KeyVaultOptions vault_options;
    vault_options.keys = {"mongodb-bench-key"};
    vault = std::make_unique<azkms::emulator::KeyVaultServer>(identity.ledger(), vault_options);
    vault->start();

    // The application's view: App Service's variables, never the process environment.
    for (const auto& [name, value] : identity.client_environment(Endpoint::kAppService)) {
      environment->set(name, value);
    }
    providers = make_providers();
    store = std::make_shared<azkms::FileKeyVault>(scratch.path / "keys.json");
    session_options.providers = providers;
    session_options.key_vault = store;
    session_options.http = key_vault_http;
    session_options.ca_file = vault->ca_file();
    session = std::make_unique<azkms::CryptSession>(session_options);

    const azkms::AzureMasterKey master_key{"azure", vault->endpoint(), "mongodb-bench-key", ""};
    key_id = session->create_data_key(master_key, {"bench-key"});
    ciphertext = session->encrypt(plain, key_id, azkms::Algorithm::kDeterministic);
    if (session->decrypt(ciphertext).as_utf8() != kSample) {
      throw std::runtime_error("warm-up: the decrypted value differs from the sample");
    }

    // The baseline gets the same token, fixed up front, and the data key document.
    const azkms::KmsProvidersDocument credentials = providers->credentials({"azure"});
    raw = std::make_unique<RawLibmongocrypt>(credentials.bson(), store->all().at(0),
                                             vault->ca_file());
    raw->pair(key_id, kSample);
  }

  std::shared_ptr<azkms::KmsProviders> make_providers(
      std::function<void(const azkms::CacheEvent&)> on_event = {}) const {
    azkms::KmsProvidersOptions options;
    options.environment = environment;
    options.cache_options.on_event = std::move(on_event);
    auto registry = std::make_shared<azkms::KmsProviders>(options);
    azkms::ProviderConfig config;
    config.source = azkms::SourceKind::kAppService;  // the real App Service source
    registry->add("azure", config);
    return registry;
  }

  [[nodiscard]] std::uint64_t identity_requests() const {
    return identity.requests_served(Endpoint::kAppService);
  }

  void azkms_pair() {
    const azkms::BsonValue encrypted =
        session->encrypt(plain, key_id, azkms::Algorithm::kDeterministic);
    if (session->decrypt(encrypted).as_utf8() != kSample) {
      throw std::runtime_error("azkms: the decrypted value differs from the sample");
    }
  }
  void raw_pair() { raw->pair(key_id, kSample); }
};

Setup* g_setup = nullptr;

// What the summary prints, filled in by the benchmarks' last runs.
struct Summary {
  std::optional<double> azkms_pairs_per_s, raw_pairs_per_s;
  std::optional<double> azkms_ns, raw_ns, overhead_pct, overhead_cpu_pct;
  int overhead_rounds = 0, overhead_block = 0;
  std::optional<std::uint64_t> warm_ops, warm_token, warm_credentials, warm_key_vault;
  std::optional<std::uint64_t> cold_ops, cold_token, cold_credentials, cold_key_vault;
  std::optional<double> cold_ops_per_s, credentials_ns;
  std::optional<std::uint64_t> short_ops, short_token, short_credentials;
  std::optional<double> short_seconds, short_planned_interval_s, short_observed_interval_s;
} g_summary;

// Requests on the way, for one benchmark run.
struct Counts {
  std::uint64_t token = g_setup->identity_requests();
  std::uint64_t key_vault = g_setup->vault->requests_served();
  azkms::CryptStats crypt = g_setup->session->stats();
};

void set_request_counters(benchmark::State& state, const Counts& before, std::uint64_t operations) {
  const Counts after;
  state.counters["ops"] = static_cast<double>(operations);
  state.counters["token_req"] = static_cast<double>(after.token - before.token);
  state.counters["cred_req"] =
      static_cast<double>(after.crypt.credential_requests - before.crypt.credential_requests);
  state.counters["kv_req"] = static_cast<double>(after.key_vault - before.key_vault);
}

// ---------------------------------------------------------------------------------------------

double pairs_per_second(benchmark::State& state, Clock::time_point start) {
  return static_cast<double>(state.iterations()) /
         std::chrono::duration<double>(Clock::now() - start).count();
}

void BM_PairAzkms(benchmark::State& state) {
  const Counts before;
  const auto start = Clock::now();
  for (auto _ : state) g_setup->azkms_pair();
  g_summary.azkms_pairs_per_s = pairs_per_second(state, start);
  state.counters["pair/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  set_request_counters(state, before, 2 * state.iterations());
}
BENCHMARK(BM_PairAzkms)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(1.0);

void BM_PairRaw(benchmark::State& state) {
  const Counts before;
  const auto start = Clock::now();
  for (auto _ : state) g_setup->raw_pair();
  g_summary.raw_pairs_per_s = pairs_per_second(state, start);
  state.counters["pair/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  set_request_counters(state, before, 2 * state.iterations());
}
BENCHMARK(BM_PairRaw)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(1.0);

// One iteration is one round: a block of azkms pairs and a block of raw pairs, in an order that
// alternates between rounds, so that both see the same machine. Each block is timed twice: wall
// clock, and the CPU time of this thread (the warm path runs entirely on it), which a shared
// machine disturbs less.
constexpr int kOverheadRounds = 150;
constexpr int kOverheadBlock = 100;

struct BlockTime {
  double wall_ns = 0;
  double cpu_ns = 0;
};

double thread_cpu_ns() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e9 + static_cast<double>(now.tv_nsec);
}

template <typename Pair>
BlockTime time_block(Pair&& pair) {
  const auto wall = Clock::now();
  const double cpu = thread_cpu_ns();
  for (int i = 0; i < kOverheadBlock; ++i) pair();
  return {std::chrono::duration<double, std::nano>(Clock::now() - wall).count() / kOverheadBlock,
          (thread_cpu_ns() - cpu) / kOverheadBlock};
}

void BM_Overhead(benchmark::State& state) {
  std::vector<double> azkms_ns, raw_ns, wall_ratios, cpu_ratios;
  bool azkms_first = true;
  for (auto _ : state) {
    BlockTime a;
    BlockTime r;
    if (azkms_first) {
      a = time_block([] { g_setup->azkms_pair(); });
      r = time_block([] { g_setup->raw_pair(); });
    } else {
      r = time_block([] { g_setup->raw_pair(); });
      a = time_block([] { g_setup->azkms_pair(); });
    }
    azkms_first = !azkms_first;
    azkms_ns.push_back(a.wall_ns);
    raw_ns.push_back(r.wall_ns);
    wall_ratios.push_back(a.wall_ns / r.wall_ns);
    cpu_ratios.push_back(a.cpu_ns / r.cpu_ns);
  }
  const double wall_overhead = (median(wall_ratios) - 1) * 100;
  const double cpu_overhead = (median(cpu_ratios) - 1) * 100;
  state.counters["azkms_ns/pair"] = median(azkms_ns);
  state.counters["raw_ns/pair"] = median(raw_ns);
  state.counters["overhead_%"] = wall_overhead;
  state.counters["overhead_cpu_%"] = cpu_overhead;
  g_summary.azkms_ns = median(azkms_ns);
  g_summary.raw_ns = median(raw_ns);
  g_summary.overhead_pct = wall_overhead;
  g_summary.overhead_cpu_pct = cpu_overhead;
  g_summary.overhead_rounds = kOverheadRounds;
  g_summary.overhead_block = kOverheadBlock;
}
BENCHMARK(BM_Overhead)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(kOverheadRounds);

void BM_TokenRequestsWarm(benchmark::State& state) {
  const Counts before;
  for (auto _ : state) {
    for (int i = 0; i < kWarmOperations / 2; ++i) g_setup->azkms_pair();
  }
  set_request_counters(state, before, kWarmOperations);
  state.counters["token_req_total"] = static_cast<double>(g_setup->identity_requests());
  const Counts after;
  g_summary.warm_ops = kWarmOperations;
  g_summary.warm_token = g_setup->identity_requests();
  g_summary.warm_credentials = after.crypt.credential_requests - before.crypt.credential_requests;
  g_summary.warm_key_vault = after.key_vault - before.key_vault;
}
BENCHMARK(BM_TokenRequestsWarm)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// What a credential request costs azkms once the token is cached: the kmsProviders document
// {"azure": {"accessToken": ...}} that answers NEED_KMS_CREDENTIALS.
void BM_CredentialsDocument(benchmark::State& state) {
  const auto start = Clock::now();
  for (auto _ : state) {
    const azkms::KmsProvidersDocument document = g_setup->providers->credentials({"azure"});
    benchmark::DoNotOptimize(document.bson().get());
  }
  g_summary.credentials_ns =
      std::chrono::duration<double, std::nano>(Clock::now() - start).count() /
      static_cast<double>(state.iterations());
}
BENCHMARK(BM_CredentialsDocument)->Unit(benchmark::kNanosecond)->UseRealTime()->MinTime(0.5);

// A decryption in a new session: libmongocrypt has no key in memory, so it reads the key vault,
// asks for credentials and unwraps the data key at Key Vault. Returns the credential requests.
std::uint64_t cold_decrypt(const azkms::CryptSessionOptions& options) {
  azkms::CryptSession fresh(options);
  if (fresh.decrypt(g_setup->ciphertext).as_utf8() != kSample) {
    throw std::runtime_error("cold: the decrypted value differs from the sample");
  }
  return fresh.stats().credential_requests;
}

void BM_TokenRequestsCold(benchmark::State& state) {
  const std::uint64_t token_before = g_setup->identity_requests();
  const std::uint64_t key_vault_before = g_setup->vault->requests_served();
  std::uint64_t credentials = 0;
  const auto start = Clock::now();
  for (auto _ : state) credentials += cold_decrypt(g_setup->session_options);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const std::uint64_t token = g_setup->identity_requests() - token_before;
  const std::uint64_t key_vault = g_setup->vault->requests_served() - key_vault_before;
  state.counters["ops"] = static_cast<double>(state.iterations());
  state.counters["token_req"] = static_cast<double>(token);
  state.counters["cred_req"] = static_cast<double>(credentials);
  state.counters["kv_req"] = static_cast<double>(key_vault);
  g_summary.cold_ops = state.iterations();
  g_summary.cold_token = token;
  g_summary.cold_credentials = credentials;
  g_summary.cold_key_vault = key_vault;
  g_summary.cold_ops_per_s = static_cast<double>(state.iterations()) / seconds;
}
BENCHMARK(BM_TokenRequestsCold)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(kColdOperations);

void BM_ShortTokenLifetime(benchmark::State& state) {
  // A registry of its own (an empty cache) fed 62 s tokens. on_event records the cache's plan
  // for each token: when it will renew it.
  std::mutex mutex;
  std::vector<double> planned;  // seconds from a token's arrival to its planned renewal
  g_setup->identity.set_token_lifetime(kShortLifetime);
  auto providers = g_setup->make_providers([&](const azkms::CacheEvent& event) {
    if (event.kind != azkms::CacheEvent::Kind::kFetched || !event.next_attempt) return;
    const std::lock_guard lock(mutex);
    planned.push_back(
        std::chrono::duration<double>(*event.next_attempt - std::chrono::system_clock::now())
            .count());
  });
  azkms::CryptSessionOptions options = g_setup->session_options;
  options.providers = providers;

  const std::uint64_t token_before = g_setup->identity_requests();
  std::uint64_t credentials = 0;
  std::uint64_t operations = 0;
  const auto start = Clock::now();
  for (auto _ : state) {
    while (Clock::now() - start < kShortRun) {
      credentials += cold_decrypt(options);
      ++operations;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const std::uint64_t token = g_setup->identity_requests() - token_before;
  const std::uint64_t fetched = providers->fetch_count("azure");
  providers.reset();  // stops its renewals
  g_setup->identity.set_token_lifetime(3600s);

  const std::lock_guard lock(mutex);
  const double planned_interval = median(planned);
  state.counters["ops"] = static_cast<double>(operations);
  state.counters["cred_req"] = static_cast<double>(credentials);
  state.counters["token_req"] = static_cast<double>(token);
  state.counters["fetched"] = static_cast<double>(fetched);
  state.counters["renew_every_s"] = planned_interval;
  g_summary.short_ops = operations;
  g_summary.short_credentials = credentials;
  g_summary.short_token = token;
  g_summary.short_seconds = seconds;
  g_summary.short_planned_interval_s = planned_interval;
  g_summary.short_observed_interval_s = token > 1 ? seconds / static_cast<double>(token - 1) : 0;
}
BENCHMARK(BM_ShortTokenLifetime)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

void print_summary() {
  const Summary& s = g_summary;
  std::printf("\nSummary (libmongocrypt %s, deterministic encryption of an 11-byte string)\n",
              azkms::CryptSession::libmongocrypt_version().c_str());
  if (s.azkms_pairs_per_s && s.raw_pairs_per_s) {
    std::printf("  encrypt+decrypt: azkms %.0f pair/s, raw libmongocrypt %.0f pair/s\n",
                *s.azkms_pairs_per_s, *s.raw_pairs_per_s);
  }
  if (s.overhead_pct) {
    std::printf(
        "  time in azkms: %+.2f %% of the raw time by wall clock, %+.2f %% by thread CPU time "
        "(%.2f us against %.2f us per pair; medians of %d alternating rounds of %d pairs)\n",
        *s.overhead_pct, *s.overhead_cpu_pct, *s.azkms_ns / 1000, *s.raw_ns / 1000,
        s.overhead_rounds, s.overhead_block);
  }
  if (s.warm_ops) {
    std::printf(
        "  warm session, %llu operations: %llu credential requests, %llu Key Vault requests; "
        "identity endpoint requests since start: %llu\n",
        static_cast<unsigned long long>(*s.warm_ops),
        static_cast<unsigned long long>(*s.warm_credentials),
        static_cast<unsigned long long>(*s.warm_key_vault),
        static_cast<unsigned long long>(*s.warm_token));
  }
  if (s.cold_ops) {
    std::printf(
        "  new session per operation, %llu operations (%.0f op/s): %llu credential requests, "
        "%llu Key Vault requests, %llu identity endpoint requests\n",
        static_cast<unsigned long long>(*s.cold_ops), *s.cold_ops_per_s,
        static_cast<unsigned long long>(*s.cold_credentials),
        static_cast<unsigned long long>(*s.cold_key_vault),
        static_cast<unsigned long long>(*s.cold_token));
    if (s.credentials_ns) {
      std::printf(
          "  credentials from the cache: %.0f ns per kmsProviders document, %.3f %% of a "
          "new-session operation\n",
          *s.credentials_ns, *s.credentials_ns * *s.cold_ops_per_s / 1e7);
    }
  }
  if (s.short_ops) {
    std::printf(
        "  %llds tokens, new session per operation for %.1f s: %llu operations, %llu credential "
        "requests, %llu identity endpoint requests (renewal planned every %.2f s, observed every "
        "%.2f s; expected about %.0f)\n",
        static_cast<long long>(kShortLifetime.count()), *s.short_seconds,
        static_cast<unsigned long long>(*s.short_ops),
        static_cast<unsigned long long>(*s.short_credentials),
        static_cast<unsigned long long>(*s.short_token), *s.short_planned_interval_s,
        *s.short_observed_interval_s,
        *s.short_planned_interval_s > 0 ? 1 + *s.short_seconds / *s.short_planned_interval_s : 0.0);
  }
}

// Under callgrind: one profile part for `pairs` azkms pairs, one for `pairs` raw pairs.
__attribute__((noinline)) void azkms_pairs(int pairs) {
  for (int i = 0; i < pairs; ++i) g_setup->azkms_pair();
}
__attribute__((noinline)) void raw_pairs(int pairs) {
  for (int i = 0; i < pairs; ++i) g_setup->raw_pair();
}

void run_callgrind(int pairs) {
  CALLGRIND_START_INSTRUMENTATION;
  azkms_pairs(100);  // first-use paths out of the way
  raw_pairs(100);
  CALLGRIND_ZERO_STATS;
  azkms_pairs(pairs);
  CALLGRIND_DUMP_STATS_AT("azkms pairs");
  raw_pairs(pairs);
  CALLGRIND_DUMP_STATS_AT("raw pairs");
  CALLGRIND_STOP_INSTRUMENTATION;
  std::printf("%d azkms pairs and %d raw pairs done%s\n", pairs, pairs,
              RUNNING_ON_VALGRIND ? "; compare the totals of the two profile parts"
                                  : " (not under callgrind: nothing recorded)");
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<int> callgrind_pairs;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    constexpr std::string_view kFlag = "--callgrind_pairs=";
    if (arg.substr(0, kFlag.size()) == kFlag) {
      callgrind_pairs = std::atoi(argv[i] + kFlag.size());
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  try {
    Setup setup;
    g_setup = &setup;
    if (callgrind_pairs) {
      run_callgrind(*callgrind_pairs);
    } else {
      benchmark::RunSpecifiedBenchmarks();
      print_summary();
    }
    g_setup = nullptr;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "encryption_bench: %s\n", e.what());
    return 1;
  }
  benchmark::Shutdown();
  return 0;
}
