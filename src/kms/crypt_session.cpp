// CryptSession: the libmongocrypt state machine, driven to completion for one operation.
//
// Key Vault exchange. libmongocrypt hands over each request as raw HTTP/1.1 bytes and expects
// raw response bytes back. We do not write those bytes to a socket ourselves: we read the
// request into an HttpRequest value and send it with the project's HttpClient (libcurl: TLS
// verification, CA file, per-attempt timeout, size cap, connection reuse). Two reasons:
//  - libmongocrypt 1.7.2 treats any response it is fed as final (its retry API came in 1.11),
//    so the status must be known before feeding: 408/429/5xx are retried here, 401 triggers a
//    token refresh, and only a 200 reaches libmongocrypt;
//  - tests can drive the whole session with an in-memory HttpClient.
// The response fed back is rebuilt from the status and body libcurl parsed.
//
// Named providers ("azure:prod") on libmongocrypt >= 1.9 go through NamedProviderBridge: their
// token requests are KMS requests to a placeholder host, answered here from the registry and
// never sent. libmongocrypt >= 1.9 also offers its own KMS retry (mongocrypt_setopt_retry_kms);
// it stays off, because the retry here honours Retry-After and the operation's deadline and
// runs with every libmongocrypt version: enabling both would multiply the attempts.
#include "azkms/crypt_session.hpp"

// libmongocrypt 1.7.2's header declares its functions without extern "C".
extern "C" {
#include <mongocrypt/mongocrypt.h>
}

#include <atomic>
#include <charconv>
#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <type_traits>

#include "azkms/error.hpp"
#include "azkms/token_response.hpp"
#include "fork_safety.hpp"
#include "kms/kms_http.hpp"
#include "kms/named_provider_bridge.hpp"
#include "log.hpp"
#include "redaction.hpp"
#include "retry.hpp"
#include "url.hpp"

namespace azkms {
namespace {

constexpr std::size_t kMaxKmsResponseBytes = 1u << 20;

// The first libmongocrypt that accepts named KMS providers ("azure:<name>").
constexpr std::pair<int, int> kNamedProvidersSince{1, 9};
struct CtxDeleter {
  void operator()(mongocrypt_ctx_t* p) const noexcept { mongocrypt_ctx_destroy(p); }
};
using CtxPtr = std::unique_ptr<mongocrypt_ctx_t, CtxDeleter>;

// A mongocrypt_binary_t viewing bytes we own (libmongocrypt copies what it keeps).
class BinaryView {
 public:
  explicit BinaryView(std::span<const std::uint8_t> bytes)
      : binary_(mongocrypt_binary_new_from_data(const_cast<std::uint8_t*>(bytes.data()),
                                                static_cast<std::uint32_t>(bytes.size()))) {}
  explicit BinaryView(const BsonDocument& doc) : BinaryView(doc.bytes()) {}
  ~BinaryView() { mongocrypt_binary_destroy(binary_); }
  BinaryView(const BinaryView&) = delete;
  BinaryView& operator=(const BinaryView&) = delete;
  [[nodiscard]] mongocrypt_binary_t* get() const noexcept { return binary_; }

 private:
  mongocrypt_binary_t* binary_;
};

// A mongocrypt_binary_t that libmongocrypt fills (valid until the next call on the context).
class BinaryOut {
 public:
  BinaryOut() : binary_(mongocrypt_binary_new()) {}
  ~BinaryOut() { mongocrypt_binary_destroy(binary_); }
  BinaryOut(const BinaryOut&) = delete;
  BinaryOut& operator=(const BinaryOut&) = delete;
  [[nodiscard]] mongocrypt_binary_t* get() const noexcept { return binary_; }
  [[nodiscard]] std::span<const std::uint8_t> bytes() const noexcept {
    return {mongocrypt_binary_data(binary_), mongocrypt_binary_len(binary_)};
  }
  [[nodiscard]] BsonDocument document() const { return BsonDocument::from_bytes(bytes()); }
  // The output as a read-only bson_t over libmongocrypt's buffer (no validation, no copy).
  bool view(bson_t* out) const noexcept {
    return bson_init_static(out, mongocrypt_binary_data(binary_), mongocrypt_binary_len(binary_));
  }

 private:
  mongocrypt_binary_t* binary_;
};

class Status {
 public:
  Status() : status_(mongocrypt_status_new()) {}
  ~Status() { mongocrypt_status_destroy(status_); }
  Status(const Status&) = delete;
  Status& operator=(const Status&) = delete;
  [[nodiscard]] mongocrypt_status_t* get() const noexcept { return status_; }
  [[nodiscard]] std::string message() const {
    const char* text = mongocrypt_status_message(status_, nullptr);
    return text != nullptr && *text != '\0' ? text : "no detail";
  }

