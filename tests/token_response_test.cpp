// Token response parsing: every expiry shape in the reference sheet gives the same absolute
// expiry, and every malformed body is a kMalformedResponse whose message holds no token.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "azkms/error.hpp"
#include "redaction.hpp"
#include "token_response.hpp"

namespace azkms {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::string_view kToken = "SEKRIT-eyJhbGciOi-token-value-0123456789";

// 2021-07-02T08:00:34Z, the instant every shape below names.
const SystemTime kExpiry{seconds{1'625'212'834}};
// The request was sent an hour before.
const SystemTime kSent = kExpiry - hours{1};

std::string body_with(const std::string& fields) {
  return R"({"access_token": ")" + std::string(kToken) + R"(", "token_type": "Bearer", )" + fields +
         "}";
}

// Parses and returns the error, failing the test if parsing succeeds.
Error parse_error(const std::string& body) {
  try {
    parse_token_response(body, kSent);
  } catch (const Error& error) {
    return error;
  }
  ADD_FAILURE() << "parsed without error: " << body;
  return Error(ErrorCode::kConfiguration, "no error");
}

struct ShapeCase {
  const char* name;
  std::string fields;
};

// Test names and failure reports show the case's name, not a dump of its bytes.
void PrintTo(const ShapeCase& c, std::ostream* os) { *os << c.name; }

class ExpiryShape : public ::testing::TestWithParam<ShapeCase> {};

TEST_P(ExpiryShape, ParsesToTheSameAbsoluteExpiry) {
  const AccessToken token = parse_token_response(body_with(GetParam().fields), kSent);
  EXPECT_EQ(token.expires_on, kExpiry) << GetParam().fields;
  EXPECT_EQ(token.token.reveal(), kToken);
  EXPECT_EQ(token.token_type, "Bearer");
  EXPECT_FALSE(token.refresh_on.has_value());
}

INSTANTIATE_TEST_SUITE_P(
    ReferenceSheet, ExpiryShape,
    ::testing::Values(
        ShapeCase{"ExpiresInNumber", R"("expires_in": 3600)"},
        ShapeCase{"ExpiresInString", R"("expires_in": "3600")"},
        ShapeCase{"ExpiresInFloat", R"("expires_in": 3600.0)"},
        ShapeCase{"ExpiresOnEpochNumber", R"("expires_on": 1625212834)"},
        ShapeCase{"ExpiresOnEpochString", R"("expires_on": "1625212834")"},
        ShapeCase{"AppService2017Linux", R"("expires_on": "07/02/2021 08:00:34 +00:00")"},
        ShapeCase{"AppService2017LinuxOffset", R"("expires_on": "07/02/2021 10:00:34 +02:00")"},
        ShapeCase{"AppService2017WindowsAm", R"("expires_on": "7/2/2021 8:00:34 AM +00:00")"},
        ShapeCase{"AppService2017WindowsPm", R"("expires_on": "7/2/2021 8:00:34 PM +12:00")"},
        ShapeCase{"AppService2017WindowsNoon", R"("expires_on": "7/2/2021 12:00:34 PM +04:00")"},
        ShapeCase{"Rfc3339Z", R"("expires_on": "2021-07-02T08:00:34Z")"},
        ShapeCase{"Rfc3339LowerZ", R"("expires_on": "2021-07-02t08:00:34z")"},
        ShapeCase{"Rfc3339ZeroFraction", R"("expires_on": "2021-07-02T08:00:34.000Z")"},
        ShapeCase{"Rfc3339Offset", R"("expires_on": "2021-07-02T10:00:34+02:00")"},
        ShapeCase{"Rfc3339NegativeOffset", R"("expires_on": "2021-07-02T03:00:34-05:00")"},
        ShapeCase{"Rfc3339CompactOffset", R"("expires_on": "2021-07-02T10:00:34+0200")"},
        ShapeCase{"Rfc3339NoOffsetIsUtc", R"("expires_on": "2021-07-02T08:00:34")"},
        ShapeCase{"SpaceSeparatedZ", R"("expires_on": "2021-07-02 08:00:34Z")"},
        ShapeCase{"SpaceSeparatedSpaceZ", R"("expires_on": "2021-07-02 08:00:34 Z")"},
        ShapeCase{"Rfc1123", R"("expires_on": "Fri, 02 Jul 2021 08:00:34 GMT")"},
        ShapeCase{"ImdsBoth", R"("expires_in": "3600", "expires_on": "1625212834")"},
        ShapeCase{"PaddedEpoch", R"("expires_on": " 1625212834 ")"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ExpiresOn, FractionsAreKeptToTheMicrosecond) {
  EXPECT_EQ(parse_expires_on("2021-07-02T08:00:34.5Z"), kExpiry + microseconds{500'000});
  // .NET writes seven digits.
  EXPECT_EQ(parse_expires_on("2021-07-02T08:00:34.1234567Z"), kExpiry + microseconds{123'456});
  EXPECT_EQ(parse_expires_on("2021-07-02T10:00:34.25+02:00"), kExpiry + microseconds{250'000});
}

TEST(ExpiresOn, TwelveAmIsMidnightAndTwelvePmIsNoon) {
  EXPECT_EQ(parse_expires_on("1/16/2020 12:24:12 AM +00:00"), SystemTime{seconds{1'579'134'252}});
  EXPECT_EQ(parse_expires_on("1/16/2020 12:24:12 PM +00:00"),
            SystemTime{seconds{1'579'134'252 + 12 * 3600}});
  EXPECT_EQ(parse_expires_on("1/16/2020 5:24:12 AM +00:00"), SystemTime{seconds{1'579'152'252}});
  EXPECT_EQ(parse_expires_on("1/16/2020 5:24:12 pm +00:00"),
            SystemTime{seconds{1'579'152'252 + 12 * 3600}});
}

TEST(ExpiresOn, ReferenceSheetExamples) {
  EXPECT_EQ(parse_expires_on("1586984735"), SystemTime{seconds{1'586'984'735}});
  EXPECT_EQ(parse_expires_on("06/19/2019 23:42:01 +00:00"), SystemTime{seconds{1'560'987'721}});
}

TEST(ExpiresOn, RefusesWhatIsNotADate) {
  for (const char* text :
       {"", "   ", "tomorrow", "2021-02-30T00:00:00Z", "2021-07-02T25:00:34Z",
        "13/02/2021 08:00:34 +00:00", "7/2/2021 13:00:34 PM +00:00", "7/2/2021 0:00:34 AM +00:00",
        "7/2/2021 8:00:34 XM +00:00", "Mon, 02 Jul 2021 08:00:34 GMT", "2021-07-02T08:00:34Zjunk",
        "-1625212834", "99999999999999999999999", "1e9", "2021-07-02T08:00:34+99:99",
        "9999-12-31T23:59:59Z", "/", "1/", "1/2/2021 5:00:00 A"}) {
    EXPECT_EQ(parse_expires_on(text), std::nullopt) << text;
  }
}

TEST(ParseSeconds, NumbersAndNumericStringsOnly) {
  EXPECT_EQ(parse_seconds("3599"), 3599);
  EXPECT_EQ(parse_seconds(" 70 "), 70);
  EXPECT_EQ(parse_seconds("0"), 0);
  for (const char* text : {"", "-1", "1e3", "12abc", "abc", "3.5", "+5", "99999999999999999999"}) {
    EXPECT_EQ(parse_seconds(text), std::nullopt) << text;
  }
}

TEST(ParseTokenResponse, RefreshInSetsRefreshOn) {
  auto token =
      parse_token_response(body_with(R"("expires_in": 86400, "refresh_in": 43200)"), kSent);
  ASSERT_TRUE(token.refresh_on.has_value());
  EXPECT_EQ(*token.refresh_on, kSent + hours{12});
  EXPECT_EQ(token.expires_on, kSent + hours{24});

  token = parse_token_response(body_with(R"("expires_in": 86400, "refresh_in": "1800")"), kSent);
  ASSERT_TRUE(token.refresh_on.has_value());
  EXPECT_EQ(*token.refresh_on, kSent + seconds{1800});
}

TEST(ParseTokenResponse, ReadsTheOtherFields) {
  const auto token = parse_token_response(
      R"({"access_token":"abc","expires_in":"70","token_type":"bearer",)"
      R"("resource":"https://vault.azure.net","client_id":"1111-2222","refresh_token":""})",
      kSent);
  EXPECT_EQ(token.token.reveal(), "abc");
  EXPECT_EQ(token.expires_on, kSent + seconds{70});
  EXPECT_EQ(token.token_type, "bearer");
  EXPECT_EQ(token.resource, "https://vault.azure.net");
  EXPECT_EQ(token.client_id, "1111-2222");
}

TEST(ParseTokenResponse, MongoDbTestServerShape) {
  const auto token = parse_token_response(
      R"({"access_token": "magic-cookie", "expires_in": "70", "token_type": "Bearer", )"
      R"("resource": "https://vault.azure.net"})",
      kSent);
  EXPECT_EQ(token.token.reveal(), "magic-cookie");
  EXPECT_EQ(token.expires_on - kSent, seconds{70});
}

TEST(ParseTokenResponse, AcceptsAByteOrderMarkAndSurroundingWhitespace) {
  const auto token =
      parse_token_response("\xEF\xBB\xBF \n" + body_with(R"("expires_in": 3600)") + "\n", kSent);
  EXPECT_EQ(token.expires_on, kExpiry);
}

TEST(ParseTokenResponse, TokenTypeDefaultsToBearer) {
  const auto token =
      parse_token_response(R"({"access_token":"abc","expires_on":"1625212834"})", kSent);
  EXPECT_EQ(token.token_type, "Bearer");
  EXPECT_TRUE(token.client_id.empty());
}

struct MalformedCase {
  const char* name;
  std::string body;
  const char* says;  // a phrase the message must contain
};

void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.name; }

class Malformed : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(Malformed, IsATypedErrorWithoutTheToken) {
  const Error error = parse_error(GetParam().body);
  EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << error.what();
  EXPECT_THAT(error.what(), HasSubstr(GetParam().says));
  EXPECT_THAT(error.what(), Not(HasSubstr("SEKRIT")));
  EXPECT_THAT(error.what(), Not(HasSubstr("token-value")));
}

const std::string kT = std::string(kToken);

INSTANTIATE_TEST_SUITE_P(
    Bodies, Malformed,
    ::testing::Values(
        MalformedCase{"EmptyBody", "", "empty"}, MalformedCase{"Whitespace", " \r\n ", "empty"},
        MalformedCase{"EmptyJson", "{}", "no access_token"},
        MalformedCase{"BadJson", R"({"key": })", "not valid JSON"},
        MalformedCase{"TruncatedWithToken", R"({"access_token": ")" + kT + R"(", "expires_in": )",
                      "not valid JSON"},
        MalformedCase{"UnterminatedToken", R"({"access_token": ")" + kT, "not valid JSON"},
        MalformedCase{"Html", "<html><body>access_token=" + kT + "</body></html>", "HTML or XML"},
        MalformedCase{"Xml", R"(<?xml version="1.0"?><error>nope</error>)", "HTML or XML"},
        MalformedCase{"Array", R"([{"access_token": ")" + kT + R"("}])", "JSON array"},
        MalformedCase{"String", R"(")" + kT + R"(")", "JSON string"},
        MalformedCase{"NumberToken", R"({"access_token": 1234567890, "expires_in": 3600})",
                      "not a string"},
        MalformedCase{"ObjectToken", R"({"access_token": {"v": ")" + kT + R"("}})", "not a string"},
        MalformedCase{"NullToken", R"({"access_token": null, "expires_in": 3600})",
                      "no access_token"},
        MalformedCase{"EmptyToken", R"({"access_token": "", "expires_in": 3600})", "empty"},
        MalformedCase{"NoExpiry", R"({"access_token": ")" + kT + R"("})",
                      "neither expires_in nor expires_on"},
        MalformedCase{"ExpiresInWord", R"({"access_token": ")" + kT + R"(", "expires_in": "soon"})",
                      "expires_in"},
        MalformedCase{"ExpiresInNegative", R"({"access_token": ")" + kT + R"(", "expires_in": -5})",
                      "expires_in"},
        MalformedCase{"ExpiresInNegativeString",
                      R"({"access_token": ")" + kT + R"(", "expires_in": "-5"})", "expires_in"},
        MalformedCase{"ExpiresInBool", R"({"access_token": ")" + kT + R"(", "expires_in": true})",
                      "expires_in"},
        MalformedCase{"ExpiresInHuge", R"({"access_token": ")" + kT + R"(", "expires_in": 1e30})",
                      "expires_in"},
        MalformedCase{"ExpiresOnWord",
                      R"({"access_token": ")" + kT + R"(", "expires_on": "tomorrow"})",
                      "expires_on"},
        MalformedCase{"ExpiresOnHuge",
                      R"({"access_token": ")" + kT + R"(", "expires_on": 100000000000000000000})",
                      "expires_on"},
        MalformedCase{"ExpiresOnObject",
                      R"({"access_token": ")" + kT + R"(", "expires_on": {"a": 1}})", "expires_on"},
        MalformedCase{"GoodInBadOn",
                      R"({"access_token": ")" + kT +
                          R"(", "expires_in": 3600, "expires_on": "06/31/2021 00:00:00 +00:00"})",
                      "expires_on"},
        MalformedCase{
            "RefreshInWord",
            R"({"access_token": ")" + kT + R"(", "expires_in": 3600, "refresh_in": "later"})",
            "refresh_in"},
        MalformedCase{"ClientIdNumber",
                      R"({"access_token": ")" + kT + R"(", "expires_in": 3600, "client_id": 7})",
                      "client_id"},
        MalformedCase{"TokenTypeArray",
                      R"({"access_token": ")" + kT + R"(", "expires_in": 3600, "token_type": []})",
                      "token_type"}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- header injection: the token must be an RFC 6750 b64token ----

std::string body_with_token(const std::string& json_escaped_token) {
  return R"({"access_token": ")" + json_escaped_token + R"(", "expires_in": 3600})";
}

TEST(ParseTokenResponse, RefusesATokenThatWouldForgeAHeader) {
  // JSON escapes, as an endpoint would send them; each decodes to a byte outside b64token.
  for (const std::string& bad :
       {kT + R"(\r\nX-Injected: yes)", kT + R"(\n)", R"(\r)" + kT, kT + " " + kT, kT + R"(\t)",
        kT + R"(\u0000)", kT + R"(\u0001)", kT + R"(\u00e9)", kT + R"(\")", kT + ",x", kT + ":x",
        kT + ";x", kT + "=" + kT, std::string("===")}) {
    const Error error = parse_error(body_with_token(bad));
    EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << bad;
    EXPECT_THAT(error.what(), HasSubstr("access token")) << bad;
    EXPECT_THAT(error.what(), HasSubstr("RFC 6750")) << bad;
    EXPECT_THAT(error.what(), Not(HasSubstr("SEKRIT"))) << bad;
    EXPECT_THAT(error.what(), Not(HasSubstr("token-value"))) << bad;
    EXPECT_THAT(error.what(), Not(HasSubstr("X-Injected"))) << bad;
    for (char c : std::string(error.what())) {
      EXPECT_FALSE(c == '\r' || c == '\n') << "a line break in the message for " << bad;
    }
  }
}

TEST(ParseTokenResponse, AcceptsEveryB64TokenCharacter) {
  for (const std::string& good :
       {std::string("ABCxyz0189-._~+/"), std::string("abc="), std::string("abc=="),
        std::string("a"), std::string("eyJ0eXAi.eyJhdWQi.c2ln-_"), std::string("~~~")}) {
    const AccessToken token = parse_token_response(body_with_token(good), kSent);
    EXPECT_EQ(token.token.reveal(), good);
  }
}

TEST(TokenDefect, NamesTheProblemWithoutTheToken) {
  AccessToken token;
  token.expires_on = kExpiry;
  token.token = Secret(std::string(kToken) + "\r\nHost: evil");
  auto defect = token_defect(token, kSent);
  ASSERT_TRUE(defect.has_value());
  EXPECT_THAT(*defect, HasSubstr("line break"));
  EXPECT_THAT(*defect, HasSubstr("byte " + std::to_string(kToken.size() + 1)));
  EXPECT_THAT(*defect, Not(HasSubstr("SEKRIT")));
  EXPECT_THAT(*defect, Not(HasSubstr("evil")));

  token.token = Secret("ab=cd");
  ASSERT_TRUE(token_defect(token, kSent).has_value());
  EXPECT_THAT(*token_defect(token, kSent), HasSubstr("'=' before the end"));
  token.token = Secret("");
  EXPECT_THAT(token_defect(token, kSent).value_or(""), HasSubstr("empty"));
  token.token = Secret("ok-token");
  EXPECT_EQ(token_defect(token, kSent), std::nullopt);
  EXPECT_TRUE(token_defect(token, kExpiry).has_value());  // expires at the very instant
}

// ---- expiry already past when the token arrives ----

TEST(ParseTokenResponse, ATokenAlreadyExpiredIsATypedErrorNamingBothClocks) {
  // kSent is 2021-07-02T07:00:34Z.
  const std::vector<std::pair<std::string, std::string>> cases{
      {R"("expires_on": 1)", "1970-01-01T00:00:01Z"},
      {R"("expires_on": "0")", "1970-01-01T00:00:00Z"},
      {R"("expires_on": 1500000000)", "2017-07-14T02:40:00Z"},
      {R"("expires_on": "1500000000")", "2017-07-14T02:40:00Z"},
      {R"("expires_on": "07/14/2017 02:40:00 +00:00")", "2017-07-14T02:40:00Z"},
      {R"("expires_on": "2021-07-02T07:00:33Z")", "2021-07-02T07:00:33Z"},
      {R"("expires_in": 0)", "2021-07-02T07:00:34Z"},
      {R"("expires_in": "0")", "2021-07-02T07:00:34Z"},
      {R"("expires_in": 0.4)", "2021-07-02T07:00:34Z"},
      {R"("expires_in": "", "expires_on": 1500000000)", "2017-07-14T02:40:00Z"}};
  for (const auto& [fields, expiry] : cases) {
    const Error error = parse_error(body_with(fields));
    EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << fields;
    EXPECT_THAT(error.what(), HasSubstr("already expired")) << fields;
    EXPECT_THAT(error.what(), HasSubstr(expiry)) << fields;
    EXPECT_THAT(error.what(), HasSubstr("2021-07-02T07:00:34Z")) << fields;  // the local clock
    EXPECT_THAT(error.what(), HasSubstr("clock skew")) << fields;
    EXPECT_THAT(error.what(), Not(HasSubstr("SEKRIT"))) << fields;
  }
}

TEST(ParseTokenResponse, ALifetimeOfOneSecondIsStillAToken) {
  // Short-lived tokens are the cache's business (its minimum remaining life), not an error.
  const auto token = parse_token_response(body_with(R"("expires_in": 1)"), kSent);
  EXPECT_EQ(token.expires_on, kSent + seconds{1});
}

// ---- expiry fields present but empty count as absent ----

TEST(ParseTokenResponse, AnEmptyExpiryFieldCountsAsAbsent) {
  for (const char* fields :
       {R"("expires_in": "", "expires_on": "1625212834")",
        R"("expires_in": "  ", "expires_on": 1625212834)",
        R"("expires_on": "", "expires_in": 3600)", R"("expires_on": "", "expires_in": "3600")",
        R"("expires_in": 3600, "refresh_in": "")",
        R"("expires_in": null, "expires_on": 1625212834)"}) {
    const AccessToken token = parse_token_response(body_with(fields), kSent);
    EXPECT_EQ(token.expires_on, kExpiry) << fields;
    EXPECT_FALSE(token.refresh_on.has_value()) << fields;
  }
}

TEST(ParseTokenResponse, AllExpiryFieldsAbsentOrEmptyIsOneAndTheSameError) {
  // Absent, null and empty read alike: no expiry at all, which stays an error.
  for (const char* fields :
       {R"("x": 1)", R"("expires_in": "")", R"("expires_on": "")",
        R"("expires_in": "", "expires_on": "")", R"("expires_in": null, "expires_on": " ")"}) {
    const Error error = parse_error(body_with(fields));
    EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << fields;
    EXPECT_THAT(error.what(), HasSubstr("neither expires_in nor expires_on")) << fields;
  }
}

// ---- durations and instants from the endpoint that would overflow ----

TEST(ParseTokenResponse, HugeOrNegativeDurationsAndInstantsAreRefusedWithoutOverflow) {
  for (const char* fields :
       {R"("expires_in": 9223372036854775807)", R"("expires_in": "9223372036854775807")",
        R"("expires_in": 18446744073709551615)", R"("expires_in": -9223372036854775808)",
        R"("expires_in": 1e308)", R"("expires_in": -1e308)", R"("expires_in": 316224001)",
        R"("expires_on": 9223372036854775807)", R"("expires_on": "9223372036854775807")",
        R"("expires_on": 18446744073709551615)", R"("expires_on": -9223372036854775808)",
        R"("expires_on": 1e19)", R"("expires_on": "2262-04-12T00:00:00Z")",
        R"("expires_on": "Sat, 01 Jan 2300 00:00:00 GMT")",
        R"("expires_in": 3600, "refresh_in": 9223372036854775807)",
        R"("expires_in": 3600, "refresh_in": -1)", R"("expires_in": 3600, "refresh_in": 1e300)",
        R"("expires_in": 3600, "refresh_in": "-9223372036854775808")"}) {
    const Error error = parse_error(body_with(fields));
    EXPECT_EQ(error.code(), ErrorCode::kMalformedResponse) << fields;
  }
  // The far end of what is accepted still computes.
  const auto far = parse_token_response(body_with(R"("expires_on": 7258118400)"), kSent);
  EXPECT_EQ(far.expires_on, SystemTime{kLatestExpiry});
  const auto long_lived =
      parse_token_response(body_with(R"("expires_in": 315360000, "refresh_in": 315360000)"), kSent);
  EXPECT_EQ(long_lived.expires_on, kSent + seconds{315'360'000});
}

// ---- the resource a response names ----

TEST(SameResource, NormalisesATrailingSlashAndTheCaseOfSchemeAndHost) {
  EXPECT_TRUE(same_resource("https://vault.azure.net", "https://vault.azure.net"));
  EXPECT_TRUE(same_resource("https://vault.azure.net", "https://vault.azure.net/"));
  EXPECT_TRUE(same_resource("HTTPS://Vault.Azure.NET/", "https://vault.azure.net"));
  EXPECT_TRUE(same_resource("https://vault.azure.net:443/x", "https://VAULT.azure.net:443/x/"));
  EXPECT_TRUE(same_resource("api://abc", "api://ABC/"));
  EXPECT_TRUE(same_resource("00000000-1111-2222", "00000000-1111-2222"));
  EXPECT_FALSE(same_resource("https://vault.azure.net", "https://storage.azure.com"));
  EXPECT_FALSE(same_resource("https://vault.azure.net", "https://vault.azure.net.evil"));
  EXPECT_FALSE(same_resource("https://vault.azure.net", "http://vault.azure.net"));
  EXPECT_FALSE(same_resource("https://host/Path", "https://host/path"));  // paths keep case
  EXPECT_FALSE(same_resource("https://vault.azure.net", "https://vault.azure.net//"));
  EXPECT_FALSE(same_resource("https://vault.azure.net", ""));
}

TEST(BodyExcerpt, RemovesTokenValuesFromJsonAndForms) {
  const std::string json = R"({"token_type":"Bearer","access_token":")" + kT +
                           R"(","refresh_token": "R3fr3sh-value","expires_in":"70"})";
  const std::string excerpt = safe_excerpt(json, 1000);
  EXPECT_THAT(excerpt, Not(HasSubstr("SEKRIT")));
  EXPECT_THAT(excerpt, Not(HasSubstr("R3fr3sh")));
  EXPECT_THAT(excerpt, HasSubstr("expires_in"));
  EXPECT_THAT(excerpt, HasSubstr("[redacted]"));

  const std::string form = "client_id=abc&client_assertion=" + kT +
                           "&client_assertion_type=urn%3Aietf&Access_Token=" + kT;
  const std::string form_excerpt = safe_excerpt(form, 1000);
  EXPECT_THAT(form_excerpt, Not(HasSubstr("SEKRIT")));
  EXPECT_THAT(form_excerpt, HasSubstr("client_assertion_type=urn%3Aietf"));
  EXPECT_THAT(form_excerpt, HasSubstr("client_id=abc"));
}

TEST(BodyExcerpt, KeyNamesUsedAsValuesOrEscapedInsideStringsHideNothing) {
  // A key name in value position must not shield the value after it.
  EXPECT_THAT(safe_excerpt(R"({"access_token":"access_token":"abcdefghijklmnop"})", 1000),
              Not(HasSubstr("abcdefghijklmnop")));
  // A token quoted inside another string (escaped quotes), as an error description might.
  const std::string escaped =
      safe_excerpt(R"({"error_description":"got access_token\":\"abcdefghijklmnop\" back"})", 1000);
  EXPECT_THAT(escaped, Not(HasSubstr("abcdefghijklmnop")));
  EXPECT_THAT(escaped, HasSubstr("back"));
}

TEST(BodyExcerpt, RemovesJsonWebTokensAnywhere) {
  const std::string jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";
  const std::string excerpt = safe_excerpt("AADSTS70021: assertion " + jwt + " rejected", 1000);
  EXPECT_THAT(excerpt, Not(HasSubstr("eyJzdWIi")));
  EXPECT_THAT(excerpt, HasSubstr("AADSTS70021"));
  EXPECT_THAT(excerpt, HasSubstr("rejected"));
}

TEST(BodyExcerpt, IsShortAndPrintable) {
  const std::string long_body(5000, 'x');
  const std::string excerpt = safe_excerpt(long_body, 200);
  EXPECT_EQ(excerpt, std::string(200, 'x') + "...");
  EXPECT_EQ(safe_excerpt("a\nb\tc\x01\xff", 200), "a b c??");
  EXPECT_EQ(safe_excerpt("  spaced  ", 200), "spaced");
}

TEST(BodyExcerpt, RedactsBeforeTruncating) {
  // The key sits inside the limit and the value straddles it: no prefix of the value survives.
  const std::string body = R"({"access_token":")" + kT + R"("})";
  const std::string excerpt = safe_excerpt(body, 20);
  EXPECT_THAT(excerpt, Not(HasSubstr("SEK")));
}

}  // namespace
}  // namespace azkms
