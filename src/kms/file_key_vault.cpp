// FileKeyVault: data keys in one file, replaced atomically on every insert.
//
// Why a whole-file rewrite rather than an append log: a key vault holds few documents (one per
// data key, typically a handful to a few thousand) and is written rarely, so the simplest
// durable scheme wins. rename(2) within one directory is atomic on POSIX file systems; the
// fsync of the temporary file before it makes the new content durable before it becomes
// visible, and the fsync of the directory after it makes the rename itself durable.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <sstream>
#include <thread>

#include "azkms/error.hpp"
#include "azkms/key_vault.hpp"
#include "file_reader.hpp"

namespace azkms {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFormatField = "azkmsKeyVault";
constexpr std::int32_t kFormatVersion = 1;
// A data key document takes under 1 KiB: this is tens of thousands of keys, far beyond what
// a file store is for (see the note at the top), and a bound on what one read may allocate.
constexpr std::size_t kMaxStoreBytes = 16 * 1024 * 1024;

Error io_error(const std::string& what, const fs::path& path, int err) {
  return Error(ErrorCode::kKeyVault, what + " " + path.string() + ": " + std::strerror(err));
}

void write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw io_error("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

void fsync_or_throw(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) throw io_error("cannot fsync", path, errno);
}

std::string temp_prefix(const fs::path& path) { return path.filename().string() + ".tmp-"; }

// Holds the advisory lock that serialises writers (threads and processes) until destroyed.
class WriterLock {
 public:
  WriterLock(const fs::path& lock_path, Deadline deadline)
      : fd_(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_.get() < 0) throw io_error("cannot open lock file", lock_path, errno);
    // flock(2) has no timeout; poll so that the caller's deadline holds.
    while (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) {
        throw io_error("cannot lock", lock_path, errno);
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        throw Error(ErrorCode::kTimeout, "another writer held the key vault lock " +
                                             lock_path.string() + " until the deadline");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  ~WriterLock() { ::flock(fd_.get(), LOCK_UN); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  FileDescriptor fd_;
};

std::vector<BsonDocument> parse_store(const std::string& text, const fs::path& path) {
  bson_error_t error;
  bson_t* doc = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(text.data()),
                                   static_cast<ssize_t>(text.size()), &error);
  if (doc == nullptr) {
    throw Error(ErrorCode::kKeyVault, "key vault file " + path.string() +
                                          " is not valid Extended JSON (" + error.message +
                                          "); it was not written by azkms or was altered");
  }
  BsonDocument store(doc);
  bson_destroy(doc);

  bson_iter_t iter;
  if (!bson_iter_init_find(&iter, store.get(), kFormatField) || !BSON_ITER_HOLDS_INT32(&iter) ||
      bson_iter_int32(&iter) != kFormatVersion) {
    throw Error(ErrorCode::kKeyVault, "key vault file " + path.string() + " lacks \"" +
                                          kFormatField + "\": 1; it is not an azkms key vault");
  }
  bson_iter_t keys;
  if (!bson_iter_init_find(&iter, store.get(), "keys") || !BSON_ITER_HOLDS_ARRAY(&iter) ||
      !bson_iter_recurse(&iter, &keys)) {
    throw Error(ErrorCode::kKeyVault, "key vault file " + path.string() + " has no keys array");
  }
  std::vector<BsonDocument> result;
  while (bson_iter_next(&keys)) {
    if (!BSON_ITER_HOLDS_DOCUMENT(&keys)) {
      throw Error(ErrorCode::kKeyVault,
                  "key vault file " + path.string() + " holds a key that is not a document");
    }
    std::uint32_t length = 0;
    const std::uint8_t* data = nullptr;
    bson_iter_document(&keys, &length, &data);
    result.push_back(BsonDocument::from_bytes({data, length}));
  }
  return result;
}

std::string serialise_store(const std::vector<BsonDocument>& keys) {
  bson_t store = BSON_INITIALIZER;
  BSON_APPEND_INT32(&store, kFormatField, kFormatVersion);
  bson_t array;
  BSON_APPEND_ARRAY_BEGIN(&store, "keys", &array);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string index = std::to_string(i);
    bson_append_document(&array, index.c_str(), -1, keys[i].get());
  }
  bson_append_array_end(&store, &array);
  BsonDocument doc(&store);
  bson_destroy(&store);
  return doc.canonical_json() + "\n";
}

std::vector<std::string> alt_names_of(const BsonDocument& key) {
  std::vector<std::string> names;
  bson_iter_t iter;
  bson_iter_t array;
  if (bson_iter_init_find(&iter, key.get(), "keyAltNames") && BSON_ITER_HOLDS_ARRAY(&iter) &&
      bson_iter_recurse(&iter, &array)) {
    while (bson_iter_next(&array)) {
      if (BSON_ITER_HOLDS_UTF8(&array)) names.emplace_back(bson_iter_utf8(&array, nullptr));
    }
  }
  return names;
}

std::string random_suffix() {
  std::random_device device;
  std::ostringstream out;
  out << ::getpid() << '-' << std::hex << device() << device();
  return out.str();
}

// Every key in the store at `path`; an absent file is an empty store. The file is only ever
// replaced by rename, never removed: once it exists, it stays. Links are followed (a read-only
// store may be mounted from a Kubernetes Secret), but what they lead to must be a regular file
// of a sane size: a FIFO or a device in its place must not hang or flood the caller.
std::vector<BsonDocument> read_store(const fs::path& path, std::optional<Deadline> deadline) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  FileReadRules rules;
  rules.what = "key vault file";
  rules.code = ErrorCode::kKeyVault;
  rules.max_bytes = kMaxStoreBytes;
  rules.follow_links = true;
  rules.deadline = deadline;
  return parse_store(read_regular_file(path.string(), rules), path);
}

}  // namespace

