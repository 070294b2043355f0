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
#include "common/worker_process.h"

extern char** environ;

namespace layerflow::client {

absl::StatusOr<std::string> LocateInspectBinary() {
  return LocateSiblingBinary("layerflow-inspect", "LAYERFLOW_INSPECT_BIN");
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
      return absl::InternalError(absl::StrCat("waiting for ", *binary, ": ", std::strerror(errno)));
    }
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace layerflow::client
