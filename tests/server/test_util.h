// Small helpers shared by the coordinator tests.
#ifndef LAYERFLOW_TESTS_SERVER_TEST_UTIL_H_
#define LAYERFLOW_TESTS_SERVER_TEST_UTIL_H_

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace layerflow::server::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string base = std::filesystem::temp_directory_path() / "lf_server_XXXXXX";
    if (mkdtemp(base.data()) == nullptr) std::abort();
    path_ = base;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A loopback TCP port that was free a moment ago (bound, then closed):
// nothing listens there. -1 when none could be had.
inline int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace layerflow::server::testing

#define LF_ASSERT_OK(expr)                             \
  do {                                                 \
    const ::absl::Status lf_s_ = (expr);               \
    ASSERT_TRUE(lf_s_.ok()) << #expr << ": " << lf_s_; \
  } while (0)

#define LF_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  LF_ASSERT_OK_AND_ASSIGN_IMPL_(LF_STATUS_CONCAT_(lf_sor_, __LINE__), lhs, expr)
#define LF_ASSERT_OK_AND_ASSIGN_IMPL_(var, lhs, expr)     \
  auto var = (expr);                                      \
  ASSERT_TRUE(var.ok()) << #expr << ": " << var.status(); \
  lhs = std::move(var).value()

#endif  // LAYERFLOW_TESTS_SERVER_TEST_UTIL_H_
