// Key vaults: the file store's durability (atomic replace, crash mid-write, concurrent
// writers), the query vocabulary, and the MongoDB collection as far as it can be checked
// without a server (Debian 12 ships none): documents built, typed errors when unreachable.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "azkms/error.hpp"
#include "azkms/key_vault.hpp"
#include "test_tls.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

Deadline soon() { return std::chrono::steady_clock::now() + 10s; }

DataKeyId id_from(std::uint8_t seed) {
  DataKeyId id;
  for (std::size_t i = 0; i < id.bytes.size(); ++i) {
    id.bytes[i] = static_cast<std::uint8_t>(seed + i);
  }
  return id;
}

// A document shaped like the data keys libmongocrypt creates.
BsonDocument key_doc(std::uint8_t seed, std::vector<std::string> alt_names = {}) {
  const DataKeyId id = id_from(seed);
  bson_t doc = BSON_INITIALIZER;
  bson_append_binary(&doc, "_id", -1, BSON_SUBTYPE_UUID, id.bytes.data(), 16);
  const std::uint8_t material[8] = {seed, 1, 2, 3, 4, 5, 6, 7};
  bson_append_binary(&doc, "keyMaterial", -1, BSON_SUBTYPE_BINARY, material, sizeof material);
  bson_t master;
  BSON_APPEND_DOCUMENT_BEGIN(&doc, "masterKey", &master);
  BSON_APPEND_UTF8(&master, "provider", "azure");
  BSON_APPEND_UTF8(&master, "keyVaultEndpoint", "127.0.0.1:8443");
  BSON_APPEND_UTF8(&master, "keyName", "key-1");
  bson_append_document_end(&doc, &master);
  BSON_APPEND_DATE_TIME(&doc, "creationDate", 1'700'000'000'000);
  if (!alt_names.empty()) {
    bson_t names;
    BSON_APPEND_ARRAY_BEGIN(&doc, "keyAltNames", &names);
    for (std::size_t i = 0; i < alt_names.size(); ++i) {
      BSON_APPEND_UTF8(&names, std::to_string(i).c_str(), alt_names[i].c_str());
    }
    bson_append_array_end(&doc, &names);
  }
  BsonDocument result(&doc);
  bson_destroy(&doc);
  return result;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<fs::path> temp_files(const fs::path& store) {
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(store.parent_path())) {
    if (entry.path().filename().string().starts_with(store.filename().string() + ".tmp-")) {
      found.push_back(entry.path());
    }
  }
  return found;
}

class FileKeyVaultTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::make_temp_dir("azkms-keyvault"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path store() const { return dir_ / "keys.json"; }
  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// Vocabulary

TEST(DataKeyIdTest, PrintsAndParsesTheHyphenatedForm) {
  const DataKeyId id = id_from(0xa0);
  EXPECT_EQ(id.to_string(), "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
  EXPECT_EQ(DataKeyId::parse(id.to_string()), id);
  EXPECT_EQ(DataKeyId::parse("A0A1A2A3-A4A5-A6A7-A8A9-AAABACADAEAF"), id);
  EXPECT_FALSE(DataKeyId::parse("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"));
  EXPECT_FALSE(DataKeyId::parse("a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeag"));
  EXPECT_FALSE(DataKeyId::parse(""));
}

TEST(DataKeyIdTest, OfADocumentNeedsAUuidId) {
  EXPECT_EQ(DataKeyId::of(key_doc(7)), id_from(7));
  try {
    (void)DataKeyId::of(BsonDocument::from_json(R"({"_id": 1})"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKeyVault);
  }
}

TEST(KeyQueryTest, ReadsLibmongocryptsFilterAndBuildsTheSame) {
  KeyQuery query;
  query.ids = {id_from(1), id_from(2)};
  query.alt_names = {"alpha"};
  const BsonDocument filter = query.to_filter();
  EXPECT_NE(filter.canonical_json().find("\"$or\""), std::string::npos);
  const KeyQuery back = KeyQuery::from_filter(filter);
  EXPECT_EQ(back.ids, query.ids);
  EXPECT_EQ(back.alt_names, query.alt_names);

  // Exactly the shape libmongocrypt 1.7.2 sends (captured from it).
  const BsonDocument captured = BsonDocument::from_json(
      R"({ "$or" : [ { "_id" : { "$in" : [ { "$binary" : { "base64" : "AQIDBAUGBwgJCgsMDQ4PEA==",
          "subType" : "04" } } ] } }, { "keyAltNames" : { "$in" : [ "foo" ] } } ] })");
  const KeyQuery parsed = KeyQuery::from_filter(captured);
  ASSERT_EQ(parsed.ids.size(), 1u);
  EXPECT_EQ(parsed.ids[0].to_string(), "01020304-0506-0708-090a-0b0c0d0e0f10");
  EXPECT_EQ(parsed.alt_names, std::vector<std::string>{"foo"});
}

