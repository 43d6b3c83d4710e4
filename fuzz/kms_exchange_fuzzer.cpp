// Fuzzes the Key Vault exchange that CryptSession handles by hand (src/kms/kms_http.hpp): the
// raw HTTP request bytes libmongocrypt builds, read into an HttpRequest, and the Key Vault
// answer, which comes from the network and goes back to libmongocrypt as raw HTTP bytes.
//
// The first input byte picks what the rest is:
//   even: libmongocrypt's request bytes, given to parse_kms_request();
//   odd:  a Key Vault answer: two bytes of status (100..599), then the body. It goes through
//         key_vault_error_code() and kms_response_bytes(), and through a real CryptSession
//         creating a data key, whose HTTP client answers the wrapkey request with it (so
//         libmongocrypt's own parser reads whatever a 200 carries).
// Checks beyond "no crash, no sanitizer report":
// - parse_kms_request() returns a request or throws azkms::Error (kKms), nothing else; a
//   request it returns goes to https://vault.example.net/..., has no control character in its
//   method, URL or headers (none could become another header on the wire), no Host,
//   Content-Length or Connection header, and its Authorization is marked sensitive;
// - the error code is short and printable; the rebuilt response frames the body exactly;
// - create_data_key() returns or throws azkms::Error; the request CryptSession sends passes
//   the same checks.
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/crypt_session.hpp"
#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "azkms/key_vault.hpp"
#include "azkms/kms_providers.hpp"
#include "kms/kms_http.hpp"

namespace {

constexpr std::string_view kEndpoint = "vault.example.net";

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "kms_exchange_fuzzer: %s\n", what);
  std::abort();
}

bool has_control(std::string_view text) {
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && byte != '\t') || byte == 0x7f) return true;
  }
  return false;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto x = static_cast<unsigned char>(a[i]);
    const auto y = static_cast<unsigned char>(b[i]);
    if (std::tolower(x) != std::tolower(y)) return false;
  }
  return true;
}

// `endpoint`: host[:port], as libmongocrypt names it.
void check_request(const azkms::HttpRequest& request, std::string_view endpoint) {
  if (!request.url.starts_with("https://" + std::string(endpoint) + "/")) {
    fail("the request goes somewhere else than the Key Vault endpoint");
  }
  if (has_control(request.method) || has_control(request.url)) {
    fail("a control character in the request line");
  }
  for (const auto& header : request.headers) {
    if (header.name.empty() || has_control(header.name) || has_control(header.value)) {
      fail("a control character in a header");
    }
    for (std::string_view dropped : {"host", "content-length", "connection"}) {
      if (iequals(header.name, dropped)) fail("a header libcurl must set was kept");
    }
    if (iequals(header.name, "authorization") && !header.sensitive) {
      fail("Authorization is not marked sensitive");
    }
  }
}

void fuzz_request(std::string_view bytes) {
  try {
    check_request(azkms::parse_kms_request(bytes, std::string(kEndpoint)), kEndpoint);
  } catch (const azkms::Error& error) {
    if (error.code() != azkms::ErrorCode::kKms) fail("a request error that is not kKms");
  }
}

// Answers every request with the current input's status and body, after checking it.
class FuzzedKeyVault final : public azkms::HttpClient {
 public:
  azkms::HttpResponse send(const azkms::HttpRequest& request,
                           const azkms::HttpOptions& /*options*/) override {
    check_request(request, std::string(kEndpoint) + ":443");  // libmongocrypt adds the port
    return answer;
  }
  azkms::HttpResponse answer;
};

// A key store that keeps nothing: only the exchange is under test.
class NoKeys final : public azkms::KeyVault {
 public:
  void insert(const azkms::BsonDocument& /*key*/, azkms::Deadline /*deadline*/) override {}
  std::vector<azkms::BsonDocument> find(const azkms::KeyQuery& /*query*/,
                                        azkms::Deadline /*deadline*/) override {
    return {};
  }
  [[nodiscard]] std::string describe() const override { return "no keys"; }
};

struct Session {
  std::shared_ptr<FuzzedKeyVault> http = std::make_shared<FuzzedKeyVault>();
  std::unique_ptr<azkms::CryptSession> crypt;

  Session() {
    auto providers = std::make_shared<azkms::KmsProviders>();
    providers->add_callback(
        "azure",
        [](const azkms::TokenRequest& request, azkms::Deadline) {
          azkms::AccessToken token;
          token.token = azkms::Secret("fuzz-token-7d1e0c");
          token.resource = request.resource;
          token.expires_on = std::chrono::system_clock::now() + std::chrono::hours{1};
          return token;
        },
        azkms::TokenRequest{}, "fuzz issuer");
    azkms::CryptSessionOptions options;
    options.providers = providers;
    options.key_vault = std::make_shared<NoKeys>();
    options.http = http;
    options.kms_retry = azkms::RetryPolicy::no_retries();
    crypt = std::make_unique<azkms::CryptSession>(options);
  }
};

void fuzz_answer(int status, std::string_view body_bytes) {
  const std::string body(body_bytes);
  const std::string code = azkms::key_vault_error_code(body);
  if (code.size() > 64 + 3 || has_control(code)) fail("the error code is long or unprintable");

  const azkms::HttpResponse response{status, {}, body};
  const std::string bytes = azkms::kms_response_bytes(response);
  const std::string head = "HTTP/1.1 " + std::to_string(status) + " OK\r\n";
  const std::string framing = "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  if (!bytes.starts_with(head) || !bytes.ends_with(body) ||
      bytes.find(framing) != bytes.size() - body.size() - framing.size()) {
    fail("the rebuilt response does not frame the body exactly");
  }

  static Session* session = new Session();  // reused: a session costs a libmongocrypt setup
  session->http->answer = response;
  try {
    (void)session->crypt->create_data_key({"azure", std::string(kEndpoint), "k", ""});
  } catch (const azkms::Error&) {
  } catch (const std::exception& other) {
    std::fprintf(stderr, "unexpected exception: %s\n", other.what());
    fail("create_data_key threw something other than azkms::Error");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    fuzz_request(input);
  } else if (input.size() >= 2) {
    const int raw =
        (static_cast<unsigned char>(input[0]) << 8) | static_cast<unsigned char>(input[1]);
    fuzz_answer(100 + raw % 500, input.substr(2));
  }
  return 0;
}
