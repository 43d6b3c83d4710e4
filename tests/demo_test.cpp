// run_demo: the walk-through completes for the default App Service environment, for other
// environments and for a user-assigned identity, and never prints a token.
#include <gtest/gtest.h>

#include <sstream>

#include "azkms/error.hpp"
#include "azkms/log.hpp"
#include "demo.hpp"
#include "emulator.hpp"

namespace azkms {
namespace {

void expect_no_token_in(const std::string& output) {
  // Tokens the emulator issues are opaque strings; the demo prints only the redacted form.
  EXPECT_NE(output.find("[redacted"), std::string::npos) << output;
  EXPECT_EQ(output.find("accessToken"), std::string::npos) << output;
  EXPECT_EQ(output.find("Bearer "), std::string::npos) << output;
}

TEST(DemoTest, AppServiceByDefault) {
  std::ostringstream out;
  const DemoReport report = run_demo(DemoOptions{}, out);
  const std::string text = out.str();
  EXPECT_EQ(report.source, "App Service");
  EXPECT_EQ(report.token_requests, 1u);
  // wrapkey, unwrapkey for the first encryption, unwrapkey again in the fresh session.
  EXPECT_EQ(report.key_vault_requests, 3u);
  EXPECT_EQ(report.data_key_id.size(), 36u);
  EXPECT_NE(text.find("created a data key"), std::string::npos) << text;
  EXPECT_NE(text.find("(matches)"), std::string::npos) << text;
  EXPECT_NE(text.find("IDENTITY_ENDPOINT, IDENTITY_HEADER"), std::string::npos) << text;
  EXPECT_NE(text.find(" ms] "), std::string::npos) << text;
  expect_no_token_in(text);
}

TEST(DemoTest, AUserAssignedIdentityOnImds) {
  std::ostringstream out;
  DemoOptions options;
  options.environment = SourceKind::kImds;
  options.identity = IdentitySelector::client_id(emulator::default_identities()[1].client_id);
  const DemoReport report = run_demo(options, out);
  EXPECT_EQ(report.source, "IMDS");
  EXPECT_NE(out.str().find("client id " + emulator::default_identities()[1].client_id),
            std::string::npos)
      << out.str();
  expect_no_token_in(out.str());
}

TEST(DemoTest, OtherEnvironments) {
  for (const SourceKind kind :
       {SourceKind::kAppService2017, SourceKind::kAzureMl, SourceKind::kCloudShell,
        SourceKind::kServiceFabric, SourceKind::kWorkloadIdentity}) {
    std::ostringstream out;
    DemoOptions options;
    options.environment = kind;
    options.force_source = true;
    try {
      const DemoReport report = run_demo(options, out);
      EXPECT_EQ(report.source, display_name(kind));
    } catch (const Error& e) {
      ADD_FAILURE() << to_string(kind) << ": " << e.what() << "\n" << out.str();
    }
    expect_no_token_in(out.str());
  }
}

TEST(DemoTest, ACustomEnvironmentIsRefused) {
  std::ostringstream out;
  DemoOptions options;
  options.environment = SourceKind::kCustom;
  try {
    (void)run_demo(options, out);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
  }
}

TEST(DemoTest, AnIdentityTheSourceCannotSelectFailsNamingTheStep) {
  std::ostringstream out;
  DemoOptions options;
  options.environment = SourceKind::kCloudShell;
  options.identity = IdentitySelector::client_id("abc");
  try {
    (void)run_demo(options, out);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupportedSelector) << e.what();
    EXPECT_NE(std::string(e.what()).find("demo step \"created a data key"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace azkms