 private:
  mongocrypt_status_t* status_;
};

Error ctx_error(mongocrypt_ctx_t* ctx, std::string_view what, ErrorCode code = ErrorCode::kCrypt) {
  Status status;
  mongocrypt_ctx_status(ctx, status.get());
  return Error(code, std::string(what) + ": libmongocrypt: " + status.message());
}

[[noreturn, gnu::cold, gnu::noinline]] void throw_ctx_error(mongocrypt_ctx_t* ctx,
                                                            std::string_view what, ErrorCode code) {
  throw ctx_error(ctx, what, code);
}

// The message is built only on failure: a literal, or a callable returning the message.
void check(bool ok, mongocrypt_ctx_t* ctx, const char* what, ErrorCode code = ErrorCode::kCrypt) {
  if (!ok) [[unlikely]] {
    throw_ctx_error(ctx, what, code);
  }
}
template <typename Describe>
requires std::is_invocable_r_v<std::string, Describe>
void check(bool ok, mongocrypt_ctx_t* ctx, Describe&& describe,
           ErrorCode code = ErrorCode::kCrypt) {
  if (!ok) [[unlikely]] {
    throw_ctx_error(ctx, describe(), code);
  }
}

// BSON is little-endian whatever the host.
void put_int32(std::uint8_t* at, std::uint32_t value) noexcept {
  at[0] = static_cast<std::uint8_t>(value);
  at[1] = static_cast<std::uint8_t>(value >> 8);
  at[2] = static_cast<std::uint8_t>(value >> 16);
  at[3] = static_cast<std::uint8_t>(value >> 24);
}
std::uint32_t get_int32(const std::uint8_t* at) noexcept {
  return static_cast<std::uint32_t>(at[0]) | static_cast<std::uint32_t>(at[1]) << 8 |
         static_cast<std::uint32_t>(at[2]) << 16 | static_cast<std::uint32_t>(at[3]) << 24;
}

// The layout of {"v": <string or binary>}: document length, element type, key "v", payload
// length, [binary subtype,] payload, document terminator.
constexpr std::size_t kValueHeader = 4 + 1 + 2 + 4;  // up to the payload length, included

// {"v": value} as BSON, the input of an explicit encryption or decryption. A string or a
// binary (other than the deprecated subtype 2) of moderate size, the usual values and
// ciphertexts, is written straight into a buffer on the stack: the same bytes libbson would
// write, without its general append path; anything else goes through libbson.
class ValueDocument {
 public:
  explicit ValueDocument(const BsonValue& value) {
    const bson_value_t& v = value.get();
    if (v.value_type == BSON_TYPE_UTF8 && v.value.v_utf8.str != nullptr &&
        v.value.v_utf8.len < kSmall - kValueHeader - 2) {
      const std::uint32_t length = v.value.v_utf8.len;
      size_ = kValueHeader + length + 2;
      start(BSON_TYPE_UTF8, length + 1);
      std::memcpy(small_ + kValueHeader, v.value.v_utf8.str, length);
      small_[kValueHeader + length] = 0;
    } else if (v.value_type == BSON_TYPE_BINARY &&
               v.value.v_binary.subtype != BSON_SUBTYPE_BINARY_DEPRECATED &&
               v.value.v_binary.data != nullptr &&
               v.value.v_binary.data_len < kSmall - kValueHeader - 2) {
      const std::uint32_t length = v.value.v_binary.data_len;
      size_ = kValueHeader + 1 + length + 1;
      start(BSON_TYPE_BINARY, length);
      small_[kValueHeader] = static_cast<std::uint8_t>(v.value.v_binary.subtype);
      std::memcpy(small_ + kValueHeader + 1, v.value.v_binary.data, length);
    } else {
      // A value libbson cannot append (no value) leaves {}, which libmongocrypt then refuses.
      bson_init(&doc_);
      bson_append_value(&doc_, "v", 1, &v);
      data_ = bson_get_data(&doc_);
      size_ = doc_.len;
      return;
    }
    small_[size_ - 1] = 0;
    data_ = small_;
  }
  ~ValueDocument() {
    if (data_ != small_) bson_destroy(&doc_);
  }
  ValueDocument(const ValueDocument&) = delete;
  ValueDocument& operator=(const ValueDocument&) = delete;
  [[nodiscard]] std::span<const std::uint8_t> bytes() const noexcept { return {data_, size_}; }

 private:
  static constexpr std::size_t kSmall = 256;

