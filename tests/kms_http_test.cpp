// The Key Vault exchange as libmongocrypt sees it (src/kms/kms_http.hpp): its raw request read
// into an HttpRequest for libcurl, the answer rebuilt as raw bytes, the error code of an error
// body. fuzz/kms_exchange_fuzzer.cpp checks the same properties on any input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "azkms/error.hpp"
#include "kms/kms_http.hpp"

namespace azkms {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kBody = R"({"alg":"RSA-OAEP-256","value":"QUJD"})";

std::string request_bytes(const std::string& target = "/keys/k//wrapkey?api-version=7.1",
                          const std::string& extra_headers = "") {
  return "POST " + target +
         " HTTP/1.1\r\nAuthorization: Bearer tok-1\r\nContent-Type: application/json\r\n"
         "Host: vault.example.net\r\nContent-Length: " +
         std::to_string(kBody.size()) + "\r\n" + extra_headers + "\r\n" + kBody;
}

TEST(KmsHttp, ReadsLibmongocryptsRequest) {
  const HttpRequest request = parse_kms_request(request_bytes(), "vault.example.net");
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, "https://vault.example.net/keys/k//wrapkey?api-version=7.1");
  EXPECT_EQ(request.body, kBody);
  // Host and Content-Length are libcurl's to set; Authorization is sensitive.
  EXPECT_THAT(request.headers, ElementsAre(HttpHeader{"Authorization", "Bearer tok-1", true},
                                           HttpHeader{"Content-Type", "application/json", false}));
}

// What would put another header on the wire, or send the request (and its token) to another
// host, is refused rather than passed to libcurl.
TEST(KmsHttp, RefusesWhatWouldChangeTheWireOrTheHost) {
  const struct {
    std::string bytes;
    const char* says;
  } cases[] = {
      {request_bytes("/k", "X-Token: a\rX-Injected: 1\r\n"), "control character in header X-Token"},
      {request_bytes("/k", "X-Token: a\nX-Injected: 1\r\n"), "control character in header X-Token"},
      {request_bytes("/k", std::string("X-Nul: a\0b\r\n", 12)), "control character in header"},
      {request_bytes("@evil.example/keys/k"), "target is not a path"},
      {request_bytes("/keys/a b/wrapkey"), "target is not a path"},
      {request_bytes("/k\x1b[31m"), "control character in its request line"},
      {request_bytes("/k", "no colon here\r\n"), "malformed header line"},
      {request_bytes("/k", ": empty name\r\n"), "malformed header line"},
  };
  for (const auto& test : cases) {
    SCOPED_TRACE(test.says);
    try {
      const HttpRequest request = parse_kms_request(test.bytes, "vault.example.net");
      ADD_FAILURE() << "accepted, as " << request.url;
    } catch (const Error& error) {
      EXPECT_EQ(error.code(), ErrorCode::kKms);
      EXPECT_THAT(error.what(), HasSubstr(test.says));
      EXPECT_THAT(error.what(), ::testing::Not(HasSubstr("tok-1")));
    }
  }
}

TEST(KmsHttp, RebuildsTheAnswerWithExactFraming) {
  EXPECT_EQ(kms_response_bytes({200, {}, "{}"}),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
}

TEST(KmsHttp, ErrorCodeIsShortAndPrintable) {
  EXPECT_EQ(key_vault_error_code(R"({"error":{"code":"Forbidden","message":"m"}})"), "Forbidden");
  EXPECT_EQ(key_vault_error_code("<html>"), "");
  EXPECT_EQ(key_vault_error_code(R"({"error":{"code":12}})"), "");
  const std::string code =
      key_vault_error_code(R"({"error":{"code":"\u001b[31m)" + std::string(500, 'C') + R"("}})");
  EXPECT_LE(code.size(), 70u);
  EXPECT_EQ(code.find('\x1b'), std::string::npos);
}

}  // namespace
}  // namespace azkms
