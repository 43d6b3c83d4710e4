// The Key Vault emulator seen from a client: libcurl with verification on and the emulator's
// CA given explicitly, as azkms itself talks to it.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "certificate_authority.hpp"
#include "key_vault.hpp"
#include "slow_clients.hpp"
#include "token_ledger.hpp"

namespace azkms::emulator {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kVault = "https://vault.azure.net";

// ---------------------------------------------------------------------------------------------
// A minimal HTTPS client on libcurl.

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string error;

  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  [[nodiscard]] json json_body() const { return json::parse(body, nullptr, false); }
};

struct Call {
  std::string method = "POST";
  std::string url;
  std::string body;
  std::vector<std::string> headers;
  // Empty: libcurl's default trust store (which does not know the emulator's CA).
  std::string ca_file;
  long timeout_ms = 10000;
  std::vector<std::string> resolve;         // CURLOPT_RESOLVE entries
  std::atomic<bool>* first_byte = nullptr;  // set when body bytes arrive
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* reply = static_cast<std::pair<Reply*, std::atomic<bool>*>*>(user);
  reply->first->body.append(data, size * count);
  if (reply->second) reply->second->store(true);
  return size * count;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* reply = static_cast<Reply*>(user);
  std::string line(data, size * count);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    reply->headers[name] = value;
  }
  return size * count;
}

Reply perform(const Call& call) {
  Reply reply;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  curl_slist* headers = nullptr;
  for (const auto& h : call.headers) headers = curl_slist_append(headers, h.c_str());
  curl_slist* resolve = nullptr;
  for (const auto& r : call.resolve) resolve = curl_slist_append(resolve, r.c_str());
  char error[CURL_ERROR_SIZE] = {};
  std::pair<Reply*, std::atomic<bool>*> sink{&reply, call.first_byte};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, call.url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call.method.c_str());
  if (call.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, call.body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(call.body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!call.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, call.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, call.timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  reply.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
  reply.error = error;
  curl_slist_free_all(headers);
  curl_slist_free_all(resolve);
  return reply;
}

// ---------------------------------------------------------------------------------------------
// base64url and RSA helpers, independent of the emulator's own.

std::string random_bytes(std::size_t n) {
  std::string bytes(n, '\0');
  EXPECT_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(n)), 1);
  return bytes;
}

std::string b64url(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::optional<std::string> unb64url(std::string in) {
  for (char& c : in) {
    if (c == '+' || c == '/' || c == '=') return std::nullopt;  // base64url without padding
    c = c == '-' ? '+' : c == '_' ? '/' : c;
  }
  std::size_t pad = (4 - in.size() % 4) % 4;
  in.append(pad, '=');
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

// Encrypts with the key's public half, RSA-OAEP with `md` as OAEP and MGF1 digest.
std::string oaep_encrypt(const std::string& public_pem, const EVP_MD* md,
                         const std::string& plain) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(public_pem.data(), static_cast<int>(public_pem.size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  EXPECT_TRUE(key);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new(key.get(), nullptr), EVP_PKEY_CTX_free);
  EXPECT_EQ(EVP_PKEY_encrypt_init(ctx.get()), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), md), 1);
  EXPECT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), md), 1);
  std::size_t length = 0;
  auto in = reinterpret_cast<const unsigned char*>(plain.data());
  EXPECT_EQ(EVP_PKEY_encrypt(ctx.get(), nullptr, &length, in, plain.size()), 1);
  std::string out(length, '\0');
  EXPECT_EQ(EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &length, in,
                             plain.size()),
            1);
  out.resize(length);
  return out;
}

// ---------------------------------------------------------------------------------------------

// One server and one key for the whole suite (RSA key generation is the slow part); each test
// starts from a running server without faults, delay, restrictions or counts.
class KeyVaultEmulatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    shared_ledger_ = new TokenLedger();
    shared_vault_ = new KeyVaultServer(*shared_ledger_);
    shared_version_ = new std::string(shared_vault_->create_key("data-key"));
  }
  static void TearDownTestSuite() {
    delete shared_vault_;
    delete shared_ledger_;
    delete shared_version_;
  }
  void SetUp() override {
    use(*shared_vault_, *shared_ledger_);
    version_ = *shared_version_;
  }
  void use(KeyVaultServer& vault, TokenLedger& ledger) {
    vault_ = &vault;
    vault_->start();
    vault_->clear_faults();
    vault_->set_response_delay(0ms);
    if (vault_->has_key("data-key")) vault_->unrestrict("data-key");
    vault_->reset_counters();
    token_ = ledger.issue("client-a", kVault, 1h);
  }

  static inline TokenLedger* shared_ledger_ = nullptr;
  static inline KeyVaultServer* shared_vault_ = nullptr;
  static inline std::string* shared_version_ = nullptr;

  // POST /keys/<path>?api-version=7.1 with the given bearer token and test params.
  Reply post(const std::string& path, const json& body, const std::string& token,
             const std::string& test_case = {}, const std::string& query = "?api-version=7.1") {
    Call call;
    call.url = vault_->url() + path + query;
    call.body = body.dump();
    call.ca_file = vault_->ca_file();
    call.headers = {"Content-Type: application/json", "Accept: application/json"};
    if (!token.empty()) call.headers.push_back("Authorization: Bearer " + token);
    if (!test_case.empty()) call.headers.push_back("X-MongoDB-HTTP-TestParams: case=" + test_case);
    return perform(call);
  }

  Reply wrap(const std::string& key_path, const std::string& plain,
             const std::string& test_case = {}) {
    return post("/keys/" + key_path + "/wrapkey",
                {{"alg", "RSA-OAEP-256"}, {"value", b64url(plain)}}, token_, test_case);
  }
  Reply unwrap(const std::string& key_path, const std::string& wrapped_b64url) {
    return post("/keys/" + key_path + "/unwrapkey",
                {{"alg", "RSA-OAEP-256"}, {"value", wrapped_b64url}}, token_);
  }

  static std::string error_code(const Reply& reply) {
    json body = reply.json_body();
    if (!body.is_object() || !body.contains("error")) return "<no error object>";
    return body["error"].value("code", "<no code>");
  }

  KeyVaultServer* vault_ = nullptr;
  TokenLedger& ledger_ = *shared_ledger_;
  std::string version_;
  std::string token_;
};