  void start(bson_type_t type, std::uint32_t payload_length) noexcept {
    put_int32(small_, static_cast<std::uint32_t>(size_));
    small_[4] = static_cast<std::uint8_t>(type);
    small_[5] = 'v';
    small_[6] = 0;
    put_int32(small_ + 7, payload_length);
  }

  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint8_t small_[kSmall];  // written before it is read; not initialised
  bson_t doc_;                  // initialised only when small_ is not used
};

[[noreturn]] void throw_no_value() {
  throw Error(ErrorCode::kCrypt, "libmongocrypt returned a document without \"v\"");
}

// The "v" of libmongocrypt's output, read in place; only the value itself is copied. The usual
// output, {"v": <string or binary>} and nothing else, is read directly with the checks
// libbson's iterator makes (lengths within the document, strings terminated by a zero byte);
// any other shape goes through libbson.
BsonValue value_of(const BinaryOut& out) {
  const std::span<const std::uint8_t> bytes = out.bytes();
  const std::size_t size = bytes.size();
  const std::uint8_t* data = bytes.data();
  if (size > kValueHeader + 1 && size <= UINT32_MAX && get_int32(data) == size &&
      data[size - 1] == 0 && data[5] == 'v' && data[6] == 0) {
    const std::size_t length = get_int32(data + 7);
    if (data[4] == BSON_TYPE_UTF8 && length >= 1 && kValueHeader + length + 1 == size &&
        data[kValueHeader + length - 1] == 0) {
      return BsonValue::utf8(
          std::string_view(reinterpret_cast<const char*>(data + kValueHeader), length - 1));
    }
    if (data[4] == BSON_TYPE_BINARY && kValueHeader + 1 + length + 1 == size &&
        data[kValueHeader] != BSON_SUBTYPE_BINARY_DEPRECATED) {
      bson_value_t view{};
      view.value_type = BSON_TYPE_BINARY;
      view.value.v_binary.subtype = static_cast<bson_subtype_t>(data[kValueHeader]);
      view.value.v_binary.data = const_cast<std::uint8_t*>(data + kValueHeader + 1);
      view.value.v_binary.data_len = static_cast<std::uint32_t>(length);
      return BsonValue(view);
    }
  }
  bson_t doc;
  if (!out.view(&doc)) {
    throw Error(ErrorCode::kMalformedResponse,
                "not a valid BSON document (" + std::to_string(size) + " bytes)");
  }
  bson_iter_t iter;
  if (!bson_iter_init_find(&iter, &doc, "v")) throw_no_value();
  return BsonValue(*bson_iter_value(&iter));
}

// The result of an explicit encryption or decryption. MONGOCRYPT_CTX_DONE (no output) stands
// for {}, which has no "v" either.
BsonValue finish_value(const BinaryOut* out) {
  if (out == nullptr) throw_no_value();
  return value_of(*out);
}

// Thrown inside one pass when Key Vault refused the token; the caller refreshes and retries.
struct Unauthorized {
  std::string provider;  // whose token was refused
  std::string url;
  std::string excerpt;
  std::string claims;  // Key Vault's claims challenge, if it sent one
};

std::optional<std::pair<int, int>> parse_version(std::string_view version) {
  int major = 0;
  int minor = 0;
  auto [p1, e1] = std::from_chars(version.data(), version.data() + version.size(), major);
  if (e1 != std::errc() || p1 == version.data() + version.size() || *p1 != '.') {
    return std::nullopt;
  }
  auto [p2, e2] = std::from_chars(p1 + 1, version.data() + version.size(), minor);
  if (e2 != std::errc()) return std::nullopt;
  return std::pair{major, minor};
}

bool version_has_named_providers(std::string_view version) {
  const auto parsed = parse_version(version);
  return parsed && *parsed >= kNamedProvidersSince;
}

// The bearer token of a request's Authorization header; empty when there is none.
std::string bearer_of(const HttpRequest& request) {
  const std::string value = request.header("Authorization").value_or("");
  const auto space = value.find(' ');
  return space == std::string::npos ? value : value.substr(space + 1);
}

std::vector<std::string> named_providers_in(const KmsProviders& providers) {
  std::vector<std::string> named;
  for (auto& name : providers.names()) {
    if (is_named_provider(name)) named.push_back(std::move(name));
  }
  return named;
}

}  // namespace

std::string_view to_string(Algorithm algorithm) noexcept {
  switch (algorithm) {
    case Algorithm::kDeterministic:
      return "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic";
    case Algorithm::kRandom:
      return "AEAD_AES_256_CBC_HMAC_SHA_512-Random";
  }
  return "unknown";
}

std::string CryptSession::libmongocrypt_version() { return mongocrypt_version(nullptr); }

bool CryptSession::supports_named_providers() {
  return version_has_named_providers(libmongocrypt_version());
}

struct CryptSession::Impl final : private detail::ForkAware {
  Impl() = default;
  ~Impl() = default;  // fork_registration goes first
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  CryptSessionOptions options;
  // Present when libmongocrypt accepts named providers and the registry has some.
  std::unique_ptr<NamedProviderBridge> bridge;
  // The handle; replaced (never changed in place) when a named provider's token is refused,
  // because libmongocrypt keeps a named provider's token until it expires. Each operation holds
  // the handle it started with, so a replacement never pulls one out from under a context.
  mutable std::mutex crypt_mutex;
  std::shared_ptr<mongocrypt_t> crypt;
  // Set in a forked child: `crypt` is the parent's handle, which a thread of the parent may
  // have been inside at the fork, holding one of libmongocrypt's own locks (its key cache's).
  // The child's first operation replaces it with a handle of its own.
  bool crypt_from_parent = false;  // guarded by crypt_mutex