TEST(KeyQueryTest, RefusesOtherFilterShapes) {
  for (const char* json :
       {R"({})", R"({"$or": 1})", R"({"$or": [{"status": {"$in": [1]}}]})",
        R"({"$or": [{"_id": {"$in": [1]}}]})", R"({"$or": [{"keyAltNames": {"$in": [1]}}]})",
        R"({"$or": [{"_id": 5}]})"}) {
    try {
      (void)KeyQuery::from_filter(BsonDocument::from_json(json));
      ADD_FAILURE() << "accepted " << json;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kKeyVault) << json;
    }
  }
}

TEST(KeyQueryTest, MatchesByIdOrAltName) {
  KeyQuery query;
  query.ids = {id_from(1)};
  query.alt_names = {"beta"};
  EXPECT_TRUE(query.matches(key_doc(1)));
  EXPECT_TRUE(query.matches(key_doc(9, {"alpha", "beta"})));
  EXPECT_FALSE(query.matches(key_doc(9, {"alpha"})));
  EXPECT_FALSE(query.matches(key_doc(2)));
}

// ---------------------------------------------------------------------------------------------
// FileKeyVault: behaviour

TEST_F(FileKeyVaultTest, AnAbsentFileIsAnEmptyStore) {
  FileKeyVault vault(store());
  EXPECT_TRUE(vault.all().empty());
  EXPECT_FALSE(fs::exists(store()));
  EXPECT_EQ(vault.describe(), "file " + store().string());
}

TEST_F(FileKeyVaultTest, TheDirectoryMustExist) {
  try {
    FileKeyVault vault(dir_ / "missing" / "keys.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos);
  }
}

TEST_F(FileKeyVaultTest, InsertsAndFindsByIdAndAltName) {
  FileKeyVault vault(store());
  vault.insert(key_doc(1, {"alpha"}), soon());
  vault.insert(key_doc(2, {"beta", "gamma"}), soon());
  vault.insert(key_doc(3), soon());

  KeyQuery by_id;
  by_id.ids = {id_from(3)};
  auto found = vault.find(by_id, soon());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0], key_doc(3));

  KeyQuery by_name;
  by_name.alt_names = {"gamma", "alpha"};
  found = vault.find(by_name, soon());
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(DataKeyId::of(found[0]), id_from(1));  // storage order
  EXPECT_EQ(DataKeyId::of(found[1]), id_from(2));

  KeyQuery none;
  none.ids = {id_from(9)};
  EXPECT_TRUE(vault.find(none, soon()).empty());
}

TEST_F(FileKeyVaultTest, DocumentsSurviveARoundTripExactly) {
  {
    FileKeyVault vault(store());
    vault.insert(key_doc(1, {"alpha"}), soon());
  }
  FileKeyVault reopened(store());
  const auto all = reopened.all();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], key_doc(1, {"alpha"}));  // binary subtypes, dates and types intact
  const std::string text = read_file(store());
  EXPECT_NE(text.find("\"azkmsKeyVault\""), std::string::npos);
  EXPECT_NE(text.find("\"$binary\""), std::string::npos);
}

TEST_F(FileKeyVaultTest, TheFileIsPrivateToItsOwner) {
  FileKeyVault vault(store());
  vault.insert(key_doc(1), soon());
  const auto perms = fs::status(store()).permissions();
  EXPECT_EQ(perms & (fs::perms::group_all | fs::perms::others_all), fs::perms::none);
}