// ---- TLS ------------------------------------------------------------------------------------

TEST_F(KeyVaultEmulatorTest, TlsVerifiesAgainstItsCaAndNothingElse) {
  const std::string plain = random_bytes(96);

  Reply trusted = wrap("data-key", plain);
  EXPECT_EQ(trusted.code, CURLE_OK) << trusted.error;
  EXPECT_EQ(trusted.status, 200);

  // The certificate also names DNS localhost.
  Call by_name;
  by_name.url = "https://localhost:" + std::to_string(vault_->port()) +
                "/keys/data-key/wrapkey?api-version=7.1";
  by_name.resolve = {"localhost:" + std::to_string(vault_->port()) + ":127.0.0.1"};
  by_name.ca_file = vault_->ca_file();
  by_name.headers = {"Authorization: Bearer " + token_};
  by_name.body = json{{"alg", "RSA-OAEP-256"}, {"value", b64url(plain)}}.dump();
  Reply named = perform(by_name);
  EXPECT_EQ(named.code, CURLE_OK) << named.error;
  EXPECT_EQ(named.status, 200);

  // The system trust store does not know the emulator.
  Call untrusted = by_name;
  untrusted.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
  untrusted.resolve.clear();
  untrusted.ca_file.clear();
  Reply refused = perform(untrusted);
  EXPECT_EQ(refused.code, CURLE_PEER_FAILED_VERIFICATION) << refused.error;

  // Nor does another CA.
  const auto other_dir = std::filesystem::path(vault_->ca_file()).parent_path() / "other-ca.pem";
  {
    CertificateAuthority other;
    std::ofstream(other_dir) << other.certificate_pem();
  }
  untrusted.ca_file = other_dir.string();
  Reply other = perform(untrusted);
  EXPECT_EQ(other.code, CURLE_PEER_FAILED_VERIFICATION) << other.error;
  std::filesystem::remove(other_dir);

  // A name the certificate does not carry fails host verification even with the right CA.
  Call wrong_name = by_name;
  wrong_name.url = "https://vault.example:" + std::to_string(vault_->port()) + "/";
  wrong_name.resolve = {"vault.example:" + std::to_string(vault_->port()) + ":127.0.0.1"};
  Reply mismatch = perform(wrong_name);
  EXPECT_EQ(mismatch.code, CURLE_PEER_FAILED_VERIFICATION) << mismatch.error;
}

TEST_F(KeyVaultEmulatorTest, CaFileHoldsAConstrainedCa) {
  std::ifstream in(vault_->ca_file());
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_EQ(content.str(), vault_->ca_pem());
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(vault_->ca_pem().data(), static_cast<int>(vault_->ca_pem().size())),
      BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> ca(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  ASSERT_TRUE(ca);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);  // basicConstraints CA:TRUE with keyCertSign
  EXPECT_EQ(vault_->endpoint(), "127.0.0.1:" + std::to_string(vault_->port()));
}

TEST(KeyVaultEmulatorFiles, TemporaryCaDirectoryGoesAwayAndChosenOneIsUsed) {
  TokenLedger ledger;
  std::filesystem::path temporary;
  {
    KeyVaultServer vault(ledger);
    temporary = std::filesystem::path(vault.ca_file()).parent_path();
    EXPECT_TRUE(std::filesystem::exists(vault.ca_file()));
  }
  EXPECT_FALSE(std::filesystem::exists(temporary));

  const auto chosen =
      std::filesystem::temp_directory_path() / ("azkms-kv-test-" + std::to_string(::getpid()));
  {
    KeyVaultOptions options;
    options.cert_directory = chosen.string();
    KeyVaultServer vault(ledger, options);
    EXPECT_EQ(std::filesystem::path(vault.ca_file()).parent_path(), chosen);
    EXPECT_TRUE(std::filesystem::exists(vault.ca_file()));
  }
  EXPECT_TRUE(std::filesystem::exists(chosen / "key-vault-ca.pem"));  // the caller's to keep
  std::filesystem::remove_all(chosen);
}

TEST(KeyVaultEmulatorOptions, RefusesNonLoopbackHosts) {
  TokenLedger ledger;
  for (const char* host : {"0.0.0.0", "::", "192.168.1.10", "example.com", ""}) {
    KeyVaultOptions options;
    options.host = host;
    EXPECT_THROW((KeyVaultServer{ledger, options}), std::invalid_argument) << host;
  }
  KeyVaultOptions options;
  options.host = "localhost";
  KeyVaultServer vault(ledger, options);
  vault.start();
  EXPECT_EQ(vault.endpoint().rfind("127.0.0.1:", 0), 0u);
}

