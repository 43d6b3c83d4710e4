// MongoKeyVault: the key vault collection on a MongoDB deployment, through libmongoc.
//
// A client pool, because libmongoc clients are not thread-safe and CryptSession may be used
// from many threads. Tests run without a server (Debian 12 ships none): they cover the
// documents this file builds and the typed errors when the deployment is unreachable.
#include <mongoc/mongoc.h>

#include <algorithm>
#include <memory>
#include <mutex>

#include "azkms/error.hpp"
#include "azkms/key_vault.hpp"

namespace azkms {
namespace {

constexpr std::uint32_t kDuplicateKey = 11000;

void init_mongoc_once() {
  static std::once_flag once;
  // mongoc_cleanup is deliberately never called: other code in the process (the user's own
  // driver use) may still need libmongoc at exit.
  std::call_once(once, [] { mongoc_init(); });
}

std::int64_t remaining_ms(Deadline deadline, const std::string& what) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    throw Error(ErrorCode::kTimeout, "the deadline passed before " + what);
  }
  return left.count();
}

struct PoolClient {
  mongoc_client_pool_t* pool;
  mongoc_client_t* client;
  PoolClient(mongoc_client_pool_t* p) : pool(p), client(mongoc_client_pool_pop(p)) {}
  ~PoolClient() { mongoc_client_pool_push(pool, client); }
  PoolClient(const PoolClient&) = delete;
  PoolClient& operator=(const PoolClient&) = delete;
};

struct CollectionDeleter {
  void operator()(mongoc_collection_t* c) const noexcept { mongoc_collection_destroy(c); }
};
struct CursorDeleter {
  void operator()(mongoc_cursor_t* c) const noexcept { mongoc_cursor_destroy(c); }
};

}  // namespace

struct MongoKeyVault::Impl {
  MongoKeyVaultOptions options;
  mongoc_uri_t* uri = nullptr;
  mongoc_client_pool_t* pool = nullptr;
  std::string description;

  ~Impl() {
    if (pool != nullptr) mongoc_client_pool_destroy(pool);
    if (uri != nullptr) mongoc_uri_destroy(uri);
  }

  Error failure(const std::string& what, const bson_error_t& error) const {
    const ErrorCode code = (error.domain == MONGOC_ERROR_SERVER_SELECTION) ? ErrorCode::kConnection
                                                                           : ErrorCode::kKeyVault;
    return Error(code, what + " in " + description + " failed: " + error.message);
  }
};

MongoKeyVault::MongoKeyVault(MongoKeyVaultOptions options) : impl_(std::make_unique<Impl>()) {
  init_mongoc_once();
  impl_->options = std::move(options);
  if (impl_->options.database.empty() || impl_->options.collection.empty()) {
    throw Error(ErrorCode::kConfiguration,
                "the key vault namespace needs a database and a collection name");
  }
  bson_error_t error;
  impl_->uri = mongoc_uri_new_with_error(impl_->options.uri.c_str(), &error);
  if (impl_->uri == nullptr) {
    // libmongoc's message may quote the URI, which may hold a password: keep it out.
    throw Error(ErrorCode::kConfiguration, "the key vault MongoDB URI is invalid");
  }
  mongoc_uri_set_option_as_int32(
      impl_->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
      static_cast<std::int32_t>(impl_->options.server_selection_timeout.count()));
  impl_->pool = mongoc_client_pool_new_with_error(impl_->uri, &error);
  if (impl_->pool == nullptr) {
    throw Error(ErrorCode::kConfiguration,
                std::string("cannot create a MongoDB client pool: ") + error.message);
  }
  mongoc_client_pool_set_error_api(impl_->pool, MONGOC_ERROR_API_VERSION_2);
  mongoc_client_pool_set_appname(impl_->pool, "azkms-key-vault");

  std::string hosts;
  for (const mongoc_host_list_t* host = mongoc_uri_get_hosts(impl_->uri); host != nullptr;
       host = host->next) {
    if (!hosts.empty()) hosts += ",";
    hosts += host->host_and_port;
  }
  if (hosts.empty()) hosts = "a DNS seed list";
  impl_->description = "MongoDB collection " + impl_->options.database + "." +
                       impl_->options.collection + " at " + hosts;
}