TEST_F(FileKeyVaultTest, RefusesADuplicateIdOrAltNameAndKeepsTheStore) {
  FileKeyVault vault(store());
  vault.insert(key_doc(1, {"alpha"}), soon());
  const std::string before = read_file(store());
  for (const auto& duplicate : {key_doc(1), key_doc(2, {"beta", "alpha"})}) {
    try {
      vault.insert(duplicate, soon());
      ADD_FAILURE() << "accepted a duplicate";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kKeyVault);
      EXPECT_NE(std::string(e.what()).find("already exists"), std::string::npos);
    }
  }
  EXPECT_EQ(read_file(store()), before);
}

TEST_F(FileKeyVaultTest, RefusesADocumentWithoutUuidId) {
  FileKeyVault vault(store());
  EXPECT_THROW(vault.insert(BsonDocument::from_json(R"({"_id": "x"})"), soon()), Error);
  EXPECT_FALSE(fs::exists(store()));
}

TEST_F(FileKeyVaultTest, ACorruptStoreIsAnErrorNotAnEmptyStore) {
  {
    std::ofstream out(store());
    out << "{\"keys\": [";
  }
  FileKeyVault vault(store());
  try {
    (void)vault.all();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kKeyVault);
    EXPECT_NE(std::string(e.what()).find(store().string()), std::string::npos);
  }
  // An insert must not silently replace keys it could not read.
  EXPECT_THROW(vault.insert(key_doc(1), soon()), Error);
  EXPECT_EQ(read_file(store()), "{\"keys\": [");
}

TEST_F(FileKeyVaultTest, AForeignJsonFileIsRefused) {
  {
    std::ofstream out(store());
    out << R"({"keys": []})";
  }
  FileKeyVault vault(store());
  EXPECT_THROW((void)vault.all(), Error);
}

// ---------------------------------------------------------------------------------------------
// FileKeyVault: durability

TEST_F(FileKeyVaultTest, AFailureBeforeCommitLeavesThePreviousStateAndNoTempFile) {
  FileKeyVault good(store());
  good.insert(key_doc(1), soon());
  const std::string before = read_file(store());

  FileKeyVaultOptions options;
  bool hook_ran = false;
  options.before_commit = [&](int, const fs::path& temp) {
    hook_ran = true;
    EXPECT_TRUE(fs::exists(temp));
    throw Error(ErrorCode::kKeyVault, "disk full (simulated)");
  };
  FileKeyVault failing(store(), options);
  EXPECT_THROW(failing.insert(key_doc(2), soon()), Error);
  EXPECT_TRUE(hook_ran);
  EXPECT_EQ(read_file(store()), before);
  EXPECT_TRUE(temp_files(store()).empty());
  EXPECT_EQ(good.all().size(), 1u);
}

// A real crash: a child process dies (_exit, no unwinding, no cleanup) in the middle of a
// write, after truncating its temporary file to half. The parent sees the old state, the
// leftover is never read, and the next writer removes it.
TEST_F(FileKeyVaultTest, ACrashMidWriteLeavesThePreviousStateIntact) {
  FileKeyVault vault(store());
  vault.insert(key_doc(1, {"alpha"}), soon());
  const std::string before = read_file(store());

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    FileKeyVaultOptions options;
    options.before_commit = [](int fd, const fs::path&) {
      const off_t size = ::lseek(fd, 0, SEEK_END);
      if (::ftruncate(fd, size / 2) != 0) ::_exit(3);
      ::_exit(0);  // "power cut" before fsync and rename
    };
    FileKeyVault doomed(store(), options);
    doomed.insert(key_doc(2, {"beta"}), std::chrono::steady_clock::now() + 10s);
    ::_exit(2);  // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);

  ASSERT_EQ(temp_files(store()).size(), 1u);  // the crash left its half-written file
  EXPECT_EQ(read_file(store()), before);
  FileKeyVault reopened(store());
  const auto keys = reopened.all();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0], key_doc(1, {"alpha"}));

  reopened.insert(key_doc(3), soon());
  EXPECT_TRUE(temp_files(store()).empty());
  EXPECT_EQ(reopened.all().size(), 2u);
}

TEST_F(FileKeyVaultTest, AGarbageTempFileIsIgnored) {
  FileKeyVault vault(store());
  vault.insert(key_doc(1), soon());
  {
    std::ofstream out(dir_ / "keys.json.tmp-999-deadbeef");
    out << R"({"azkmsKeyVault": {"$numberInt": "1"}, "keys": [)";
  }
  EXPECT_EQ(FileKeyVault(store()).all().size(), 1u);
}

