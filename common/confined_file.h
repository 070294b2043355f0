// The one way worker code opens a file that a job names: a checkpoint's
// config.json, tokenizer.json, index files and weight shards (issue 14,
// "files on workers"). POSIX only, no std::filesystem (libtorch.so exports
// std::filesystem symbols of an older libstdc++; common/file_util.h).
//
// A ConfinedDir is a folder (resolved with realpath) and a bound, a folder
// that contains it. Opening `name` inside it:
//   - `name` is one or more path components, none empty, "." or "..", and
//     not absolute (a shard name of an index file must be one component:
//     CheckPlainFileName);
//   - the path is resolved with realpath (symlinks followed) and must stay
//     inside the bound: PERMISSION_DENIED otherwise;
//   - it must be a regular file (a FIFO, device, socket or folder is
//     INVALID_ARGUMENT; it is stat'ed before it is opened, and opened with
//     O_NONBLOCK | O_NOFOLLOW, so a FIFO never blocks the worker) of at most
//     `max_bytes` bytes (INVALID_ARGUMENT naming the size and the limit);
//   - a missing file is NOT_FOUND.
// Every message names the file by `display` (the folder as the job named
// it, or nothing) and the relative name, never by the resolved path: job
// errors are shown to every user of the coordinator.
#ifndef LAYERFLOW_COMMON_CONFINED_FILE_H_
#define LAYERFLOW_COMMON_CONFINED_FILE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace layerflow {

// An open regular file (closed on destruction); movable, not copyable.
class ConfinedFile {
 public:
  ConfinedFile() = default;
  ConfinedFile(int fd, int64_t size, std::string name)
      : fd_(fd), size_(size), name_(std::move(name)) {}
  ~ConfinedFile();
  ConfinedFile(ConfinedFile&& other) noexcept;
  ConfinedFile& operator=(ConfinedFile&& other) noexcept;
  ConfinedFile(const ConfinedFile&) = delete;
  ConfinedFile& operator=(const ConfinedFile&) = delete;

  int fd() const { return fd_; }
  // The size checked at open (what ReadAll reads, at most).
  int64_t size() const { return size_; }
  // The name errors use (relative to the folder, e.g. "config.json").
  const std::string& name() const { return name_; }
  // The whole file (size() bytes). DATA_LOSS when it shrank or grew since
  // it was opened, or a read fails.
  absl::StatusOr<std::string> ReadAll() const;
  // The same into a byte vector (what LibTorch's unpickler takes).
  absl::StatusOr<std::vector<char>> ReadAllBytes() const;

 private:
  friend class ConfinedDir;
  absl::Status ReadInto(char* out) const;  // size() bytes
  int fd_ = -1;
  int64_t size_ = 0;
  std::string name_;
};

class ConfinedDir {
 public:
  ConfinedDir() = default;
  // `dir` and `bound` are resolved with realpath; `dir` must be a folder
  // inside `bound` (or `bound` itself): PERMISSION_DENIED otherwise,
  // NOT_FOUND when it does not exist. `display` prefixes file names in
  // messages ("" for none).
  static absl::StatusOr<ConfinedDir> Open(const std::string& dir, const std::string& bound,
                                          std::string display = "");

  // True when `name` exists at all (file, folder, FIFO, ...), for choosing
  // between formats: the Open of the chosen one reports a bad type.
  bool Exists(absl::string_view name) const;
  absl::StatusOr<ConfinedFile> OpenFile(absl::string_view name, int64_t max_bytes) const;
  absl::StatusOr<std::string> ReadFile(absl::string_view name, int64_t max_bytes) const;

  // The resolved folder: for this worker's own log and for libraries that
  // need a path; never put it in a job error.
  const std::string& path() const { return path_; }
  const std::string& display() const { return display_; }
  // `display`/`name` (or `name` when display is empty).
  std::string DisplayName(absl::string_view name) const;

 private:
  std::string path_;   // realpath of the folder
  std::string bound_;  // realpath of the bound
  std::string display_;
};

// OK when `name` is one path component fit to name a file inside a folder:
// not empty, no '/', not "." or "..", no NUL, at most 255 bytes.
// INVALID_ARGUMENT "<field>: ..." otherwise; the message does not repeat
// the name (it comes from a file and may be anything).
absl::Status CheckPlainFileName(absl::string_view name, absl::string_view field);

// realpath(path); the errno's status (NOT_FOUND when missing) naming
// `display`, never `path`.
absl::StatusOr<std::string> RealPath(const std::string& path, absl::string_view display);

// True when `path` is `root` or inside it (both resolved, no trailing '/'
// except for "/").
bool PathWithin(absl::string_view path, absl::string_view root);

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_CONFINED_FILE_H_