// ---- Operations -----------------------------------------------------------------------------

TEST_F(KeyVaultEmulatorTest, WrapThenUnwrapRoundTrips) {
  const std::string plain = random_bytes(96);  // a MongoDB data key's size
  Reply wrapped = wrap("data-key/" + version_, plain);
  ASSERT_EQ(wrapped.status, 200) << wrapped.body;
  EXPECT_EQ(wrapped.header("content-type").rfind("application/json", 0), 0u);
  json body = wrapped.json_body();
  EXPECT_EQ(body["kid"], "https://" + vault_->endpoint() + "/keys/data-key/" + version_);
  const std::string value = body["value"];
  auto ciphertext = unb64url(value);
  ASSERT_TRUE(ciphertext) << "value is not unpadded base64url";
  EXPECT_EQ(ciphertext->size(), 256u);  // RSA-2048
  EXPECT_EQ(ciphertext->find(plain), std::string::npos);

  // OAEP is randomised: the same key wraps differently each time.
  EXPECT_NE(wrap("data-key/" + version_, plain).json_body()["value"], value);

  Reply unwrapped = unwrap("data-key/" + version_, value);
  ASSERT_EQ(unwrapped.status, 200) << unwrapped.body;
  EXPECT_EQ(unb64url(unwrapped.json_body()["value"]), plain);
  EXPECT_EQ(unwrapped.json_body()["kid"], vault_->key_id("data-key", version_));
  EXPECT_EQ(vault_->wrap_count(), 2u);
  EXPECT_EQ(vault_->unwrap_count(), 1u);
}

TEST_F(KeyVaultEmulatorTest, UnwrapsExactlyRsaOaepWithSha256) {
  const std::string plain = random_bytes(32);
  const std::string public_pem = vault_->public_key_pem("data-key");

  Reply sha256 = unwrap("data-key", b64url(oaep_encrypt(public_pem, EVP_sha256(), plain)));
  ASSERT_EQ(sha256.status, 200) << sha256.body;
  EXPECT_EQ(unb64url(sha256.json_body()["value"]), plain);

  // RSA-OAEP (SHA-1) is another algorithm: its ciphertexts must not unwrap under RSA-OAEP-256.
  Reply sha1 = unwrap("data-key", b64url(oaep_encrypt(public_pem, EVP_sha1(), plain)));
  EXPECT_EQ(sha1.status, 400);
  EXPECT_EQ(error_code(sha1), "BadParameter");
}

TEST_F(KeyVaultEmulatorTest, VersionsStayUsableAfterRotation) {
  const std::string v1 = vault_->create_key("rotating-key");
  const std::string plain = random_bytes(96);
  Reply with_v1 = wrap("rotating-key/" + v1, plain);
  ASSERT_EQ(with_v1.status, 200);
  const std::string wrapped_v1 = with_v1.json_body()["value"];

  const std::string v2 = vault_->rotate_key("rotating-key");
  EXPECT_NE(v2, v1);
  EXPECT_EQ(v2.size(), 32u);
  EXPECT_EQ(v2.find_first_not_of("0123456789abcdef"), std::string::npos);
  const auto versions = vault_->versions("rotating-key");
  ASSERT_GE(versions.size(), 2u);
  EXPECT_EQ(versions[versions.size() - 2], v1);
  EXPECT_EQ(versions.back(), v2);
  EXPECT_EQ(vault_->latest_version("rotating-key"), v2);

  Reply old = unwrap("rotating-key/" + v1, wrapped_v1);
  ASSERT_EQ(old.status, 200) << old.body;
  EXPECT_EQ(unb64url(old.json_body()["value"]), plain);

  // No version, or an empty one (libmongocrypt's "/keys/name//wrapkey"), means the latest.
  EXPECT_EQ(wrap("rotating-key", plain).json_body()["kid"], vault_->key_id("rotating-key", v2));
  EXPECT_EQ(wrap("rotating-key/", plain).json_body()["kid"], vault_->key_id("rotating-key", v2));

  // The v1 ciphertext does not unwrap under v2.
  Reply latest = unwrap("rotating-key", wrapped_v1);
  EXPECT_EQ(latest.status, 400);
  EXPECT_EQ(error_code(latest), "BadParameter");
}

TEST_F(KeyVaultEmulatorTest, UnknownKeyOrVersionIsKeyNotFound) {
  Reply no_key = wrap("no-such-key", random_bytes(16));
  EXPECT_EQ(no_key.status, 404);
  EXPECT_EQ(error_code(no_key), "KeyNotFound");
  Reply no_version = wrap("data-key/" + std::string(32, 'f'), random_bytes(16));
  EXPECT_EQ(no_version.status, 404);
  EXPECT_EQ(error_code(no_version), "KeyNotFound");
  EXPECT_THROW(vault_->rotate_key("no-such-key"), std::out_of_range);
  EXPECT_THROW(vault_->create_key("bad_name!"), std::invalid_argument);
}

// ---- GET /keys/{name}[/{version}] and api-versions ------------------------------------------

