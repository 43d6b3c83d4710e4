// The libcurl HttpClient.
//
// Shape, and why:
// - A pool of easy handles per client rather than a CURLSH-shared connection cache: libcurl
//   documents that sharing one connection cache between concurrently running threads is not
//   supported, while each easy handle keeps its own cache of idle connections across
//   curl_easy_reset(). A thread takes the most recently returned handle, so sequential requests
//   to one endpoint ride the same connection.
// - The size cap is enforced twice: a declared Content-Length over the cap aborts in the header
//   callback before any body byte is read, and the write callback aborts as soon as streamed
//   bytes would pass it (chunked answers declare nothing).
// - A 3xx answer aborts at the end of its headers: redirects are never followed, and nothing
//   of their body is worth waiting for.
// - No Accept-Encoding: bodies arrive as sent, so the cap counts real bytes and no
//   decompression can inflate a small answer past it.
// - Pinned mode (Service Fabric) keeps peer verification on but installs an OpenSSL verify
//   callback that accepts the chain if and only if the leaf's SHA-1 thumbprint equals the pin;
//   only the host name check is off, because the cluster certificate rarely names the node.
//   Pinned exchanges never reuse a connection or a TLS session: a resumed session skips the
//   certificate, and another request pinned to another thumbprint must not inherit this one.
// - fork(): every socket a client opens goes through its open/close socket callbacks, so the
//   client knows them all. In a child (fork_safety.hpp) the pool's handles are forgotten and
//   those sockets closed; see after_fork_in_child() for why the handles are not cleaned up.
// - Cancellation: a progress callback, which libcurl calls at least once a second even when
//   nothing arrives, ends the transfer once the exchange's Cancellation is set.
// - Header sizes: libcurl refuses one header line over 100 KiB (as "out of memory"); the header
//   callback caps the total, which libcurl 7.x does not.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "encoding.hpp"
#include "file_reader.hpp"
#include "fork_safety.hpp"
#include "http/connection_failure.hpp"
#include "http/curl_client.hpp"
#include "http/proxy_bypass.hpp"
#include "log.hpp"
#include "redaction.hpp"
#include "text.hpp"
#include "url.hpp"

namespace azkms {
namespace {

constexpr std::size_t kMaxIdleHandles = 16;
// All header lines of one answer together. Identity endpoints and Key Vault send a few hundred
// bytes of headers; libcurl 7.x limits each line (100 KiB) but not how many lines come.
constexpr std::size_t kMaxHeaderBytes = 64u * 1024;
// A CA file: Debian's whole bundle is about 200 KiB.
constexpr std::size_t kMaxCaFileBytes = 4u * 1024 * 1024;

// The innermost ScopedCancellation of each thread.
thread_local const Cancellation* t_scoped_cancellation = nullptr;

int ssl_ctx_ex_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw Error(ErrorCode::kConnection, "libcurl could not be initialised (curl_global_init)");
    }
    (void)ssl_ctx_ex_index();
  });
}

bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c);
  });
}

