// KeyVault: where data key documents live (MongoDB's "key vault collection"). libmongocrypt
// creates data key documents ({_id: UUID, keyMaterial: <wrapped key>, masterKey: {...},
// keyAltNames: [...], creationDate, updateDate, status}) and, to encrypt or decrypt, asks for
// the ones it needs by id or by alternate name. Two implementations:
//  - FileKeyVault: a single file on disk, the embedded default. Every insert rewrites the file
//    atomically (temporary file, fsync, rename, fsync of the directory), so a crash at any
//    point leaves either the old or the new state, never a mix.
//  - MongoKeyVault: a key vault collection on a MongoDB deployment, through libmongoc.
// Both are thread-safe.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "azkms/bson.hpp"
#include "azkms/clock.hpp"
#include "azkms/export.h"

namespace azkms {

// A data key's _id: a UUID (BSON binary subtype 4).
struct AZKMS_EXPORT DataKeyId {
  std::array<std::uint8_t, 16> bytes{};

  // "c2d8c9e1-..." (lower-case, hyphenated).
  [[nodiscard]] std::string to_string() const;
  // Accepts the hyphenated form; nullopt otherwise.
  static std::optional<DataKeyId> parse(std::string_view text);
  // The _id of a data key document; throws ErrorCode::kKeyVault when it has no UUID _id.
  static DataKeyId of(const BsonDocument& key_document);

  // Written out (not defaulted) so that the header compiles as C++17. Ordered by bytes.
  friend bool operator==(const DataKeyId& a, const DataKeyId& b) { return a.bytes == b.bytes; }
  friend bool operator!=(const DataKeyId& a, const DataKeyId& b) { return a.bytes != b.bytes; }
  friend bool operator<(const DataKeyId& a, const DataKeyId& b) { return a.bytes < b.bytes; }
};

// Which data keys libmongocrypt asks for: those whose _id is in `ids` or whose keyAltNames
// contain any of `alt_names`.
struct AZKMS_EXPORT KeyQuery {
  std::vector<DataKeyId> ids;
  std::vector<std::string> alt_names;

  // Reads libmongocrypt's filter ({$or: [{_id: {$in: [...]}}, {keyAltNames: {$in: [...]}}]}).
  // Throws ErrorCode::kKeyVault for any other shape rather than guessing.
  static KeyQuery from_filter(const BsonDocument& filter);
  // The same filter, built for a MongoDB find().
  [[nodiscard]] BsonDocument to_filter() const;
  // True when the document matches the query.
  [[nodiscard]] bool matches(const BsonDocument& key_document) const;
};

class AZKMS_EXPORT KeyVault {
 public:
  virtual ~KeyVault() = default;
  // Stores a new data key document. Throws ErrorCode::kKeyVault when a key with the same _id
  // or one of the same keyAltNames exists, or when the store fails; nothing is stored then.
  virtual void insert(const BsonDocument& key_document, Deadline deadline) = 0;
  // The data key documents matching `query`, in storage order.
  virtual std::vector<BsonDocument> find(const KeyQuery& query, Deadline deadline) = 0;
  // Short description for messages ("file /var/lib/app/keys.json").
  [[nodiscard]] virtual std::string describe() const = 0;
};

// ---------------------------------------------------------------------------------------------
// The file-backed store. The file holds one canonical Extended JSON document
// {"azkmsKeyVault": 1, "keys": [<data key document>, ...]}. Writers in this process and in
// others are serialised through an advisory lock on "<path>.lock"; readers need no lock since
// the file is only ever replaced whole. Temporary files ("<path>.tmp-*") left by a crash are
// never read, and are removed by the next writer.
struct AZKMS_EXPORT FileKeyVaultOptions {
  // Test hook: called with the temporary file's descriptor after the new content has been
  // written, before fsync and rename. Throwing from it simulates a crash mid-write.
  std::function<void(int fd, const std::filesystem::path& temp_path)> before_commit;
};

class AZKMS_EXPORT FileKeyVault final : public KeyVault {
 public:
  // The file need not exist yet (an absent file is an empty store); its directory must.
  explicit FileKeyVault(std::filesystem::path path, FileKeyVaultOptions options = {});

  void insert(const BsonDocument& key_document, Deadline deadline) override;
  std::vector<BsonDocument> find(const KeyQuery& query, Deadline deadline) override;
  [[nodiscard]] std::string describe() const override;

  // Every data key document in the store (reads the file).
  [[nodiscard]] std::vector<BsonDocument> all() const;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
  FileKeyVaultOptions options_;
};

// ---------------------------------------------------------------------------------------------
// A key vault collection on MongoDB. Writes use write concern "majority" and reads read concern
// "majority", as the client-side encryption specification asks for key vault operations. The
// server selection timeout bounds how long an operation waits for an unreachable deployment.
struct AZKMS_EXPORT MongoKeyVaultOptions {
  std::string uri = "mongodb://127.0.0.1:27017";
  std::string database = "encryption";
  std::string collection = "__keyVault";
  std::chrono::milliseconds server_selection_timeout{10'000};
};

class AZKMS_EXPORT MongoKeyVault final : public KeyVault {
 public:
  // Parses the URI (ErrorCode::kConfiguration when invalid) and creates a client pool; no
  // connection is made until the first operation.
  explicit MongoKeyVault(MongoKeyVaultOptions options);
  ~MongoKeyVault() override;
  MongoKeyVault(const MongoKeyVault&) = delete;
  MongoKeyVault& operator=(const MongoKeyVault&) = delete;

  void insert(const BsonDocument& key_document, Deadline deadline) override;
  std::vector<BsonDocument> find(const KeyQuery& query, Deadline deadline) override;
  [[nodiscard]] std::string describe() const override;

  // The unique partial index on keyAltNames the specification recommends for a key vault
  // collection (the createIndexes command document). Run it once per deployment.
  [[nodiscard]] BsonDocument create_index_command() const;
  // Runs create_index_command() against the deployment.
  void ensure_index(Deadline deadline);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace azkms