// n or e of a PEM public key, as a JWK carries it (big-endian, unpadded base64url).
std::string rsa_component(const std::string& public_pem, const char* name) {
  BIO* bio = BIO_new_mem_buf(public_pem.data(), static_cast<int>(public_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  BIGNUM* value = nullptr;
  std::string bytes;
  if (key != nullptr && EVP_PKEY_get_bn_param(key, name, &value) == 1) {
    bytes.resize(static_cast<std::size_t>(BN_num_bytes(value)));
    BN_bn2bin(value, reinterpret_cast<unsigned char*>(bytes.data()));
  }
  BN_free(value);
  EVP_PKEY_free(key);
  return b64url(bytes);
}

Reply get_key(const KeyVaultServer& vault, const std::string& path, const std::string& token,
              const std::string& api_version = "7.6") {
  Call call;
  call.method = "GET";
  call.url = vault.url() + path + "?api-version=" + api_version;
  call.ca_file = vault.ca_file();
  call.headers = {"Accept: application/json"};
  if (!token.empty()) call.headers.push_back("Authorization: Bearer " + token);
  return perform(call);
}

TEST_F(KeyVaultEmulatorTest, GetKeyAnswersThePublicJwkOfTheVersionAsked) {
  const std::string v1 = vault_->create_key("jwk-key");
  const std::string v2 = vault_->rotate_key("jwk-key");
  for (const auto& [path, version] : std::vector<std::pair<std::string, std::string>>{
           {"/keys/jwk-key", v2}, {"/keys/jwk-key/" + v1, v1}, {"/keys/jwk-key/" + v2, v2}}) {
    SCOPED_TRACE(path);
    const Reply reply = get_key(*vault_, path, token_, "2025-07-01");
    ASSERT_EQ(reply.status, 200) << reply.body;
    const json body = reply.json_body();
    const json& key = body.at("key");
    EXPECT_EQ(key.at("kid"), vault_->key_id("jwk-key", version));
    EXPECT_EQ(key.at("kty"), "RSA");
    const std::string public_pem = vault_->public_key_pem("jwk-key", version);
    EXPECT_EQ(key.at("n"), rsa_component(public_pem, OSSL_PKEY_PARAM_RSA_N));
    EXPECT_EQ(key.at("e"), rsa_component(public_pem, OSSL_PKEY_PARAM_RSA_E));
    EXPECT_EQ(key.at("e"), "AQAB");
    const auto ops = key.at("key_ops").get<std::vector<std::string>>();
    EXPECT_NE(std::find(ops.begin(), ops.end(), "wrapKey"), ops.end());
    EXPECT_NE(std::find(ops.begin(), ops.end(), "unwrapKey"), ops.end());
    for (const char* secret : {"d", "p", "q", "dp", "dq", "qi"}) {
      EXPECT_FALSE(key.contains(secret)) << secret << ": only the public half is served";
    }
    EXPECT_EQ(body.at("attributes").at("enabled"), true);
    EXPECT_TRUE(body.at("attributes").at("created").is_number_integer());
  }
  const Reply unknown = get_key(*vault_, "/keys/jwk-key/" + std::string(32, 'f'), token_);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(error_code(unknown), "KeyNotFound");
  EXPECT_EQ(get_key(*vault_, "/keys/no-such-key", token_).status, 404);
}

TEST_F(KeyVaultEmulatorTest, GetKeyIsBehindTheSameBearerCheck) {
  const std::string expected_challenge =
      "Bearer authorization=\"https://login.microsoftonline.com/" + vault_->options().tenant_id +
      "\", resource=\"https://vault.azure.net\"";
  const std::string other_resource = ledger_.issue("client-a", "https://management.azure.com", 1h);
  for (const std::string& token : {std::string(), std::string("not-a-token"), other_resource}) {
    for (const std::string& path :
         std::vector<std::string>{"/keys/data-key", "/keys/data-key/" + version_}) {
      const Reply reply = get_key(*vault_, path, token);
      EXPECT_EQ(reply.status, 401) << path << ": " << reply.body;
      EXPECT_EQ(reply.header("www-authenticate"), expected_challenge);
      EXPECT_EQ(error_code(reply), "Unauthorized");
    }
  }
  vault_->restrict("data-key", {"someone-else"});
  const Reply forbidden = get_key(*vault_, "/keys/data-key", token_);
  EXPECT_EQ(forbidden.status, 403) << forbidden.body;
}

TEST_F(KeyVaultEmulatorTest, AcceptsTheApiVersionsCurrentSdksSend) {
  for (const char* version : {"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6",
                              "7.6-preview.2", "2025-07-01", "2025-06-01-preview"}) {
    Reply reply = post("/keys/data-key/wrapkey",
                       {{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(32))}}, token_, {},
                       std::string("?api-version=") + version);
    EXPECT_EQ(reply.status, 200) << version << ": " << reply.body;
    EXPECT_EQ(get_key(*vault_, "/keys/data-key", token_, version).status, 200) << version;
  }
}

TEST_F(KeyVaultEmulatorTest, RefusesUnknownApiVersionsAfterAuthentication) {
  for (const char* version :
       {"7.7", "8.0", "7", "2015-06-01", "1999-01-01", "2025-13-01", "2025-07-01-beta", "latest"}) {
    const Reply reply = get_key(*vault_, "/keys/data-key", token_, version);
    EXPECT_EQ(reply.status, 400) << version << ": " << reply.body;
    EXPECT_EQ(error_code(reply), "BadParameter") << version;
    EXPECT_NE(
        reply.body.find(std::string("The specified version (") + version + ") is not recognized"),
        std::string::npos)
        << reply.body;
    // Without a token, the challenge comes first, as from the service.
    EXPECT_EQ(get_key(*vault_, "/keys/data-key", "", version).status, 401) << version;
  }
}

TEST_F(KeyVaultEmulatorTest, MalformedRequestsAreBadParameter) {
  const std::string value = b64url(random_bytes(32));
  struct Case {
    const char* what;
    std::string path;
    std::string body;
    std::string query;
  };
  const std::vector<Case> cases = {
      {"another algorithm", "/keys/data-key/wrapkey",
       json{{"alg", "RSA1_5"}, {"value", value}}.dump(), "?api-version=7.1"},
      {"no algorithm", "/keys/data-key/wrapkey", json{{"value", value}}.dump(), "?api-version=7.1"},
      {"standard base64 alphabet", "/keys/data-key/wrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", "ab+/"}}.dump(), "?api-version=7.1"},
      {"impossible base64 length", "/keys/data-key/wrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", "abcde"}}.dump(), "?api-version=7.1"},
      {"empty value", "/keys/data-key/wrapkey", json{{"alg", "RSA-OAEP-256"}, {"value", ""}}.dump(),
       "?api-version=7.1"},
      {"value not a string", "/keys/data-key/wrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", 12}}.dump(), "?api-version=7.1"},
      {"not JSON", "/keys/data-key/wrapkey", "alg=RSA-OAEP-256", "?api-version=7.1"},
      {"too long to wrap", "/keys/data-key/wrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(191))}}.dump(),
       "?api-version=7.1"},
      {"not a ciphertext", "/keys/data-key/unwrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(256))}}.dump(),
       "?api-version=7.1"},
      {"no api-version", "/keys/data-key/wrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", value}}.dump(), ""},
      {"unknown api-version", "/keys/data-key/wrapkey",
       json{{"alg", "RSA-OAEP-256"}, {"value", value}}.dump(), "?api-version=1999-01-01"},
  };
  for (const auto& c : cases) {
    Call call;
    call.url = vault_->url() + c.path + c.query;
    call.body = c.body;
    call.ca_file = vault_->ca_file();
    call.headers = {"Content-Type: application/json", "Authorization: Bearer " + token_};
    Reply reply = perform(call);
    EXPECT_EQ(reply.status, 400) << c.what << ": " << reply.body;
    EXPECT_EQ(error_code(reply), "BadParameter") << c.what;
  }
  // 190 bytes is the most RSA-2048 with OAEP-SHA-256 can carry: the boundary wraps.
  EXPECT_EQ(wrap("data-key", random_bytes(190)).status, 200);
  EXPECT_EQ(vault_->wrap_count(), 1u);
  EXPECT_EQ(vault_->unwrap_count(), 0u);
}