  std::atomic<std::uint64_t> credential_requests{0};
  std::atomic<std::uint64_t> named_token_requests{0};
  std::atomic<std::uint64_t> kms_requests{0};
  std::atomic<std::uint64_t> kms_retries{0};
  std::atomic<std::uint64_t> unauthorized_retries{0};
  std::atomic<std::uint64_t> key_vault_reads{0};

  // Last: registered once everything above exists, unregistered before any of it goes.
  detail::ForkRegistration fork_registration{*this};

  // A libmongocrypt handle configured with {"azure": {}} (on demand, when the registry has it)
  // and the bridge's placeholders for the named providers.
  std::shared_ptr<mongocrypt_t> make_crypt() const {
    std::shared_ptr<mongocrypt_t> handle(mongocrypt_new(), mongocrypt_destroy);
    bson_t document = BSON_INITIALIZER;
    if (options.providers->contains(kAzureProvider)) {
      bson_t empty;
      BSON_APPEND_DOCUMENT_BEGIN(&document, "azure", &empty);
      bson_append_document_end(&document, &empty);
    }
    if (bridge) bridge->append_placeholders(&document);
    const BsonDocument kms_providers(&document);
    bson_destroy(&document);
    BinaryView view(kms_providers);
    mongocrypt_setopt_use_need_kms_credentials_state(handle.get());
    if (!mongocrypt_setopt_kms_providers(handle.get(), view.get()) ||
        !mongocrypt_init(handle.get())) {
      Status status;
      mongocrypt_status(handle.get(), status.get());
      throw Error(ErrorCode::kCrypt, "cannot initialise libmongocrypt " + libmongocrypt_version() +
                                         ": " + status.message());
    }
    return handle;
  }

  std::shared_ptr<mongocrypt_t> current_crypt() {
    {
      std::lock_guard lock(crypt_mutex);
      if (!crypt_from_parent) return crypt;
    }
    auto fresh = make_crypt();  // outside the lock: it reads the registry, which has locks too
    std::unique_lock lock(crypt_mutex);
    if (crypt_from_parent) {
      crypt_from_parent = false;
      fresh.swap(crypt);  // `fresh` now holds the parent's handle, released once unlocked
    }
    auto current = crypt;
    lock.unlock();
    return current;
  }

  // After a named provider's token was refused: a new handle, so that libmongocrypt asks the
  // bridge again instead of resending the token it keeps. Several operations refused at once
  // replace the handle once.
  void replace_crypt(const std::shared_ptr<mongocrypt_t>& refused_with) {
    auto fresh = make_crypt();
    std::lock_guard lock(crypt_mutex);
    if (crypt == refused_with) crypt = std::move(fresh);
  }

  // fork() (fork_safety.hpp): crypt_mutex is held across it, so that `crypt` is whole in the
  // child. The handle is only marked there: making a new one is too much work for a fork
  // handler, and releasing the parent's could run libmongocrypt's cleanup in one.
  void before_fork() override { crypt_mutex.lock(); }
  void after_fork_in_parent() override { crypt_mutex.unlock(); }
  void after_fork_in_child() override {
    crypt_from_parent = true;
    crypt_mutex.unlock();
  }

  // A data key wrapped by an Azure provider this session does not serve is a configuration
  // error naming the provider, rather than libmongocrypt's refusal of the key.
  void check_key_provider(const BsonDocument& key) const {
    bson_iter_t iter;
    if (key.get() == nullptr || !bson_iter_init(&iter, key.get()) ||
        !bson_iter_find_descendant(&iter, "masterKey.provider", &iter) ||
        !BSON_ITER_HOLDS_UTF8(&iter)) {
      return;  // libmongocrypt judges what is not an Azure master key
    }
    const std::string provider = bson_iter_utf8(&iter, nullptr);
    if (is_azure_provider_name(provider)) check_configured(provider);
  }

