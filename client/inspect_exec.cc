#include "client/inspect_exec.h"

#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace layerflow::client {
namespace {

bool IsExecutable(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         access(path.c_str(), X_OK) == 0;
}

}  // namespace

absl::StatusOr<std::string> LocateInspectBinary() {
  std::vector<std::string> tried;
  if (const char* env = std::getenv("LAYERFLOW_INSPECT_BIN"); env != nullptr && *env) {
    if (IsExecutable(env)) return std::string(env);
    tried.push_back(absl::StrCat(env, " ($LAYERFLOW_INSPECT_BIN)"));
  }
  char self[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir = dir.substr(0, dir.find_last_of('/'));
    for (const std::string& candidate :
         {dir + "/layerflow-inspect", dir + "/../worker/layerflow-inspect"}) {
      if (IsExecutable(candidate)) return candidate;
      tried.push_back(candidate);
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "cannot find the layerflow-inspect binary; looked at: ", absl::StrJoin(tried, ", "),
      ". Set LAYERFLOW_INSPECT_BIN to its path"));
}

absl::StatusOr<int> RunInspect(const std::vector<std::string>& args) {
  absl::StatusOr<std::string> binary = LocateInspectBinary();
  if (!binary.ok()) return binary.status();
  // argv[0] as the user typed it, so its usage line reads `layerflow inspect`.
  std::vector<std::string> all = {"layerflow inspect"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : all) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, binary->c_str(), nullptr, nullptr, argv.data(), environ);
  if (rc != 0) {
    return absl::Status(absl::ErrnoToStatusCode(rc),
                        absl::StrCat("starting ", *binary, ": ", std::strerror(rc)));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      return absl::InternalError(absl::StrCat("waiting for ", *binary, ": ",
                                              std::strerror(errno)));
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace layerflow::client
