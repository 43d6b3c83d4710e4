// Fuzzes the Azure Arc challenge: the `WWW-Authenticate` header of the agent's 401, which
// names a key file the client is to read and send back. The header comes from the network,
// so it must never make the client read a file it should not.
//
// The parser is private to src/sources/azure_arc.cpp, so the fuzzer drives the real source
// through a fake HTTP client: the first request gets 401 with the fuzzed header, a second
// request (the answer to the challenge) gets a token. A fixed key directory holds:
//   good.key    the only file whose contents may ever be sent;
//   big.key     4097 bytes (over the 4096-byte limit);
//   plain.txt   right size, wrong name;
//   link.key    a symbolic link to a file outside the directory;
//   sub/x.key   a key in a subdirectory;
//   pipe.key    a FIFO (opening it for reading would wait for a writer for ever);
//   fifo-link.key  a symbolic link to pipe.key;
//   dir.key     a directory;
// and a file outside the directory (outside.key) holds another secret. A realm naming the
// FIFO must end like any other refusal: libFuzzer's -timeout reports a hang.
// Checks beyond "no crash, no sanitizer report":
// - fetch() returns a token or throws azkms::Error (never another exception);
// - when a second request is sent, its Authorization header is exactly
//   "Basic <contents of good.key>": no other file's bytes ever leave the process;
// - no error message contains any key file's contents.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>

#include "azkms/error.hpp"
#include "azkms/http.hpp"
#include "sources/azure_arc.hpp"

namespace {

const std::string kRoot = "/tmp/azkms-arc-fuzz";
const std::string kDirectory = kRoot + "/tokens";
const std::string kGoodKey = "good-key-6c1f0d9e2b7a4f35";
const std::string kOutsideKey = "outside-key-93a2e8b1c04d";
const std::string kBigKey(4097, 'B');
const std::string kPlainKey = "plain-key-5d8e2f1a7b3c";
const std::string kSubKey = "sub-key-2e4f6a8c0b1d";

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "arc_challenge_fuzzer: %s\n", what);
  std::abort();
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

void prepare_directory() {
  ::mkdir(kRoot.c_str(), 0700);
  ::mkdir(kDirectory.c_str(), 0700);
  ::mkdir((kDirectory + "/sub").c_str(), 0700);
  write_file(kDirectory + "/good.key", kGoodKey);
  write_file(kDirectory + "/big.key", kBigKey);
  write_file(kDirectory + "/plain.txt", kPlainKey);
  write_file(kDirectory + "/sub/x.key", kSubKey);
  write_file(kRoot + "/outside.key", kOutsideKey);
  ::unlink((kDirectory + "/link.key").c_str());
  if (::symlink((kRoot + "/outside.key").c_str(), (kDirectory + "/link.key").c_str()) != 0) {
    fail("cannot create the symbolic link");
  }
  ::unlink((kDirectory + "/pipe.key").c_str());
  if (::mkfifo((kDirectory + "/pipe.key").c_str(), 0600) != 0) fail("cannot create the FIFO");
  ::unlink((kDirectory + "/fifo-link.key").c_str());
  if (::symlink((kDirectory + "/pipe.key").c_str(), (kDirectory + "/fifo-link.key").c_str()) != 0) {
    fail("cannot create the link to the FIFO");
  }
  ::mkdir((kDirectory + "/dir.key").c_str(), 0700);
}

class ChallengeClient final : public azkms::HttpClient {
 public:
  explicit ChallengeClient(std::string challenge) : challenge_(std::move(challenge)) {}

  azkms::HttpResponse send(const azkms::HttpRequest& request,
                           const azkms::HttpOptions& /*options*/) override {
    const auto authorization = request.header("Authorization");
    if (!authorization) {
      ++challenges_;
      azkms::HttpResponse response;
      response.status = 401;
      response.headers.push_back({"WWW-Authenticate", challenge_});
      response.body = R"({"error":"unauthorized"})";
      return response;
    }
    ++answers_;
    if (*authorization != "Basic " + kGoodKey) {
      fail("the challenge answer carries something other than good.key's contents");
    }
    azkms::HttpResponse response;
    response.status = 200;
    response.body =
        R"({"access_token":"arc-token-value","expires_in":"3599","token_type":"Bearer"})";
    return response;
  }

  std::atomic<int> challenges_{0};
  std::atomic<int> answers_{0};

 private:
  std::string challenge_;
};

// A key's contents in a message are a leak unless the fuzzed header itself carried them (the
// challenge is quoted, redacted, in errors).
void check_message(std::string_view message, std::string_view challenge) {
  for (const std::string* secret : {&kGoodKey, &kOutsideKey, &kPlainKey, &kSubKey}) {
    if (challenge.find(*secret) != std::string_view::npos) continue;
    if (message.find(*secret) != std::string_view::npos) {
      fail("an error message contains a key file's contents");
    }
  }
  if (challenge.find(std::string(64, 'B')) == std::string_view::npos &&
      message.find(std::string(64, 'B')) != std::string_view::npos) {
    fail("an error message contains big.key's contents");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  prepare_directory();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string challenge(reinterpret_cast<const char*>(data), size);
  auto client = std::make_shared<ChallengeClient>(challenge);

  azkms::SourceContext context;
  context.http = client;
  context.attempt_timeout = std::chrono::milliseconds{5'000};
  context.retry_policy = azkms::RetryPolicy::no_retries();
  azkms::ArcOptions options;
  options.endpoint = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
  options.key_directory = kDirectory;
  auto source = azkms::make_azure_arc_source(options, context);

  try {
    const auto token = source->fetch(azkms::TokenRequest{},
                                     std::chrono::steady_clock::now() + std::chrono::seconds{5});
    if (client->answers_ != 1) fail("a token without answering the challenge once");
  } catch (const azkms::Error& error) {
    check_message(error.what(), challenge);
  } catch (const std::exception& other) {
    std::fprintf(stderr, "unexpected exception: %s\n", other.what());
    fail("fetch threw something other than azkms::Error");
  }
  if (client->challenges_ != 1) fail("the challenge was not asked exactly once");
  if (client->answers_ > 1) fail("the challenge was answered more than once");
  return 0;
}