  // Throws before any request when a master key names a provider this session cannot serve.
  void check_configured(const std::string& provider) const {
    if (provider == kAzureProvider) {
      if (options.providers->contains(provider)) return;
      throw Error(ErrorCode::kConfiguration,
                  "master key provider \"azure\" is not registered in the KMS providers");
    }
    if (!is_named_provider(provider)) {
      throw Error(ErrorCode::kConfiguration,
                  "master key provider \"" + provider +
                      "\" is not an Azure provider (\"azure\" or \"azure:<name>\")");
    }
    if (!supports_named_providers()) {
      throw Error(ErrorCode::kUnsupported,
                  "KMS provider \"" + provider +
                      "\" is a named provider, and named KMS providers "
                      "need libmongocrypt >= 1.9 (this process has " +
                      libmongocrypt_version() +
                      "); use \"azure\", or build azkms against a newer libmongocrypt");
    }
    if (bridge && bridge->serves(provider)) return;
    throw Error(ErrorCode::kConfiguration,
                "KMS provider \"" + provider + "\" has no binding: " +
                    (options.providers->contains(provider)
                         ? "it was registered after this CryptSession was created; create the "
                           "session once the registry is complete"
                         : "register it in the KMS providers (KmsProviders::add(\"" + provider +
                               "\", ...) or the JSON configuration) before creating the "
                               "CryptSession"));
  }

  Deadline deadline_or_default(std::optional<Deadline> deadline) const {
    return deadline ? *deadline : options.clock->steady_now() + options.operation_timeout;
  }

  // An operation's deadline: the caller's, or operation_timeout from the first moment the
  // operation has to wait on something (key vault, credentials, Key Vault). Until then it has
  // only done local work inside libmongocrypt, so an operation that never waits (a warm session's
  // encryption or decryption) never reads the clock.
  class OperationDeadline {
   public:
    OperationDeadline(const Impl& impl, std::optional<Deadline> given)
        : impl_(impl), value_(given) {}
    Deadline get() {
      if (!value_) value_ = impl_.deadline_or_default(std::nullopt);
      return *value_;
    }

   private:
    const Impl& impl_;
    std::optional<Deadline> value_;
  };

  // Runs the operation; after a 401 from Key Vault, drops the token and runs it once more
  // from a new context (libmongocrypt cannot resend a request with another token).
  // `make_ctx(crypt)` returns a started context on that handle; `finish(out)` turns
  // libmongocrypt's output into the result while the context still owns it (`out` is null when
  // the operation had no output).
  template <typename MakeCtx, typename Finish>
  auto run(const MakeCtx& make_ctx, const Finish& finish, OperationDeadline deadline) {
    std::shared_ptr<mongocrypt_t> handle = current_crypt();
    try {
      return run_once(make_ctx(handle.get()), finish, deadline);
    } catch (const Unauthorized& first) {
      log(LogLevel::kWarning, "Key Vault " + first.url + " answered 401 to the cached token of " +
                                  first.provider +
                                  "; fetching a new token and trying the operation once more");
      options.providers->invalidate(first.provider, first.claims);
      if (first.provider != kAzureProvider) replace_crypt(handle);
      unauthorized_retries.fetch_add(1, std::memory_order_relaxed);
    }
    handle = current_crypt();
    try {
      return run_once(make_ctx(handle.get()), finish, deadline);
    } catch (const Unauthorized& second) {
      throw Error(ErrorCode::kKms,
                  "Key Vault answered 401 to a freshly fetched token too; check that the token's "
                  "resource is https://vault.azure.net and that the vault trusts its tenant (" +
                      options.providers->describe(second.provider) +
                      "); response: " + second.excerpt)
          .with_endpoint(second.url)
          .with_http_status(401);
    }
  }

  template <typename Finish>
  auto run_once(CtxPtr ctx_owner, const Finish& finish, OperationDeadline& deadline) {
    mongocrypt_ctx_t* ctx = ctx_owner.get();
    for (;;) {
      switch (mongocrypt_ctx_state(ctx)) {
        case MONGOCRYPT_CTX_NEED_MONGO_COLLINFO:
        case MONGOCRYPT_CTX_NEED_MONGO_MARKINGS:
          throw Error(ErrorCode::kUnsupported,
                      "automatic encryption needs a MongoDB connection; CryptSession does "
                      "explicit encryption only (use the C API with libmongoc instead)");
        case MONGOCRYPT_CTX_NEED_MONGO_KEYS:
          answer_keys(ctx, deadline.get());
          break;
        case MONGOCRYPT_CTX_NEED_KMS_CREDENTIALS:
          answer_credentials(ctx, deadline.get());
          break;
        case MONGOCRYPT_CTX_NEED_KMS:
          answer_kms(ctx, deadline.get());
          break;
        case MONGOCRYPT_CTX_READY: {
          BinaryOut out;
          check(mongocrypt_ctx_finalize(ctx, out.get()), ctx, "finalizing");
          return finish(&out);
        }
        case MONGOCRYPT_CTX_DONE:
          return finish(nullptr);
        case MONGOCRYPT_CTX_ERROR:
        default:
          throw ctx_error(ctx, "operation failed");
      }
    }
  }