bool valid_header_value(std::string_view value) {
  return std::none_of(value.begin(), value.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

// Everything one exchange needs in its callbacks.
struct Transfer {
  std::size_t max_bytes = 0;
  bool head = false;  // a HEAD answer's Content-Length describes a body that never comes
  HttpResponse response;
  std::size_t header_bytes = 0;
  bool headers_done = false;  // the final (non-1xx) header block has ended
  // Observed by the progress callback; null when not set.
  const Cancellation* cancellation = nullptr;
  const Cancellation* scoped_cancellation = nullptr;
  // Why the transfer was aborted by us, if it was.
  bool too_large = false;
  bool headers_too_large = false;
  bool cancelled = false;
  std::string declared_length;  // set when refused on Content-Length
  bool redirect = false;
  std::string location;
  // Pinned mode.
  std::string pin;  // normalized, empty when not pinned
  std::string presented_thumbprint;
  bool pin_mismatch = false;
};

// The extra trust anchors, read by the library rather than by OpenSSL: the path comes from
// configuration (HttpOptions::ca_file, SSL_CERT_FILE), and OpenSSL's fopen() would block on a
// FIFO until a writer appears and read a device without end. Empty when there is no file.
std::string read_ca_file(const std::string& path) {
  if (path.empty()) return {};
  FileReadRules rules;
  rules.what = "the CA file (ca_file, or SSL_CERT_FILE for identity endpoints)";
  rules.code = ErrorCode::kConfiguration;
  rules.max_bytes = kMaxCaFileBytes;
  rules.follow_links = true;  // /etc/ssl/certs is made of links
  rules.open_hint =
      "check the path (when it came from SSL_CERT_FILE, unsetting it uses the system store)";
  return read_regular_file(path, rules);
}

bool cancellation_requested(const Transfer& t) {
  return (t.cancellation != nullptr && t.cancellation->cancelled()) ||
         (t.scoped_cancellation != nullptr && t.scoped_cancellation->cancelled());
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const size_t n = size * count;
  t.header_bytes += n;
  if (t.header_bytes > kMaxHeaderBytes) {
    t.headers_too_large = true;
    return 0;
  }
  const std::string_view line(data, n);
  const std::string_view content = trim(line, " \t\r\n");
  if (line.starts_with("HTTP/")) {
    // A new response begins (after a 1xx, or the first one): start over.
    t.response.headers.clear();
    t.response.status = 0;
    t.location.clear();
    const auto space = line.find(' ');
    if (space != std::string_view::npos) {
      const auto code = trim(line.substr(space + 1), " \t\r\n").substr(0, 3);
      int status = 0;
      std::from_chars(code.data(), code.data() + code.size(), status);
      t.response.status = status;
    }
    return n;
  }
  const bool redirect_status = t.response.status >= 300 && t.response.status < 400;
  if (content.empty()) {
    // End of one header block. A redirect is refused here, before its body.
    if (redirect_status) {
      t.redirect = true;
      return 0;
    }
    if (t.response.status >= 200) t.headers_done = true;
    return n;
  }
  if ((line.front() == ' ' || line.front() == '\t') && !t.response.headers.empty()) {
    auto& value = t.response.headers.back().value;  // obsolete line folding
    value += ' ';
    value += content;
    return n;
  }
  const auto colon = content.find(':');
  if (colon == std::string_view::npos) return n;
  HttpHeader header{std::string(trim(content.substr(0, colon), " \t\r\n")),
                    std::string(trim(content.substr(colon + 1), " \t\r\n")), false};
  if (iequals(header.name, "content-length") && !redirect_status && !t.head) {
    unsigned long long length = 0;
    const auto& v = header.value;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), length);
    if (ec == std::errc::result_out_of_range || (ec == std::errc() && length > t.max_bytes)) {
      t.too_large = true;
      t.declared_length = safe_excerpt(v, 40);
      return 0;
    }
  }
  if (iequals(header.name, "location")) t.location = header.value;
  t.response.headers.push_back(std::move(header));
  return n;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (n > t.max_bytes - t.response.body.size()) {
    t.too_large = true;
    return 0;  // CURLE_WRITE_ERROR: abort now
  }
  t.response.body.append(data, n);
  return n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto& t = *static_cast<Transfer*>(user);
  if (!cancellation_requested(t)) return 0;
  t.cancelled = true;
  return 1;  // CURLE_ABORTED_BY_CALLBACK
}

int verify_pinned(int preverify_ok, X509_STORE_CTX* store) {
  (void)preverify_ok;  // the pin replaces the chain's verdict
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* t =
      ssl == nullptr
          ? nullptr
          : static_cast<Transfer*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ctx_ex_index()));
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  if (t == nullptr || leaf == nullptr) return 0;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (X509_digest(leaf, EVP_sha1(), digest, &length) != 1) return 0;
  const std::string presented =
      hex_encode(std::string_view(reinterpret_cast<const char*>(digest), length));
  if (presented != t->pin) {
    t->presented_thumbprint = presented;
    t->pin_mismatch = true;
    return 0;
  }
  X509_STORE_CTX_set_error(store, X509_V_OK);
  return 1;
}

CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* user) {
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  // The SSL_CTX belongs to this connection alone and pinned connections are never reused, so
  // the pointer cannot outlive the transfer it names.
  if (SSL_CTX_set_ex_data(ctx, ssl_ctx_ex_index(), user) != 1) return CURLE_SSL_CERTPROBLEM;
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_pinned);
  return CURLE_OK;
}

ErrorCode classify(CURLcode rc) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return ErrorCode::kTimeout;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_CLIENTCERT:
      return ErrorCode::kTls;
    case CURLE_FILESIZE_EXCEEDED:
      return ErrorCode::kResponseTooLarge;
    case CURLE_URL_MALFORMAT:
      return ErrorCode::kConfiguration;
    case CURLE_UNSUPPORTED_PROTOCOL:
      // The URL's scheme was checked before sending, so here this is libcurl refusing an
      // answer without a status line ("Received HTTP/0.9 when not allowed"): something that
      // does not speak HTTP answered. It says the same thing on every attempt, so it is not a
      // transport error worth retrying but a malformed response.
      return ErrorCode::kMalformedResponse;
    default:
      return ErrorCode::kConnection;
  }
}

// True when the exchange failed before any connection was made: refused, unreachable,
// unresolvable, or the connection (or name resolution) timed out. libcurl reports a timeout in
// those phases as "Connection timed out after ..." / "Resolving timed out after ...", and one
// after the connection was made as "Operation timed out after ..."; the connect time cannot
// tell, since it is zero on a reused connection too.
bool never_connected(CURLcode rc, std::string_view detail) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return true;
    case CURLE_OPERATION_TIMEDOUT:
      return detail.starts_with("Connection timed out") ||
             detail.starts_with("Resolving timed out");
    default:
      return false;
  }
}

std::string next_step(ErrorCode code) {
  switch (code) {
    case ErrorCode::kTimeout:
      return "the endpoint did not answer in time; it may be overloaded or unreachable";
    case ErrorCode::kTls:
      return "check the endpoint's certificate and the trust store (or the configured pin)";
    case ErrorCode::kConnection:
      return "check that the identity endpoint is running and reachable from this host";
    case ErrorCode::kMalformedResponse:
      return "the answer was not HTTP: something other than an identity endpoint is probably "
             "listening at this address";
    default:
      return "check the endpoint address";
  }
}

struct EasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

class CurlHttpClient final : public HttpClient, private detail::ForkAware {
 public:
  CurlHttpClient() { global_init(); }
  ~CurlHttpClient() = default;  // fork_registration_ goes first, then the idle handles

  CurlHttpClient(const CurlHttpClient&) = delete;
  CurlHttpClient& operator=(const CurlHttpClient&) = delete;