TEST_F(KeyVaultEmulatorTest, OtherPathsAndMethodsAreNotFound) {
  Call get;
  get.method = "GET";
  get.url = vault_->url() + "/keys/data-key/" + version_ + "/wrapkey?api-version=7.1";
  get.ca_file = vault_->ca_file();
  get.headers = {"Authorization: Bearer " + token_};
  Reply reply = perform(get);
  EXPECT_EQ(reply.status, 404);
  EXPECT_EQ(error_code(reply), "NotFound");
  Reply other = post("/secrets/data-key/wrapkey", json::object(), token_);
  EXPECT_EQ(other.status, 404);
}

// ---- Authentication and authorisation -------------------------------------------------------

TEST_F(KeyVaultEmulatorTest, RequestsWithoutAValidKeyVaultTokenAreChallenged) {
  const std::string expected_challenge =
      "Bearer authorization=\"https://login.microsoftonline.com/" + vault_->options().tenant_id +
      "\", resource=\"https://vault.azure.net\"";
  const std::string other_resource = ledger_.issue("client-a", "https://management.azure.com", 1h);
  const std::string expired = ledger_.issue("client-a", kVault, -1s);
  const std::string foreign = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.not-from-this-emulator.x";

  const json body = {{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(32))}};
  for (const std::string& token : {std::string(), foreign, other_resource, expired}) {
    Reply reply = post("/keys/data-key/wrapkey", body, token);
    EXPECT_EQ(reply.status, 401) << reply.body;
    EXPECT_EQ(reply.header("www-authenticate"), expected_challenge);
    EXPECT_EQ(error_code(reply), "Unauthorized");
    if (!token.empty()) {
      EXPECT_EQ(reply.body.find(token), std::string::npos) << "token echoed";
    }
  }
  // A scheme other than Bearer.
  Call basic;
  basic.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
  basic.body = body.dump();
  basic.ca_file = vault_->ca_file();
  basic.headers = {"Authorization: Basic " + token_};
  EXPECT_EQ(perform(basic).status, 401);

  EXPECT_EQ(vault_->unauthorized_count(), 5u);
  EXPECT_EQ(vault_->wrap_count(), 0u);
  // The scheme is case-insensitive, as in HTTP.
  basic.headers = {"Authorization: bearer " + token_};
  EXPECT_EQ(perform(basic).status, 200);
}

TEST_F(KeyVaultEmulatorTest, IdentitiesNotGrantedOnTheKeyAreForbidden) {
  const std::string token_b = ledger_.issue("client-b", kVault, 1h);
  const json body = {{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(32))}};
  EXPECT_TRUE(vault_->granted("data-key", "client-a"));

  vault_->restrict("data-key", {"client-b"});
  Reply denied = post("/keys/data-key/wrapkey", body, token_);
  EXPECT_EQ(denied.status, 403) << denied.body;
  EXPECT_EQ(error_code(denied), "Forbidden");
  EXPECT_NE(denied.body.find("client-a"), std::string::npos) << "names the identity";
  EXPECT_EQ(post("/keys/data-key/wrapkey", body, token_b).status, 200);

  vault_->grant("data-key", "client-a");
  EXPECT_EQ(post("/keys/data-key/wrapkey", body, token_).status, 200);

  vault_->restrict("data-key", {});
  EXPECT_EQ(post("/keys/data-key/unwrapkey", body, token_b).status, 403);
  vault_->unrestrict("data-key");
  EXPECT_EQ(post("/keys/data-key/wrapkey", body, token_b).status, 200);
  EXPECT_EQ(vault_->forbidden_count(), 2u);
  EXPECT_THROW(vault_->grant("no-such-key", "client-a"), std::out_of_range);
}

