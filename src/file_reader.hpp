// Reading a file that someone else controls: the federated token file, the Azure Arc key file
// the agent names, the KMS provider configuration, the file key vault. Internal to the library.
//
// Every such file is read the same way, so that no path can hang or balloon a caller:
//  - checked with lstat/stat first, so that a FIFO, a device, a socket or a directory is refused
//    without being opened (opening a FIFO blocks until a writer appears; opening a device can
//    have side effects);
//  - opened with O_NONBLOCK (a FIFO swapped in after the check still cannot block the open),
//    O_CLOEXEC and O_NOCTTY, and with O_NOFOLLOW unless links are to be followed;
//  - checked again with fstat on the open descriptor, which is what is actually read: a regular
//    file of at most the cap;
//  - read with the cap (a file growing while being read is refused) and within the deadline.
// Messages name the file and say what to do; they never contain any of its bytes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "azkms/clock.hpp"
#include "azkms/error.hpp"

namespace azkms {

struct FileReadRules {
  // Names the file in messages, before its path: "AZURE_FEDERATED_TOKEN_FILE", "the
  // challenge's key file", "KMS provider configuration".
  std::string_view what;
  // The code of every error, except kTimeout when the deadline passes.
  ErrorCode code = ErrorCode::kConfiguration;
  std::size_t max_bytes = 0;
  // false: a symbolic link is refused (for a path another party names, like the Arc agent's
  // challenge). true: links are followed and the file they lead to is checked, for paths the
  // operator names: Kubernetes mounts projected tokens, ConfigMaps and Secrets as links.
  bool follow_links = false;
  // Appended when the file cannot be found or opened: what to check.
  std::string_view open_hint;
  // Instant by which reading must be done, on `clock` (the system clock when null); none: no
  // limit beyond the cap.
  std::optional<Deadline> deadline;
  Clock* clock = nullptr;
};

// Owns a file descriptor: closes it when destroyed.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  ~FileDescriptor();
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  [[nodiscard]] int get() const noexcept { return fd_; }
  // Closes now, returning what close(2) returns (it may report an error of buffered writes).
  int close() noexcept;

 private:
  int fd_;
};

// The whole contents of the regular file at `path`, at most rules.max_bytes. Throws
// azkms::Error (rules.code, or kTimeout) for anything else. Failed reads leave no copy of the
// bytes behind (the buffer is wiped), so the helper is safe for secrets.
std::string read_regular_file(const std::string& path, const FileReadRules& rules);

}  // namespace azkms