FileKeyVault::FileKeyVault(fs::path path, FileKeyVaultOptions options)
    : path_(std::move(path)), options_(std::move(options)) {
  if (path_.empty()) throw Error(ErrorCode::kConfiguration, "key vault file path is empty");
  const fs::path directory = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) {
    throw Error(ErrorCode::kConfiguration,
                "key vault directory " + directory.string() + " does not exist");
  }
}

std::string FileKeyVault::describe() const { return "file " + path_.string(); }

std::vector<BsonDocument> FileKeyVault::all() const { return read_store(path_, std::nullopt); }

std::vector<BsonDocument> FileKeyVault::find(const KeyQuery& query, Deadline deadline) {
  std::vector<BsonDocument> found;
  for (auto& key : read_store(path_, deadline)) {
    if (query.matches(key)) found.push_back(std::move(key));
  }
  return found;
}

void FileKeyVault::insert(const BsonDocument& key_document, Deadline deadline) {
  const DataKeyId id = DataKeyId::of(key_document);
  const std::vector<std::string> new_names = alt_names_of(key_document);

  const fs::path directory = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  WriterLock lock(fs::path(path_.string() + ".lock"), deadline);

  // Leftovers of a writer that died before its rename: never read, removed under the lock.
  std::error_code ec;
  const std::string prefix = temp_prefix(path_);
  for (const auto& entry : fs::directory_iterator(directory, ec)) {
    if (entry.path().filename().string().starts_with(prefix)) fs::remove(entry.path(), ec);
  }

  std::vector<BsonDocument> keys = read_store(path_, deadline);
  for (const auto& existing : keys) {
    if (DataKeyId::of(existing) == id) {
      throw Error(ErrorCode::kKeyVault,
                  "a data key with _id " + id.to_string() + " already exists in " + describe());
    }
    for (const auto& name : alt_names_of(existing)) {
      if (std::find(new_names.begin(), new_names.end(), name) != new_names.end()) {
        throw Error(ErrorCode::kKeyVault,
                    "a data key with keyAltName \"" + name + "\" already exists in " + describe());
      }
    }
  }
  keys.push_back(key_document);
  const std::string content = serialise_store(keys);

  const fs::path temp = directory / (prefix + random_suffix());
  FileDescriptor fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) throw io_error("cannot create", temp, errno);
  try {
    write_all(fd.get(), content, temp);
    if (options_.before_commit) options_.before_commit(fd.get(), temp);
    fsync_or_throw(fd.get(), temp);
    if (fd.close() != 0) throw io_error("cannot close", temp, errno);
    if (::rename(temp.c_str(), path_.c_str()) != 0) throw io_error("cannot replace", path_, errno);
  } catch (...) {
    fs::remove(temp, ec);
    throw;
  }

  FileDescriptor dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) throw io_error("cannot open directory", directory, errno);
  fsync_or_throw(dir.get(), directory);
}

}  // namespace azkms