TEST_F(KeyVaultEmulatorTest, WithGrantAllOffKeysStartWithNobodyGranted) {
  KeyVaultOptions options;
  options.grant_all_by_default = false;
  KeyVaultServer strict(ledger_, options);
  use(strict, ledger_);
  strict.create_key("data-key");
  const json body = {{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(32))}};
  EXPECT_EQ(post("/keys/data-key/wrapkey", body, token_).status, 403);
  strict.grant("data-key", "client-a");
  EXPECT_EQ(post("/keys/data-key/wrapkey", body, token_).status, 200);
  // Rotation keeps the key's grants.
  strict.rotate_key("data-key");
  EXPECT_EQ(post("/keys/data-key/wrapkey", body, token_).status, 200);
  EXPECT_EQ(strict.forbidden_count(), 1u);
}

// ---- Faults ---------------------------------------------------------------------------------

TEST_F(KeyVaultEmulatorTest, StatusFaultsHaveKeyVaultErrorBodies) {
  const std::string plain = random_bytes(32);
  for (const auto& [fault, code] :
       std::vector<std::pair<std::string, std::string>>{{"500", "InternalServerError"},
                                                        {"503", "ServiceUnavailable"},
                                                        {"408", "RequestTimeout"},
                                                        {"429", "Throttled"},
                                                        {"403", "Forbidden"},
                                                        {"401", "Unauthorized"},
                                                        {"404", "NotFound"}}) {
    Reply reply = wrap("data-key", plain, fault);
    EXPECT_EQ(std::to_string(reply.status), fault);
    EXPECT_EQ(error_code(reply), code) << fault;
    if (fault == "429") {
      EXPECT_EQ(reply.header("retry-after"), "1");
    }
    if (fault == "401") {
      EXPECT_FALSE(reply.header("www-authenticate").empty());
    }
  }
  EXPECT_EQ(vault_->wrap_count(), 0u);
  EXPECT_EQ(vault_->unauthorized_count(), 1u);
  EXPECT_EQ(vault_->forbidden_count(), 1u);

  Reply unknown = wrap("data-key", plain, "no-such-case");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(wrap("data-key", plain).status, 200);
}

TEST_F(KeyVaultEmulatorTest, InjectedFaultsApplyInOrderThenStop) {
  const std::string plain = random_bytes(32);
  vault_->inject("429", 2);
  vault_->inject("401");
  Reply first = wrap("data-key", plain);
  EXPECT_EQ(first.status, 429);
  EXPECT_EQ(first.header("retry-after"), "1");
  EXPECT_EQ(wrap("data-key", plain).status, 429);
  // 401 even with a valid token: the path where a client drops its cached token.
  Reply challenged = wrap("data-key", plain);
  EXPECT_EQ(challenged.status, 401);
  EXPECT_FALSE(challenged.header("www-authenticate").empty());
  EXPECT_EQ(wrap("data-key", plain).status, 200);

  vault_->inject("500", 3);
  vault_->clear_faults();
  EXPECT_EQ(wrap("data-key", plain).status, 200);

  EXPECT_THROW(vault_->inject("no-such-case"), std::invalid_argument);
  EXPECT_EQ(vault_->requests_served(), 5u);
  EXPECT_EQ(vault_->wrap_count(), 2u);
  EXPECT_EQ(vault_->unauthorized_count(), 1u);
}

TEST_F(KeyVaultEmulatorTest, MalformedBodyFaults) {
  const std::string plain = random_bytes(32);
  Reply bad = wrap("data-key", plain, "bad-json");
  EXPECT_EQ(bad.status, 200);
  EXPECT_EQ(bad.body, R"({"key": })");
  EXPECT_TRUE(bad.json_body().is_discarded());

  Reply empty = wrap("data-key", plain, "empty-json");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.json_body(), json::object());

  Reply truncated = wrap("data-key", plain, "truncated");
  EXPECT_EQ(truncated.code, CURLE_OK);
  EXPECT_EQ(truncated.status, 200);
  EXPECT_TRUE(truncated.json_body().is_discarded());
  EXPECT_EQ(truncated.body.rfind(R"({"kid":)", 0), 0u);

  Reply html = wrap("data-key", plain, "html");
  EXPECT_EQ(html.header("content-type").rfind("text/html", 0), 0u);
  Reply xml = wrap("data-key", plain, "xml");
  EXPECT_EQ(xml.header("content-type").rfind("application/xml", 0), 0u);

  Reply bad_value = wrap("data-key", plain, "bad-value");
  ASSERT_TRUE(bad_value.json_body().contains("value"));
  EXPECT_FALSE(unb64url(bad_value.json_body()["value"]));

  Reply giant = wrap("data-key", plain, "giant");
  EXPECT_EQ(giant.code, CURLE_OK) << giant.error;
  EXPECT_EQ(giant.body.size(), 24u * 1024 * 1024);
  // A giant but well-formed document (checked by its ends: parsing 24 MiB is slow unoptimised).
  ASSERT_GE(giant.body.size(), 2u);
  EXPECT_EQ(giant.body.front(), '{');
  EXPECT_EQ(giant.body.substr(giant.body.size() - 2), "\"}");

  EXPECT_EQ(vault_->wrap_count(), 0u);
}

