// The internal helpers every part of the tree shares (src/text.hpp, src/encoding.hpp,
// src/url.hpp): one home each, so one test each.
#include <gtest/gtest.h>

#include <string>

#include "encoding.hpp"
#include "text.hpp"
#include "url.hpp"

namespace azkms {
namespace {

using namespace std::string_literals;

TEST(Text, IequalsFoldsAsciiCaseOnly) {
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("abc", "abcd"));
  EXPECT_FALSE(iequals("\xc9", "\xe9"));  // Latin-1 É and é: not ASCII
}

TEST(Text, TrimRemovesTheGivenCharactersAtBothEnds) {
  EXPECT_EQ(trim(" \t a b \t "), "a b");
  EXPECT_EQ(trim("\r\n value\r\n"), "\r\n value\r\n");  // by default blanks only
  EXPECT_EQ(trim("\r\n value\r\n", " \t\r\n"), "value");
  EXPECT_EQ(trim(" \v\f x \n", kAsciiWhitespace), "x");
  EXPECT_EQ(trim("   "), "");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim("  a  ", " "), "a");
}

TEST(Encoding, HexInBothCases) {
  EXPECT_EQ(hex_encode(""), "");
  EXPECT_EQ(hex_encode("\x00\x01\xab\xff"s), "0001ABFF");
  EXPECT_EQ(hex_encode("\x00\x01\xab\xff"s, HexCase::kLower), "0001abff");
  const std::string big(5'000'000, '\x5a');
  const std::string encoded = hex_encode(big);
  ASSERT_EQ(encoded.size(), big.size() * 2);
  EXPECT_EQ(encoded.find_first_not_of("5A"), std::string::npos);
}

TEST(Encoding, RandomHexHasTwoLowerCaseDigitsPerByte) {
  const std::string a = random_hex(16);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, random_hex(16));
  EXPECT_EQ(random_hex(0), "");
}

TEST(Encoding, Base64urlRoundTripsWithoutPadding) {
  EXPECT_EQ(base64url_encode(""), "");
  EXPECT_EQ(base64url_encode("f"), "Zg");
  EXPECT_EQ(base64url_encode("fo"), "Zm8");
  EXPECT_EQ(base64url_encode("foo"), "Zm9v");
  EXPECT_EQ(base64url_encode("\xfb\xff"s), "-_8");  // '+' and '/' in standard base64
  for (const std::string& text :
       {""s, "a"s, "ab"s, "abc"s, "\x00\xfb\xff\x10"s, std::string(4'000'000, '\xfe')}) {
    EXPECT_EQ(base64url_decode(base64url_encode(text)), text);
  }
  EXPECT_EQ(base64url_decode("Zg=="), "f");
  EXPECT_EQ(base64url_decode("-_8"), "\xfb\xff"s);
  EXPECT_FALSE(base64url_decode("Zm9v!"));
  EXPECT_FALSE(base64url_decode("Z"));
  EXPECT_FALSE(base64url_decode("+/8"));  // standard alphabet, not base64url
}

