// Small file helpers shared by server, worker and client (header-only).
#ifndef LAYERFLOW_COMMON_FILE_UTIL_H_
#define LAYERFLOW_COMMON_FILE_UTIL_H_

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace layerflow {

// The whole file as bytes: NOT_FOUND naming the path and the reason when it
// cannot be opened, DATA_LOSS when reading fails part-way.
inline absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return buffer.str();
}

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_FILE_UTIL_H_