TEST_F(KeyVaultEmulatorTest, ConnectionFaultsFailTheExchange) {
  Reply reset = wrap("data-key", random_bytes(32), "reset");
  EXPECT_NE(reset.code, CURLE_OK) << "a reset must be an error, got " << reset.body;
  EXPECT_TRUE(reset.json_body().is_discarded());

  Reply closed = wrap("data-key", random_bytes(32), "close");
  EXPECT_NE(closed.code, CURLE_OK) << "a closed connection must be an error";
  EXPECT_EQ(closed.status, 0) << "no response at all";

  // A redirect is answered, not followed (libcurl follows nothing unless told to).
  Reply redirect = wrap("data-key", random_bytes(32), "redirect");
  EXPECT_EQ(redirect.status, 302);
  EXPECT_EQ(redirect.header("location").rfind(vault_->url() + "/", 0), 0u);

  // The server carries on.
  EXPECT_EQ(wrap("data-key", random_bytes(32)).status, 200);
  EXPECT_EQ(vault_->wrap_count(), 1u);
}

TEST_F(KeyVaultEmulatorTest, EveryDocumentedFaultIsAccepted) {
  for (std::string_view fault : kKeyVaultFaultCases) {
    EXPECT_TRUE(is_key_vault_fault_case(fault)) << fault;
    EXPECT_NO_THROW(vault_->inject(std::string(fault)));
  }
  vault_->clear_faults();
  EXPECT_TRUE(is_key_vault_fault_case("400"));
  EXPECT_TRUE(is_key_vault_fault_case("599"));
  for (const char* fault : {"200", "302", "600", "40", "missing-token", "arc-no-realm", ""}) {
    EXPECT_FALSE(is_key_vault_fault_case(fault)) << fault;
  }
  EXPECT_THROW(vault_->inject("500", 0), std::invalid_argument);
}

TEST_F(KeyVaultEmulatorTest, SlowOutlastsTheClientDeadline) {
  Call call;
  call.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
  call.body = json{{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(32))}}.dump();
  call.ca_file = vault_->ca_file();
  call.headers = {"Authorization: Bearer " + token_, "X-MongoDB-HTTP-TestParams: case=slow"};
  call.timeout_ms = 1500;
  Reply reply = perform(call);
  EXPECT_EQ(reply.code, CURLE_OPERATION_TIMEDOUT) << reply.error;
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.body.rfind("[", 0), 0u);
}

// stop() ends a slow answer and a pending response delay rather than waiting them out: the
// client threads below have no deadline of their own, so this test would hang otherwise.
TEST_F(KeyVaultEmulatorTest, StopEndsSlowAnswersAndDelays) {
  std::atomic<bool> slow_started{false};
  Reply slow_reply;
  std::thread slow([&] {
    Call call;
    call.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
    call.ca_file = vault_->ca_file();
    call.headers = {"Authorization: Bearer " + token_, "X-MongoDB-HTTP-TestParams: case=slow"};
    call.timeout_ms = 0;  // none
    call.first_byte = &slow_started;
    slow_reply = perform(call);
  });
  while (!slow_started) std::this_thread::sleep_for(5ms);

  vault_->set_response_delay(std::chrono::hours(1));
  const auto served = vault_->requests_served();
  Reply delayed_reply;
  std::thread delayed([&] {
    Call call;
    call.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
    call.ca_file = vault_->ca_file();
    call.headers = {"Authorization: Bearer " + token_};
    call.timeout_ms = 0;
    delayed_reply = perform(call);
  });
  while (vault_->requests_served() == served) std::this_thread::sleep_for(5ms);

  vault_->stop();
  slow.join();
  delayed.join();
  EXPECT_FALSE(vault_->running());
  EXPECT_NE(slow_reply.code, CURLE_OK);
  EXPECT_NE(delayed_reply.status, 200);
}