  void answer_keys(mongocrypt_ctx_t* ctx, Deadline deadline) {
    BinaryOut filter;
    check(mongocrypt_ctx_mongo_op(ctx, filter.get()), ctx, "reading the key filter");
    const KeyQuery query = KeyQuery::from_filter(filter.document());
    key_vault_reads.fetch_add(1, std::memory_order_relaxed);
    for (const auto& key : options.key_vault->find(query, deadline)) {
      check_key_provider(key);
      BinaryView view(key);
      check(
          mongocrypt_ctx_mongo_feed(ctx, view.get()), ctx,
          [&] {
            return "data key " + DataKeyId::of(key).to_string() + " from " +
                   options.key_vault->describe() + " was refused";
          },
          ErrorCode::kKeyVault);
    }
    check(
        mongocrypt_ctx_mongo_done(ctx), ctx,
        [&] { return "data keys missing from " + options.key_vault->describe(); },
        ErrorCode::kKeyVault);
  }

  void answer_credentials(mongocrypt_ctx_t* ctx, Deadline deadline) {
    credential_requests.fetch_add(1, std::memory_order_relaxed);
    const KmsProvidersDocument document =
        options.providers->credentials({kAzureProvider}, deadline);
    BinaryView view(document.bson());
    check(mongocrypt_ctx_provide_kms_providers(ctx, view.get()), ctx,
          "providing Azure credentials");
  }

  void answer_kms(mongocrypt_ctx_t* ctx, Deadline deadline) {
    while (mongocrypt_kms_ctx_t* kms = mongocrypt_ctx_next_kms_ctx(ctx)) {
      const char* endpoint_text = nullptr;
      if (!mongocrypt_kms_ctx_endpoint(kms, &endpoint_text) || endpoint_text == nullptr) {
        throw Error(ErrorCode::kKms, "libmongocrypt gave a Key Vault request without endpoint");
      }
      const std::string endpoint = endpoint_text;
      BinaryOut message;
      if (!mongocrypt_kms_ctx_message(kms, message.get())) {
        throw Error(ErrorCode::kKms, "libmongocrypt gave no Key Vault request for " + endpoint);
      }
      const auto bytes = message.bytes();
      const HttpRequest request = parse_kms_request(
          std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), endpoint);
      if (NamedProviderBridge::is_placeholder_endpoint(endpoint)) {
        answer_named_token(kms, request, deadline);
        continue;
      }
      exchange_with_key_vault(kms, request, deadline);
    }
    check(mongocrypt_ctx_kms_done(ctx), ctx, "completing the Key Vault exchange", ErrorCode::kKms);
  }

  // A named provider's token request (see NamedProviderBridge): answered in-process with the
  // registry's token for that provider, never sent.
  void answer_named_token(mongocrypt_kms_ctx_t* kms, const HttpRequest& request,
                          Deadline deadline) {
    if (!bridge) {
      throw Error(ErrorCode::kKms,
                  "libmongocrypt asked for a token at the named-provider placeholder endpoint, "
                  "which this session did not configure; the request was not sent anywhere");
    }
    named_token_requests.fetch_add(1, std::memory_order_relaxed);
    const std::string& provider = bridge->provider_of(request);
    const AccessToken token = options.providers->token(provider, deadline);
    RedactionScope secrets_in_use;
    secrets_in_use.add(token.token.reveal());
    const HttpResponse answer = bridge->answer(provider, token, options.clock->now());
    feed(kms, kms_response_bytes(answer),
         "https://" + std::string(NamedProviderBridge::kPlaceholderHost));
  }

  // Hands a response to libmongocrypt in the pieces it asks for.
  static void feed(mongocrypt_kms_ctx_t* kms, const std::string& reply, const std::string& url) {
    std::size_t offset = 0;
    while (mongocrypt_kms_ctx_bytes_needed(kms) > 0) {
      if (offset >= reply.size()) {
        throw Error(ErrorCode::kKms, "the response ended early").with_endpoint(url);
      }
      const std::size_t chunk =
          std::min<std::size_t>(mongocrypt_kms_ctx_bytes_needed(kms), reply.size() - offset);
      BinaryView view(std::span<const std::uint8_t>(
          reinterpret_cast<const std::uint8_t*>(reply.data()) + offset, chunk));
      if (!mongocrypt_kms_ctx_feed(kms, view.get())) {
        Status status;
        mongocrypt_kms_ctx_status(kms, status.get());
        throw Error(ErrorCode::kKms,
                    "libmongocrypt refused the response: " + safe_excerpt(status.message()))
            .with_endpoint(url);
      }
      offset += chunk;
    }
  }

  // The provider whose token a Key Vault request carries: a named one when the bridge handed
  // the token out, the base "azure" otherwise.
  std::string provider_of(const HttpRequest& request) const {
    if (bridge) {
      if (auto named = bridge->provider_of_token(bearer_of(request))) return *named;
    }
    return std::string(kAzureProvider);
  }