TEST(Encoding, PercentEncodingKeepsOnlyUnreservedCharacters) {
  EXPECT_EQ(percent_encode(""), "");
  EXPECT_EQ(percent_encode("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(percent_encode("a b&c=d/e?f#g+h"), "a%20b%26c%3Dd%2Fe%3Ff%23g%2Bh");
  EXPECT_EQ(percent_encode("\xc3\xa9"), "%C3%A9");
  EXPECT_EQ(percent_encode("\xc3\xa9", HexCase::kLower), "%c3%a9");
  EXPECT_EQ(percent_encode("A\xab"
                           "B",
                           HexCase::kLower),
            "A%abB");  // letters outside %XX stay
  EXPECT_EQ(percent_encode("a\0b"s), "a%00b");
}

TEST(Encoding, PercentDecodingLeavesWhatIsNotAnEscape) {
  EXPECT_EQ(percent_decode(""), "");
  EXPECT_EQ(percent_decode("a%20b%2fc%2F"), "a b/c/");
  EXPECT_EQ(percent_decode("100%"), "100%");
  EXPECT_EQ(percent_decode("%4"), "%4");
  EXPECT_EQ(percent_decode("%zz%41"), "%zzA");
  EXPECT_EQ(percent_decode("a%00b"), "a\0b"s);
  EXPECT_EQ(percent_decode("a+b"), "a+b");  // not form decoding
  // Longer than one slice, with escapes across every boundary.
  std::string long_text;
  for (int i = 0; i < 1'500'000; ++i) long_text += "%41";
  EXPECT_EQ(percent_decode(long_text), std::string(1'500'000, 'A'));
  EXPECT_EQ(percent_decode(percent_encode(std::string(5'000'000, '/'))),
            std::string(5'000'000, '/'));
}

TEST(Url, SplitsAbsoluteUrls) {
  const auto parts = split_url("HTTPS://user:pw@Example.com:8443/a/b?x=1#frag");
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->scheme, "https");
  EXPECT_EQ(parts->port, "8443");
  EXPECT_EQ(parts->path, "/a/b");
  EXPECT_EQ(parts->query, "x=1");
  EXPECT_TRUE(parts->has_credentials);
  EXPECT_TRUE(parts->has_fragment);
  EXPECT_EQ(parts->without_query().find("pw"), std::string::npos);
  EXPECT_EQ(parts->without_query().find("x=1"), std::string::npos);

  const auto plain = split_url("http://[::1]:40342/metadata");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->host, "[::1]");
  EXPECT_EQ(plain->without_query(), "http://[::1]:40342/metadata");
  EXPECT_FALSE(plain->query);
  EXPECT_FALSE(plain->has_credentials);

  EXPECT_FALSE(split_url("not a url"));
  EXPECT_FALSE(split_url("127.0.0.1:8080/x"));  // no scheme: no guessing
  EXPECT_FALSE(split_url(""));
}

TEST(Url, ForMessagesDropsCredentialsAndQueryAndStaysPrintable) {
  EXPECT_EQ(
      url_for_messages("https://user:secret@vault.example:443/keys/k/wrapkey?api-version=7.1"),
      "https://vault.example:443/keys/k/wrapkey");
  EXPECT_EQ(url_for_messages("not a url?token=abc"), "not a url");
  EXPECT_EQ(url_for_messages("http://127.0.0.1/\x1b[31m").find('\x1b'), std::string::npos);
  const std::string shown = url_for_messages("garbage \x1b\n" + std::string(500, 'x'), 100);
  EXPECT_LE(shown.size(), 103u);
  EXPECT_EQ(shown.find('\x1b'), std::string::npos);
  EXPECT_EQ(shown.find('\n'), std::string::npos);
}

TEST(Url, LoopbackByAddress) {
  for (const char* host : {"localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "::1", "[::1]",
                           "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(is_loopback_host(host)) << host;
  }
  for (const char* host : {"", "169.254.169.254", "10.0.0.1", "128.0.0.1", "::2", "[::2]",
                           "127.0.0.1.example.com", "localhost.example.com", "::ffff:10.0.0.1"}) {
    EXPECT_FALSE(is_loopback_host(host)) << host;
  }
  EXPECT_TRUE(is_loopback_url("http://127.0.0.1:8080/x"));
  EXPECT_TRUE(is_loopback_url("http://localhost:40342/metadata"));
  EXPECT_TRUE(is_loopback_url("http://[::1]:1/x"));
  EXPECT_FALSE(is_loopback_url("http://169.254.169.254/metadata/identity/oauth2/token"));
  EXPECT_FALSE(is_loopback_url("https://login.microsoftonline.com/t/oauth2/v2.0/token"));
  EXPECT_FALSE(is_loopback_url("http://127.0.0.1.example.com/x"));
  EXPECT_FALSE(is_loopback_url("not a url"));
}

}  // namespace
}  // namespace azkms