MongoKeyVault::~MongoKeyVault() = default;

std::string MongoKeyVault::describe() const { return impl_->description; }

void MongoKeyVault::insert(const BsonDocument& key_document, Deadline deadline) {
  (void)DataKeyId::of(key_document);  // refuse documents without a UUID _id before any I/O
  const std::int64_t budget = remaining_ms(deadline, "inserting a data key");

  PoolClient lease(impl_->pool);
  std::unique_ptr<mongoc_collection_t, CollectionDeleter> collection(mongoc_client_get_collection(
      lease.client, impl_->options.database.c_str(), impl_->options.collection.c_str()));

  bson_t opts = BSON_INITIALIZER;
  mongoc_write_concern_t* concern = mongoc_write_concern_new();
  mongoc_write_concern_set_wmajority(concern, static_cast<std::int32_t>(budget));
  mongoc_write_concern_append(concern, &opts);
  mongoc_write_concern_destroy(concern);

  bson_t reply;
  bson_error_t error;
  const bool ok =
      mongoc_collection_insert_one(collection.get(), key_document.get(), &opts, &reply, &error);
  bson_destroy(&opts);
  bson_destroy(&reply);
  if (!ok) {
    if (error.code == kDuplicateKey) {
      throw Error(ErrorCode::kKeyVault,
                  "a data key with the same _id or keyAltName exists in " + impl_->description);
    }
    throw impl_->failure("inserting data key " + DataKeyId::of(key_document).to_string(), error);
  }
}

std::vector<BsonDocument> MongoKeyVault::find(const KeyQuery& query, Deadline deadline) {
  const std::int64_t budget = remaining_ms(deadline, "reading data keys");
  const BsonDocument filter = query.to_filter();

  PoolClient lease(impl_->pool);
  std::unique_ptr<mongoc_collection_t, CollectionDeleter> collection(mongoc_client_get_collection(
      lease.client, impl_->options.database.c_str(), impl_->options.collection.c_str()));

  bson_t opts = BSON_INITIALIZER;
  BSON_APPEND_INT64(&opts, "maxTimeMS", budget);
  mongoc_read_concern_t* concern = mongoc_read_concern_new();
  mongoc_read_concern_set_level(concern, MONGOC_READ_CONCERN_LEVEL_MAJORITY);
  mongoc_read_concern_append(concern, &opts);
  mongoc_read_concern_destroy(concern);

  std::unique_ptr<mongoc_cursor_t, CursorDeleter> cursor(
      mongoc_collection_find_with_opts(collection.get(), filter.get(), &opts, nullptr));
  bson_destroy(&opts);

  std::vector<BsonDocument> found;
  const bson_t* doc = nullptr;
  while (mongoc_cursor_next(cursor.get(), &doc)) found.emplace_back(doc);
  bson_error_t error;
  if (mongoc_cursor_error(cursor.get(), &error)) throw impl_->failure("reading data keys", error);
  return found;
}

BsonDocument MongoKeyVault::create_index_command() const {
  bson_t* command =
      BCON_NEW("createIndexes", BCON_UTF8(impl_->options.collection.c_str()), "indexes", "[", "{",
               "key", "{", "keyAltNames", BCON_INT32(1), "}", "name", BCON_UTF8("keyAltNames_1"),
               "unique", BCON_BOOL(true), "partialFilterExpression", "{", "keyAltNames", "{",
               "$exists", BCON_BOOL(true), "}", "}", "}", "]");
  BsonDocument result(command);
  bson_destroy(command);
  return result;
}

void MongoKeyVault::ensure_index(Deadline deadline) {
  (void)remaining_ms(deadline, "creating the keyAltNames index");
  const BsonDocument command = create_index_command();
  PoolClient lease(impl_->pool);
  bson_t reply;
  bson_error_t error;
  const bool ok = mongoc_client_write_command_with_opts(
      lease.client, impl_->options.database.c_str(), command.get(), nullptr, &reply, &error);
  bson_destroy(&reply);
  if (!ok) throw impl_->failure("creating the keyAltNames index", error);
}

}  // namespace azkms