  void exchange_with_key_vault(mongocrypt_kms_ctx_t* kms, const HttpRequest& request,
                               Deadline deadline) {
    {
      const std::string url = url_for_messages(request.url, 300);
      // The request carries the token (Authorization: Bearer <token>): nothing said about this
      // exchange may quote it, whatever Key Vault echoes back.
      RedactionScope secrets_in_use;
      for (const auto& header : request.headers) {
        if (!header.sensitive) continue;
        const auto space = header.value.find(' ');
        secrets_in_use.add(space == std::string::npos
                               ? std::string_view(header.value)
                               : std::string_view(header.value).substr(space + 1));
      }

      HttpOptions http_options;
      http_options.max_response_bytes = kMaxKmsResponseBytes;
      http_options.ca_file = options.ca_file;
      int attempts = 0;
      HttpResponse response;
      try {
        response = run_with_retries(
            options.kms_retry, *options.clock, deadline, options.kms_attempt_timeout,
            [&](std::chrono::milliseconds budget) {
              kms_requests.fetch_add(1, std::memory_order_relaxed);
              http_options.timeout = budget;
              return options.http->send(request, http_options);
            },
            &attempts);
      } catch (Error& e) {
        if (attempts > 1) kms_retries.fetch_add(attempts - 1, std::memory_order_relaxed);
        if (e.endpoint().empty()) e.with_endpoint(url);
        throw;
      }
      if (attempts > 1) kms_retries.fetch_add(attempts - 1, std::memory_order_relaxed);

      const std::string excerpt = safe_excerpt(response.body);
      if (response.status == 401) {
        throw Unauthorized{provider_of(request), url, excerpt, claims_challenge(response)};
      }
      if (response.status != 200) {
        const std::string code = key_vault_error_code(response.body);
        std::string advice;
        if (response.status == 403) {
          advice = "; the identity (" + options.providers->describe(provider_of(request)) +
                   ") is not allowed to use this key: grant it wrapKey and unwrapKey (the Key "
                   "Vault Crypto User role)";
        } else if (response.status == 404) {
          advice = "; check keyVaultEndpoint, keyName and keyVersion";
        }
        throw Error(ErrorCode::kKms, "Key Vault answered " + std::to_string(response.status) +
                                         (code.empty() ? "" : " (" + code + ")") + advice +
                                         "; response: " + excerpt)
            .with_endpoint(url)
            .with_http_status(response.status)
            .with_attempts(attempts);
      }

      feed(kms, kms_response_bytes(response), url);
    }
  }
};

CryptSession::CryptSession(CryptSessionOptions options) : impl_(std::make_unique<Impl>()) {
  if (!options.providers) throw Error(ErrorCode::kConfiguration, "CryptSession needs providers");
  if (!options.key_vault) throw Error(ErrorCode::kConfiguration, "CryptSession needs a key vault");
  std::vector<std::string> named = named_providers_in(*options.providers);
  if (!supports_named_providers()) named.clear();  // refused by name in create_data_key
  if (!options.providers->contains(kAzureProvider) && named.empty()) {
    throw Error(
        ErrorCode::kConfiguration,
        "CryptSession answers libmongocrypt's on-demand credential requests from the "
        "provider \"azure\"" +
            std::string(supports_named_providers() ? " or \"azure:<name>\" providers" : "") +
            ", and the registry has none");
  }
  if (!options.http) options.http = make_curl_http_client();
  if (!options.clock) options.clock = Clock::system();
  impl_->options = std::move(options);
  if (!named.empty()) impl_->bridge = std::make_unique<NamedProviderBridge>(std::move(named));
  impl_->crypt = impl_->make_crypt();
}

CryptSession::~CryptSession() = default;

