#include "file_reader.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace azkms {
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;

// What a file that is not a regular file is, for a message.
const char* kind_of(mode_t mode) noexcept {
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a plain file";
}

class Reader {
 public:
  Reader(const std::string& path, const FileReadRules& rules) : path_(path), rules_(rules) {}

  std::string read() {
    // Refuse what is not a regular file before opening it.
    struct stat before {};
    const int checked =
        rules_.follow_links ? ::stat(path_.c_str(), &before) : ::lstat(path_.c_str(), &before);
    if (checked != 0) throw cannot(errno == ENOENT ? "find" : "open", errno, true);
    check(before);

    // O_NONBLOCK: a FIFO swapped in since the check opens at once instead of waiting for a
    // writer, and is then refused by the check on the descriptor below.
    int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
    if (!rules_.follow_links) flags |= O_NOFOLLOW;
    FileDescriptor fd(::open(path_.c_str(), flags));
    if (fd.get() < 0) {
      if (errno == ELOOP && !rules_.follow_links) throw not_regular(S_IFLNK);
      throw cannot(errno == ENOENT ? "find" : "open", errno, true);
    }
    // The descriptor is what gets read: check it, not the path.
    struct stat opened {};
    if (::fstat(fd.get(), &opened) != 0) throw cannot("read", errno, false);
    check(opened);
    return read_all(fd.get());
  }

 private:
  void check(const struct stat& info) const {
    if (!S_ISREG(info.st_mode)) throw not_regular(info.st_mode);
    if (info.st_size < 0 || static_cast<std::size_t>(info.st_size) > rules_.max_bytes) {
      throw refused(std::to_string(info.st_size) + " bytes, more than the " +
                    std::to_string(rules_.max_bytes) + " it may hold (the file was not read)");
    }
  }

  std::string read_all(int fd) const {
    std::shared_ptr<Clock> system;
    Clock* clock = rules_.clock;
    if (clock == nullptr && rules_.deadline) {
      system = Clock::system();
      clock = system.get();
    }
    std::string contents(rules_.max_bytes + 1, '\0');
    std::size_t total = 0;
    while (total < contents.size()) {
      if (rules_.deadline && clock->steady_now() >= *rules_.deadline) {
        wipe(contents);
        throw Error(ErrorCode::kTimeout, "reading " + describe() +
                                             " did not finish before the deadline; is it on a "
                                             "slow or hung file system?");
      }
      const std::size_t chunk = std::min(kReadChunk, contents.size() - total);
      const ssize_t n = ::read(fd, contents.data() + total, chunk);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int error = errno;
        wipe(contents);
        throw cannot("read", error, false);
      }
      if (n == 0) break;
      total += static_cast<std::size_t>(n);
    }
    if (total > rules_.max_bytes) {
      wipe(contents);
      throw refused("it grew past " + std::to_string(rules_.max_bytes) +
                    " bytes while being read (its contents were discarded)");
    }
    contents.resize(total);  // keeps the buffer: the caller's Secret wipes all of it
    return contents;
  }

  static void wipe(std::string& buffer) noexcept {
    if (buffer.capacity() > 0) OPENSSL_cleanse(buffer.data(), buffer.capacity());
  }

  [[nodiscard]] std::string describe() const { return std::string(rules_.what) + " " + path_; }

  [[nodiscard]] Error refused(const std::string& why) const {
    return Error(rules_.code, "refused " + describe() + ": " + why);
  }

  [[nodiscard]] Error not_regular(mode_t mode) const {
    return refused(std::string("it is ") + kind_of(mode) + ", not a regular file" +
                   (S_ISLNK(mode) ? " (links are not followed here; the file was not read)"
                                  : " (the file was not read)"));
  }

  [[nodiscard]] Error cannot(const char* verb, int error, bool with_hint) const {
    std::string message =
        std::string("cannot ") + verb + " " + describe() + ": " + std::strerror(error);
    if (with_hint && !rules_.open_hint.empty()) message += "; " + std::string(rules_.open_hint);
    return Error(rules_.code, std::move(message));
  }

  const std::string& path_;
  const FileReadRules& rules_;
};

}  // namespace

FileDescriptor::~FileDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

int FileDescriptor::close() noexcept {
  const int rc = ::close(fd_);
  fd_ = -1;
  return rc;
}

std::string read_regular_file(const std::string& path, const FileReadRules& rules) {
  return Reader(path, rules).read();
}

}  // namespace azkms
