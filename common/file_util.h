// Small file helpers shared by server, worker and client (header-only).
#ifndef LAYERFLOW_COMMON_FILE_UTIL_H_
#define LAYERFLOW_COMMON_FILE_UTIL_H_

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace layerflow {

// The whole file as bytes: when it cannot be opened, the errno's status
// (NOT_FOUND for a missing file, PERMISSION_DENIED, ...) naming the path and
// the reason; DATA_LOSS when reading fails part-way.
inline absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    return absl::Status(error != 0 ? absl::ErrnoToStatusCode(error) : absl::StatusCode::kNotFound,
                        absl::StrCat(path, ": cannot open: ", std::strerror(error)));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return buffer.str();
}

// A new, empty directory or file under $TMPDIR (else /tmp) named
// `stem`-XXXXXX; the caller removes it. The errno's status naming the path
// when it cannot be made.
inline absl::StatusOr<std::string> MakeTempPath(const std::string& stem, bool directory) {
  const char* tmp = std::getenv("TMPDIR");
  std::string path =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/", stem, "-XXXXXX");
  bool made = false;
  if (directory) {
    made = mkdtemp(path.data()) != nullptr;
  } else if (const int fd = mkstemp(path.data()); fd >= 0) {
    close(fd);
    made = true;
  }
  if (!made) {
    const int error = errno;
    return absl::Status(
        absl::ErrnoToStatusCode(error),
        absl::StrCat("cannot create a temporary ", directory ? "directory " : "file ", path, ": ",
                     std::strerror(error)));
  }
  return path;
}

// Removes `path` and everything under it (a MakeTempPath directory), best
// effort. POSIX instead of std::filesystem: in a binary linked with
// libtorch.so, whose own std::filesystem symbols (built against an older
// libstdc++) interpose ours, remove_all crashed.
inline void RemoveTree(const std::string& path) {
  nftw(
      path.c_str(),
      [](const char* entry, const struct stat*, int, struct FTW*) {
        remove(entry);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_FILE_UTIL_H_