DataKeyId CryptSession::create_data_key(const AzureMasterKey& master_key,
                                        const std::vector<std::string>& key_alt_names,
                                        std::optional<Deadline> deadline_option) {
  impl_->check_configured(master_key.provider);
  if (master_key.key_vault_endpoint.empty() || master_key.key_name.empty()) {
    throw Error(ErrorCode::kConfiguration,
                "an Azure master key needs keyVaultEndpoint and keyName");
  }
  const Deadline deadline = impl_->deadline_or_default(deadline_option);

  bson_t kek = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&kek, "provider", master_key.provider.c_str());
  BSON_APPEND_UTF8(&kek, "keyVaultEndpoint", master_key.key_vault_endpoint.c_str());
  BSON_APPEND_UTF8(&kek, "keyName", master_key.key_name.c_str());
  if (!master_key.key_version.empty()) {
    BSON_APPEND_UTF8(&kek, "keyVersion", master_key.key_version.c_str());
  }
  const BsonDocument master(&kek);
  bson_destroy(&kek);

  const BsonDocument key = impl_->run(
      [&](mongocrypt_t* crypt) {
        CtxPtr ctx(mongocrypt_ctx_new(crypt));
        BinaryView kek_view(master);
        check(mongocrypt_ctx_setopt_key_encryption_key(ctx.get(), kek_view.get()), ctx.get(),
              "invalid Azure master key", ErrorCode::kConfiguration);
        for (const auto& name : key_alt_names) {
          bson_t* alt = BCON_NEW("keyAltName", BCON_UTF8(name.c_str()));
          const BsonDocument alt_doc(alt);
          bson_destroy(alt);
          BinaryView alt_view(alt_doc);
          check(
              mongocrypt_ctx_setopt_key_alt_name(ctx.get(), alt_view.get()), ctx.get(),
              [&] { return "invalid keyAltName \"" + name + "\""; }, ErrorCode::kConfiguration);
        }
        check(mongocrypt_ctx_datakey_init(ctx.get()), ctx.get(), "starting data key creation");
        return ctx;
      },
      [](const BinaryOut* out) { return out != nullptr ? out->document() : BsonDocument(); },
      Impl::OperationDeadline(*impl_, deadline));
  impl_->options.key_vault->insert(key, deadline);
  return DataKeyId::of(key);
}

BsonValue CryptSession::encrypt(const BsonValue& value, const DataKeyId& key, Algorithm algorithm,
                                std::optional<Deadline> deadline) {
  const ValueDocument input(value);
  return impl_->run(
      [&](mongocrypt_t* crypt) {
        CtxPtr ctx(mongocrypt_ctx_new(crypt));
        BinaryView id(key.bytes);
        check(mongocrypt_ctx_setopt_key_id(ctx.get(), id.get()), ctx.get(), "key id");
        check(mongocrypt_ctx_setopt_algorithm(ctx.get(), to_string(algorithm).data(), -1),
              ctx.get(), "algorithm");
        BinaryView in(input.bytes());
        check(mongocrypt_ctx_explicit_encrypt_init(ctx.get(), in.get()), ctx.get(),
              "starting encryption");
        return ctx;
      },
      finish_value, Impl::OperationDeadline(*impl_, deadline));
}

BsonValue CryptSession::encrypt(const BsonValue& value, std::string_view key_alt_name,
                                Algorithm algorithm, std::optional<Deadline> deadline) {
  const ValueDocument input(value);
  const std::string name(key_alt_name);
  return impl_->run(
      [&](mongocrypt_t* crypt) {
        CtxPtr ctx(mongocrypt_ctx_new(crypt));
        bson_t* alt = BCON_NEW("keyAltName", BCON_UTF8(name.c_str()));
        const BsonDocument alt_doc(alt);
        bson_destroy(alt);
        BinaryView alt_view(alt_doc);
        check(mongocrypt_ctx_setopt_key_alt_name(ctx.get(), alt_view.get()), ctx.get(),
              "keyAltName", ErrorCode::kConfiguration);
        check(mongocrypt_ctx_setopt_algorithm(ctx.get(), to_string(algorithm).data(), -1),
              ctx.get(), "algorithm");
        BinaryView in(input.bytes());
        check(mongocrypt_ctx_explicit_encrypt_init(ctx.get(), in.get()), ctx.get(),
              "starting encryption");
        return ctx;
      },
      finish_value, Impl::OperationDeadline(*impl_, deadline));
}

BsonValue CryptSession::decrypt(const BsonValue& ciphertext, std::optional<Deadline> deadline) {
  if (ciphertext.binary_subtype() != BSON_SUBTYPE_ENCRYPTED) {
    throw Error(ErrorCode::kCrypt, "only BSON binary subtype 6 values can be decrypted");
  }
  const ValueDocument input(ciphertext);
  return impl_->run(
      [&](mongocrypt_t* crypt) {
        CtxPtr ctx(mongocrypt_ctx_new(crypt));
        BinaryView in(input.bytes());
        check(mongocrypt_ctx_explicit_decrypt_init(ctx.get(), in.get()), ctx.get(),
              "starting decryption");
        return ctx;
      },
      finish_value, Impl::OperationDeadline(*impl_, deadline));
}

CryptStats CryptSession::stats() const {
  CryptStats s;
  s.credential_requests = impl_->credential_requests.load(std::memory_order_relaxed);
  s.named_token_requests = impl_->named_token_requests.load(std::memory_order_relaxed);
  s.kms_requests = impl_->kms_requests.load(std::memory_order_relaxed);
  s.kms_retries = impl_->kms_retries.load(std::memory_order_relaxed);
  s.unauthorized_retries = impl_->unauthorized_retries.load(std::memory_order_relaxed);
  s.key_vault_reads = impl_->key_vault_reads.load(std::memory_order_relaxed);
  return s;
}

}  // namespace azkms
