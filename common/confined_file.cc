#include "common/confined_file.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace layerflow {
namespace {

// The relative name's own checks (each component a plain file name).
absl::Status CheckRelativeName(absl::string_view name, absl::string_view display) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(display, ": empty file name"));
  if (name.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(display, ": an absolute path is not a name inside the folder"));
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (absl::Status s = CheckPlainFileName(part, display); !s.ok()) return s;
  }
  return absl::OkStatus();
}

const char* FileTypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

ConfinedFile::~ConfinedFile() {
  if (fd_ >= 0) close(fd_);
}

ConfinedFile::ConfinedFile(ConfinedFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), size_(other.size_), name_(std::move(other.name_)) {}

ConfinedFile& ConfinedFile::operator=(ConfinedFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    name_ = std::move(other.name_);
  }
  return *this;
}

absl::Status ConfinedFile::ReadInto(char* out) const {
  const size_t size = static_cast<size_t>(size_);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pread(fd_, out + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::DataLossError(absl::StrCat(name_, ": read error: ", std::strerror(errno)));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(name_, ": the file shrank while it was read"));
    }
    done += static_cast<size_t>(n);
  }
  char extra = 0;
  if (pread(fd_, &extra, 1, static_cast<off_t>(done)) > 0) {
    return absl::DataLossError(absl::StrCat(name_, ": the file grew while it was read"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ConfinedFile::ReadAll() const {
  std::string out(static_cast<size_t>(size_), '\0');
  if (absl::Status s = ReadInto(out.data()); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<char>> ConfinedFile::ReadAllBytes() const {
  std::vector<char> out(static_cast<size_t>(size_));
  if (absl::Status s = ReadInto(out.data()); !s.ok()) return s;
  return out;
}

absl::Status CheckPlainFileName(absl::string_view name, absl::string_view field) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty file name"));
  if (name.size() > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": a file name of ", name.size(), " bytes (at most 255)"));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '.' and '..' do not name a file in the folder"));
  }
  if (name.find('/') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be a file name in the folder, without '/'"));
  }
  if (name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": a file name with a NUL byte"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RealPath(const std::string& path, absl::string_view display) {
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(display, ": a path with a NUL byte"));
  }
  char* resolved = realpath(path.c_str(), nullptr);
  if (resolved == nullptr) {
    const int err = errno;
    return absl::Status(
        absl::ErrnoToStatusCode(err),
        absl::StrCat(display, ": ", err == ENOENT ? "not found" : std::strerror(err)));
  }
  std::string out(resolved);
  free(resolved);
  return out;
}

bool PathWithin(absl::string_view path, absl::string_view root) {
  if (root == "/") return !path.empty() && path.front() == '/';
  if (path.size() < root.size() || path.substr(0, root.size()) != root) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

absl::StatusOr<ConfinedDir> ConfinedDir::Open(const std::string& dir, const std::string& bound,
                                              std::string display) {
  const std::string shown = display.empty() ? std::string("folder") : display;
  ConfinedDir out;
  absl::StatusOr<std::string> bound_path = RealPath(bound, shown);
  if (!bound_path.ok()) return bound_path.status();
  absl::StatusOr<std::string> dir_path = RealPath(dir, shown);
  if (!dir_path.ok()) return dir_path.status();
  if (!PathWithin(*dir_path, *bound_path)) {
    return absl::PermissionDeniedError(
        absl::StrCat(shown, ": resolves outside the folders this worker may read"));
  }
  struct stat st {};
  if (stat(dir_path->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(shown, ": not a folder"));
  }
  out.path_ = *std::move(dir_path);
  out.bound_ = *std::move(bound_path);
  out.display_ = std::move(display);
  return out;
}

std::string ConfinedDir::DisplayName(absl::string_view name) const {
  return display_.empty() ? std::string(name) : absl::StrCat(display_, "/", name);
}

bool ConfinedDir::Exists(absl::string_view name) const {
  if (path_.empty() || !CheckRelativeName(name, "").ok()) return false;
  struct stat st {};
  return stat(absl::StrCat(path_, "/", name).c_str(), &st) == 0;
}

absl::StatusOr<ConfinedFile> ConfinedDir::OpenFile(absl::string_view name,
                                                   int64_t max_bytes) const {
  const std::string shown = DisplayName(name);
  if (path_.empty()) return absl::FailedPreconditionError(absl::StrCat(shown, ": no folder"));
  if (absl::Status s = CheckRelativeName(name, shown); !s.ok()) return s;
  absl::StatusOr<std::string> resolved = RealPath(absl::StrCat(path_, "/", name), shown);
  if (!resolved.ok()) return resolved.status();
  if (!PathWithin(*resolved, bound_)) {
    return absl::PermissionDeniedError(
        absl::StrCat(shown, ": resolves (through a symbolic link) outside the checkpoint folder"));
  }
  // stat before open: opening a FIFO for reading would block until a writer
  // comes; a device file could be read for ever.
  struct stat st {};
  if (stat(resolved->c_str(), &st) != 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(shown, ": ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, ": ", FileTypeName(st.st_mode), ", not a regular file"));
  }
  const int fd = open(resolved->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat(shown, ": cannot open: ", std::strerror(err)));
  }
  // Again on the open descriptor: the name may have been replaced.
  ConfinedFile file(fd, 0, shown);  // closes fd on the error paths
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(shown, ": not a regular file"));
  }
  if (st.st_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(shown, ": ", st.st_size,
                                                   " bytes, more than this worker's limit of ",
                                                   max_bytes, " bytes for this file"));
  }
  // Regular files ignore O_NONBLOCK; cleared all the same for plain reads.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  file.size_ = static_cast<int64_t>(st.st_size);
  return file;
}

absl::StatusOr<std::string> ConfinedDir::ReadFile(absl::string_view name, int64_t max_bytes) const {
  absl::StatusOr<ConfinedFile> file = OpenFile(name, max_bytes);
  if (!file.ok()) return file.status();
  return file->ReadAll();
}

}  // namespace layerflow