  HttpResponse send(const HttpRequest& request, const HttpOptions& options) override {
    const auto parsed = split_url(request.url);
    if (!parsed) {
      throw Error(ErrorCode::kConfiguration, "cannot send to \"" + url_for_messages(request.url) +
                                                 "\": not an absolute http or https URL");
    }
    const std::string endpoint = url_for_messages(request.url);
    const std::string what = request.method + " " + endpoint;
    const bool https = parsed->scheme == "https";
    if (!https && parsed->scheme != "http") {
      throw Error(ErrorCode::kConfiguration,
                  "cannot send to " + endpoint + ": only http and https are supported");
    }
    if (options.timeout.count() <= 0) {
      throw Error(ErrorCode::kTimeout, what + ": no time left before the deadline");
    }

    std::string ca_pem = https ? read_ca_file(options.ca_file) : std::string();

    Transfer t;
    t.max_bytes = options.max_response_bytes;
    t.head = request.method == "HEAD";
    t.cancellation = options.cancellation.get();
    t.scoped_cancellation = t_scoped_cancellation;
    if (cancellation_requested(t)) {
      throw Error(ErrorCode::kCancelled, what + " was cancelled before it was sent");
    }
    if (options.pinned_sha1_thumbprint) {
      auto pin = normalize_sha1_thumbprint(*options.pinned_sha1_thumbprint);
      if (!pin) {
        throw Error(ErrorCode::kConfiguration,
                    "IDENTITY_SERVER_THUMBPRINT \"" +
                        safe_excerpt(*options.pinned_sha1_thumbprint, 80) +
                        "\" is not a SHA-1 thumbprint (40 hexadecimal digits)");
      }
      if (!https) {
        throw Error(ErrorCode::kConfiguration,
                    endpoint + " is not https, so the certificate pin cannot be checked");
      }
      t.pin = std::move(*pin);
    }

    SlistPtr headers;
    for (const auto& h : request.headers) {
      // Never the value in the message: it may be the secret.
      if (!valid_header_name(h.name) || !valid_header_value(h.value)) {
        throw Error(ErrorCode::kConfiguration,
                    "request to " + endpoint + " has an invalid header \"" +
                        safe_excerpt(h.name, 60) + "\" (line breaks are not allowed)");
      }
      const std::string line = h.value.empty() ? h.name + ";" : h.name + ": " + h.value;
      curl_slist* next = curl_slist_append(headers.get(), line.c_str());
      if (next == nullptr) throw std::bad_alloc();
      (void)headers.release();
      headers.reset(next);
    }
    // libcurl would otherwise add "Expect: 100-continue" to larger POSTs and wait for it.
    if (!request.header("Expect")) {
      curl_slist* next = curl_slist_append(headers.get(), "Expect:");
      if (next == nullptr) throw std::bad_alloc();
      (void)headers.release();
      headers.reset(next);
    }

    EasyPtr handle = acquire();
    CURL* h = handle.get();
    char error_buffer[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count()));
    const auto connect_timeout = options.connect_timeout.count() > 0
                                     ? std::min(options.connect_timeout, options.timeout)
                                     : options.timeout;
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_timeout.count()));
    curl_easy_setopt(h, CURLOPT_USERAGENT, "azkms/0.1");
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
    // Connections keep these two for life, even across curl_easy_reset().
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, this);
    if (t.cancellation != nullptr || t.scoped_cancellation != nullptr) {
      curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
      curl_easy_setopt(h, CURLOPT_XFERINFODATA, &t);
    }
    if (http_detail::bypasses_proxy(parsed->host)) {
      curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    }

    if (request.method == "GET" && request.body.empty()) {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (request.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(request.body.size()));
      if (request.method != "POST") {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      }
    }

    if (https) {
      curl_easy_setopt(h, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
      curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
      curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, t.pin.empty() ? 2L : 0L);
      if (!ca_pem.empty()) {
        // The anchors replace the default bundle (as SSL_CERT_FILE does for OpenSSL); the
        // hashed system directory keeps the system store in play next to them. curl copies
        // the blob.
        curl_blob blob{ca_pem.data(), ca_pem.size(), CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
        if (const auto* info = curl_version_info(CURLVERSION_NOW); info->capath != nullptr) {
          curl_easy_setopt(h, CURLOPT_CAPATH, info->capath);
        }
      }
      if (!t.pin.empty()) {
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, &t);
        curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
      }
    }

    const auto started = std::chrono::steady_clock::now();
    const CURLcode rc = curl_easy_perform(h);
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    long connects = 0;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    requests_.fetch_add(1, std::memory_order_relaxed);
    connections_opened_.fetch_add(static_cast<std::uint64_t>(std::max(connects, 0L)),
                                  std::memory_order_relaxed);
    release(std::move(handle));

    if (t.cancelled) {
      throw Error(ErrorCode::kCancelled, what + " was cancelled after " +
                                             std::to_string(elapsed.count()) +
                                             " ms, before the answer was complete");
    }
    if (t.redirect || (rc == CURLE_OK && status >= 300 && status < 400)) {
      std::string message = what + " answered " + std::to_string(status) + " (a redirect";
      if (const auto target = describe_location(t.location); !target.empty()) {
        message += " to " + target;
      }
      message +=
          "); identity endpoints are never followed to another address: check the endpoint "
          "URL and that nothing between here and the endpoint rewrites requests";
      throw Error(ErrorCode::kRedirect, std::move(message));
    }
    if (t.too_large) {
      std::string message = what + ": response ";
      message +=
          t.declared_length.empty() ? "exceeded" : "declares " + t.declared_length + " bytes, over";
      message += " the cap of " + std::to_string(options.max_response_bytes) +
                 " bytes; identity responses are small (a few kilobytes), so something other "
                 "than an identity endpoint is probably answering at this address";
      throw Error(ErrorCode::kResponseTooLarge, std::move(message));
    }
    // libcurl 7.x reports a single header line over its 100 KiB limit as "out of memory".
    if (t.headers_too_large || (rc == CURLE_OUT_OF_MEMORY && !t.headers_done)) {
      throw Error(ErrorCode::kResponseTooLarge,
                  what + ": the response headers are over the limit (" +
                      (t.headers_too_large ? std::to_string(kMaxHeaderBytes) + " bytes in all"
                                           : std::string("100 KiB for one header")) +
                      "); identity endpoints send a few hundred bytes of headers, so something "
                      "other than an identity endpoint is probably answering at this address");
    }
    if (t.pin_mismatch) {
      throw Error(ErrorCode::kTls, what + ": certificate thumbprint " + t.presented_thumbprint +
                                       " does not match IDENTITY_SERVER_THUMBPRINT " + t.pin);
    }
    if (rc != CURLE_OK) {
      const ErrorCode code = classify(rc);
      std::string message = what + " failed";
      if (code == ErrorCode::kTimeout) {
        message += " after " + std::to_string(elapsed.count()) + " ms (budget " +
                   std::to_string(options.timeout.count()) + " ms)";
      }
      // libcurl's own detail when it wrote one (it names addresses, never headers), else the
      // generic text of the code.
      message += ": ";
      if (never_connected(rc, error_buffer)) message += kNoConnectionMarker;
      message += error_buffer[0] != '\0' ? safe_excerpt(error_buffer, 300) : curl_easy_strerror(rc);
      message += "; " + next_step(code);
      throw Error(code, std::move(message));
    }

    t.response.status = static_cast<int>(status);
    log(LogLevel::kDebug, what + " -> " + std::to_string(status) + " (" +
                              std::to_string(t.response.body.size()) + " bytes, " +
                              std::to_string(elapsed.count()) + " ms, " +
                              (connects > 0 ? "new connection)" : "reused connection)"));
    return std::move(t.response);
  }

  [[nodiscard]] HttpClientStats stats() const override {
    return {requests_.load(std::memory_order_relaxed),
            connections_opened_.load(std::memory_order_relaxed)};
  }

 private:
  // "host:port" of an absolute Location, "a path on the same host" for a relative one. Only the
  // authority: a query could carry anything.
  static std::string describe_location(const std::string& location) {
    if (location.empty()) return {};
    if (const auto parts = split_url(location)) {
      return safe_excerpt(parts->host + (parts->port ? ":" + *parts->port : ""), 120);
    }
    return "another path on the same host";
  }

  EasyPtr acquire() {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        EasyPtr h = std::move(idle_.back());
        idle_.pop_back();
        return h;
      }
    }
    EasyPtr h(curl_easy_init());
    if (!h) throw std::bad_alloc();
    return h;
  }

  void release(EasyPtr h) {
    // Options only (they point into the finished exchange); idle connections, the TLS session
    // cache and the DNS cache stay with the handle.
    curl_easy_reset(h.get());
    EasyPtr surplus;  // cleaned up below, outside the lock: its sockets close through it
    std::lock_guard lock(mutex_);
    if (idle_.size() < kMaxIdleHandles) {
      idle_.push_back(std::move(h));
    } else {
      surplus = std::move(h);
    }
  }

  // ---- sockets, known so that a child can close its copies --------------------------------

  struct OpenSocket {
    curl_socket_t fd;
    dev_t device;  // with the inode, tells this socket from a later one with the same number
    ino_t inode;
  };

  static curl_socket_t open_socket(void* client, curlsocktype purpose, curl_sockaddr* address) {
    if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
    // Close-on-exec too: a program this process starts must not inherit identity connections.
    const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0) return CURL_SOCKET_BAD;
    struct stat st {};
    if (::fstat(fd, &st) == 0) {
      auto* self = static_cast<CurlHttpClient*>(client);
      try {
        std::lock_guard lock(self->mutex_);
        self->sockets_.push_back({fd, st.st_dev, st.st_ino});
      } catch (...) {
        ::close(fd);
        return CURL_SOCKET_BAD;
      }
    }
    return fd;
  }

  static int close_socket(void* client, curl_socket_t fd) {
    auto* self = static_cast<CurlHttpClient*>(client);
    {
      // Forgotten before it is closed: a fork in between leaves the child an open descriptor
      // it does not know about (harmless), never a known one that is by then something else.
      std::lock_guard lock(self->mutex_);
      auto& list = self->sockets_;
      list.erase(std::remove_if(list.begin(), list.end(),
                                [fd](const OpenSocket& s) { return s.fd == fd; }),
                 list.end());
    }
    return ::close(fd);
  }

  // ---- fork --------------------------------------------------------------------------------

  void before_fork() override { mutex_.lock(); }
  void after_fork_in_parent() override { mutex_.unlock(); }

  // Every connection of this client, idle in the pool or in use by a parent thread at the
  // fork, is the parent's: if the child sent on one, parent and child would read each other's
  // answers (tokens for the other identity). The child starts with an empty pool.
  //
  // The inherited handles are forgotten, not cleaned up: curl_easy_cleanup() would shut their
  // TLS sessions down, writing a close_notify alert into connections the parent goes on using.
  // Their memory stays allocated in the child (as does that of the handles that parent threads
  // were using, which nothing here can reach). Their sockets are closed: closing the child's
  // copy of a descriptor sends nothing while the parent holds its own, and it lets a connection
  // end when the parent closes it instead of lingering for as long as the child lives.
  void after_fork_in_child() override {
    for (auto& handle : idle_) (void)handle.release();
    idle_.clear();
    for (const auto& open : sockets_) {
      struct stat st {};
      if (::fstat(open.fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == open.device &&
          st.st_ino == open.inode) {
        ::close(open.fd);
      }
    }
    sockets_.clear();
    mutex_.unlock();
  }

  std::mutex mutex_;  // guards sockets_ and idle_
  std::vector<OpenSocket> sockets_;
  std::vector<EasyPtr> idle_;
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> connections_opened_{0};
  // Last: registered once everything above exists, unregistered before any of it goes.
  detail::ForkRegistration fork_registration_{*this};
};

}  // namespace