TEST_F(FileKeyVaultTest, ConcurrentWritersLoseNothing) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 8;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      FileKeyVault vault(store());  // separate instances, as separate processes would have
      for (int i = 0; i < kPerThread; ++i) {
        try {
          vault.insert(key_doc(static_cast<std::uint8_t>(t * 32 + i)),
                       std::chrono::steady_clock::now() + 60s);
        } catch (const Error&) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(FileKeyVault(store()).all().size(), static_cast<std::size_t>(kThreads * kPerThread));
}

TEST_F(FileKeyVaultTest, AnotherProcessWritingConcurrentlyLosesNothing) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      FileKeyVault vault(store());
      for (int i = 0; i < 10; ++i) {
        vault.insert(key_doc(static_cast<std::uint8_t>(100 + i)),
                     std::chrono::steady_clock::now() + 60s);
      }
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  FileKeyVault vault(store());
  for (int i = 0; i < 10; ++i) {
    vault.insert(key_doc(static_cast<std::uint8_t>(i)), std::chrono::steady_clock::now() + 60s);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(vault.all().size(), 20u);
}

TEST_F(FileKeyVaultTest, AHeldLockEndsAtTheDeadline) {
  const fs::path lock_path = store().string() + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  // flock locks belong to the open file description: a second open() contends with it.
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);
  FileKeyVault vault(store());
  try {
    vault.insert(key_doc(1), std::chrono::steady_clock::now() + 50ms);
    ADD_FAILURE() << "expected a timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
  }
  ::close(fd);
  EXPECT_TRUE(vault.all().empty());
}

// ---------------------------------------------------------------------------------------------
// MongoKeyVault (no server available: documents and failure paths)

// A loopback port with nothing listening: bind, read the port, close.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

TEST(MongoKeyVaultTest, AnInvalidUriIsAConfigurationErrorWithoutThePassword) {
  MongoKeyVaultOptions options;
  options.uri = "mongodb://user:hunter2@/bad";
  try {
    MongoKeyVault vault(options);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConfiguration);
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos);
  }
}

TEST(MongoKeyVaultTest, DescribesTheNamespaceAndHostsWithoutCredentials) {
  MongoKeyVaultOptions options;
  options.uri = "mongodb://user:hunter2@127.0.0.1:27017/?authSource=admin";
  options.database = "enc";
  options.collection = "keys";
  MongoKeyVault vault(options);
  EXPECT_EQ(vault.describe(), "MongoDB collection enc.keys at 127.0.0.1:27017");
}

TEST(MongoKeyVaultTest, BuildsTheKeyAltNamesIndexCommand) {
  MongoKeyVaultOptions options;
  options.collection = "__keyVault";
  MongoKeyVault vault(options);
  const BsonDocument expected = BsonDocument::from_json(R"({
    "createIndexes": "__keyVault",
    "indexes": [{"key": {"keyAltNames": 1}, "name": "keyAltNames_1", "unique": true,
                 "partialFilterExpression": {"keyAltNames": {"$exists": true}}}]})");
  EXPECT_EQ(vault.create_index_command(), expected);
}

TEST(MongoKeyVaultTest, AnUnreachableServerFailsWithinTheSelectionTimeout) {
  MongoKeyVaultOptions options;
  options.uri = "mongodb://127.0.0.1:" + std::to_string(closed_port());
  options.server_selection_timeout = 300ms;
  MongoKeyVault vault(options);
  KeyQuery query;
  query.ids = {id_from(1)};
  try {
    (void)vault.find(query, soon());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConnection);
    EXPECT_NE(std::string(e.what()).find("encryption.__keyVault"), std::string::npos);
  }
  try {
    vault.insert(key_doc(1), soon());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kConnection);
  }
}

TEST(MongoKeyVaultTest, APassedDeadlineFailsBeforeAnyIo) {
  MongoKeyVault vault(MongoKeyVaultOptions{});
  KeyQuery query;
  try {
    (void)vault.find(query, std::chrono::steady_clock::now() - 1ms);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
  }
}

}  // namespace
}  // namespace azkms