TEST(KeyVaultEmulatorLog, NamesOutcomesAndIdentitiesButNeverTokensOrKeys) {
  TokenLedger ledger;
  std::mutex mutex;
  std::vector<std::string> lines;
  KeyVaultOptions options;
  options.keys = {"logged-key"};
  options.log = [&](std::string_view line) {
    std::lock_guard lock(mutex);
    lines.emplace_back(line);
  };
  KeyVaultServer vault(ledger, options);
  vault.start();
  const std::string token = ledger.issue("client-logged", kVault, 1h);
  const std::string plain = random_bytes(32);
  auto call = [&](const std::string& op, const std::string& value, const std::string& bearer,
                  const std::string& test_case = {}) {
    Call c;
    c.url = vault.url() + "/keys/logged-key/" + op + "?api-version=7.1";
    c.ca_file = vault.ca_file();
    c.body = json{{"alg", "RSA-OAEP-256"}, {"value", value}}.dump();
    c.headers = {"Authorization: Bearer " + bearer};
    if (!test_case.empty()) c.headers.push_back("X-MongoDB-HTTP-TestParams: case=" + test_case);
    return perform(c);
  };
  Reply wrapped = call("wrapkey", b64url(plain), token);
  ASSERT_EQ(wrapped.status, 200);
  const std::string wrapped_value = wrapped.json_body()["value"];
  ASSERT_EQ(call("unwrapkey", wrapped_value, token).status, 200);
  EXPECT_EQ(call("wrapkey", b64url(plain), token + "x").status, 401);
  EXPECT_EQ(call("wrapkey", b64url(plain), token, "503").status, 503);
  vault.stop();

  std::lock_guard lock(mutex);
  std::string all;
  for (const auto& line : lines) all += line + "\n";
  EXPECT_NE(all.find("listening on " + vault.url()), std::string::npos) << all;
  EXPECT_NE(all.find("wrapkey logged-key/(latest): 200 for client id client-logged"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find(": 401"), std::string::npos) << all;
  EXPECT_NE(all.find("fault '503'"), std::string::npos) << all;
  EXPECT_EQ(all.find(token), std::string::npos) << "a token was logged";
  EXPECT_EQ(all.find(wrapped_value), std::string::npos) << "key material was logged";
  EXPECT_EQ(all.find(b64url(plain)), std::string::npos) << "key material was logged";
}

TEST_F(KeyVaultEmulatorTest, RestartsOnTheSamePort) {
  const int port = vault_->port();
  vault_->stop();
  Call call;
  call.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
  call.ca_file = vault_->ca_file();
  EXPECT_EQ(perform(call).code, CURLE_COULDNT_CONNECT);
  vault_->start();
  EXPECT_EQ(vault_->port(), port);
  EXPECT_EQ(wrap("data-key", random_bytes(32)).status, 200);
}

// A second emulator told to use the same port fails to start instead of sharing it (and taking
// part of the first one's connections).
TEST_F(KeyVaultEmulatorTest, APortInUseIsRefusedNotShared) {
  KeyVaultOptions options;
  options.port = vault_->port();
  TokenLedger ledger;
  KeyVaultServer second(ledger, options);
  try {
    second.start();
    ADD_FAILURE() << "a second Key Vault emulator started on port " << options.port;
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("cannot listen on"), std::string::npos)
        << error.what();
  }
  EXPECT_EQ(wrap("data-key", random_bytes(32)).status, 200);
}

// ---- Hostile clients ------------------------------------------------------------------------
// Any local process can connect to the emulator: none may crash it or keep it from serving.

TEST_F(KeyVaultEmulatorTest, ALargeBodyIsRefusedWith413AndServingGoesOn) {
  // A wrapkey body is a few hundred bytes; 256 KiB and 8 MiB are both refused unread.
  for (const std::size_t size : {std::size_t{256} << 10, std::size_t{8} << 20}) {
    SCOPED_TRACE(size);
    Call call;
    call.url = vault_->url() + "/keys/data-key/wrapkey?api-version=7.1";
    call.body = std::string(size, 'a');
    call.ca_file = vault_->ca_file();
    call.headers = {"Content-Type: application/json", "Authorization: Bearer " + token_};
    const Reply reply = perform(call);
    EXPECT_EQ(reply.status, 413) << reply.error;
    EXPECT_EQ(reply.header("content-type").rfind("application/json", 0), 0u);
    EXPECT_EQ(error_code(reply), "RequestEntityTooLarge") << reply.body;
  }
  EXPECT_EQ(wrap("data-key", random_bytes(32)).status, 200);
}

// A TLS record header announcing 16 KiB of handshake, then its bytes one at a time: the TLS
// form of a request that never finishes.
const std::string kSlowTlsOpening("\x16\x03\x01\x40\x00", 5);

Reply wrap_with(const KeyVaultServer& vault, const std::string& token) {
  Call call;
  call.url = vault.url() + "/keys/data-key/wrapkey?api-version=7.1";
  call.body = json{{"alg", "RSA-OAEP-256"}, {"value", b64url(random_bytes(32))}}.dump();
  call.ca_file = vault.ca_file();
  call.headers = {"Content-Type: application/json", "Authorization: Bearer " + token};
  return perform(call);
}

TEST(KeyVaultEmulatorSlowClients, SixteenSlowClientsStarveNobody) {
  TokenLedger ledger;
  KeyVaultOptions options;
  options.keys = {"data-key"};
  KeyVaultServer vault(ledger, options);
  vault.start();
  testing::SlowClients slow(vault.port(), 16, kSlowTlsOpening, '\0');
  slow.wait_rounds(3);  // every slow connection is in, holding a worker
  const Reply reply = wrap_with(vault, ledger.issue("client-a", kVault, 1h));
  EXPECT_EQ(reply.code, CURLE_OK) << "a request waited behind slow clients: " << reply.error;
  EXPECT_EQ(reply.status, 200) << reply.body;
  // They do not keep their connections either: the request deadline (10 s) ends them.
  EXPECT_TRUE(slow.wait_all_closed(60s)) << slow.still_open() << " slow connections still open";
}

TEST(KeyVaultEmulatorSlowClients, StopDoesNotWaitForSlowClients) {
  TokenLedger ledger;
  KeyVaultServer vault(ledger);
  vault.start();
  testing::SlowClients slow(vault.port(), 4, kSlowTlsOpening, '\0');
  slow.wait_rounds(3);
  auto stopped = std::async(std::launch::async, [&] { vault.stop(); });
  const bool in_time = stopped.wait_for(30s) == std::future_status::ready;
  EXPECT_TRUE(in_time) << "stop() waited for clients that never finish their request";
  if (!in_time) slow.close();  // lets stop() finish after a failure
  stopped.wait();
}

}  // namespace
}  // namespace azkms::emulator