namespace http_detail {

bool bypasses_proxy(std::string_view host_text) {
  std::string host(host_text);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (const auto zone = host.find('%'); zone != std::string::npos) host.resize(zone);
  if (is_loopback_host(host)) return true;
  std::string lower;
  for (char c : host) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "localhost." || (lower.size() > 10 && lower.ends_with(".localhost"))) return true;
  // Link-local: 169.254.0.0/16, fe80::/10, and 169.254.x.y mapped into IPv6.
  unsigned char v4[4];
  if (inet_pton(AF_INET, lower.c_str(), v4) == 1) return v4[0] == 169 && v4[1] == 254;
  unsigned char v6[16];
  if (inet_pton(AF_INET6, lower.c_str(), v6) == 1) {
    if (v6[0] == 0xfe && (v6[1] & 0xc0) == 0x80) return true;
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(v6, kMapped, 12) == 0 && v6[12] == 169 && v6[13] == 254;
  }
  return false;
}

}  // namespace http_detail

std::shared_ptr<HttpClient> make_curl_http_client() { return std::make_shared<CurlHttpClient>(); }

ScopedCancellation::ScopedCancellation(std::shared_ptr<const Cancellation> cancellation)
    : cancellation_(std::move(cancellation)), outer_(t_scoped_cancellation) {
  if (cancellation_) t_scoped_cancellation = cancellation_.get();
}

ScopedCancellation::~ScopedCancellation() { t_scoped_cancellation = outer_; }

bool ScopedCancellation::requested() noexcept {
  return t_scoped_cancellation != nullptr && t_scoped_cancellation->cancelled();
}

std::shared_ptr<HttpClient> default_http_client() {
  static auto* const instance = new std::shared_ptr<HttpClient>(make_curl_http_client());
  return *instance;
}

std::optional<std::string> normalize_sha1_thumbprint(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ':' || c == ' ') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  if (out.size() != 40) return std::nullopt;
  return out;
}

std::string url_encode(std::string_view value) { return percent_encode(value); }

}  // namespace azkms
