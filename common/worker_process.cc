#include "common/worker_process.h"

#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace layerflow {
namespace {

bool IsExecutable(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

std::string Describe(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return "ended";
}

}  // namespace

absl::StatusOr<std::string> LocateSiblingBinary(const std::string& name,
                                                const std::string& env_var) {
  std::vector<std::string> tried;
  if (const char* env = std::getenv(env_var.c_str()); env != nullptr && *env) {
    if (IsExecutable(env)) return std::string(env);
    tried.push_back(absl::StrCat(env, " ($", env_var, ")"));
  }
  char self[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir = dir.substr(0, dir.find_last_of('/'));
    for (const std::string& candidate :
         {absl::StrCat(dir, "/", name), absl::StrCat(dir, "/../worker/", name)}) {
      if (IsExecutable(candidate)) return candidate;
      tried.push_back(candidate);
    }
  }
  return absl::NotFoundError(absl::StrCat("cannot find the ", name,
                                          " binary; looked at: ", absl::StrJoin(tried, ", "),
                                          ". Set ", env_var, " to its path"));
}

std::string CurrentFolder() {
  char* cwd = getcwd(nullptr, 0);
  if (cwd == nullptr) return "";
  std::string out(cwd);
  free(cwd);
  return out;
}

absl::StatusOr<std::string> LocateWorkerBinary() {
  return LocateSiblingBinary("layerflow-worker", "LAYERFLOW_WORKER_BIN");
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Spawn(
    const WorkerProcessOptions& options) {
  if (options.coordinator_address.empty()) {
    return absl::InvalidArgumentError("coordinator_address: required");
  }
  std::string binary = options.binary;
  if (binary.empty()) {
    absl::StatusOr<std::string> located = LocateWorkerBinary();
    if (!located.ok()) return located.status();
    binary = *located;
  }
  std::vector<std::string> args = {binary, "--coordinator", options.coordinator_address, "--device",
                                   options.device};
  if (!options.name.empty()) {
    args.push_back("--name");
    args.push_back(options.name);
  }
  for (const std::string& root : options.model_roots) {
    if (root.empty()) continue;
    args.push_back("--model-root");
    args.push_back(root);
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  // The parent may block SIGINT/SIGTERM to take them with sigwait (the
  // coordinator does); the child must not inherit that, or SIGTERM could
  // never stop it. The child inherits stderr, so its log lines appear with ours.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGTERM);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, binary.c_str(), nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::Status(absl::ErrnoToStatusCode(rc),
                        absl::StrCat("starting ", binary, ": ", std::strerror(rc)));
  }
  return std::unique_ptr<WorkerProcess>(new WorkerProcess(pid));
}

std::optional<std::string> WorkerProcess::Exited() {
  if (exit_.has_value()) return exit_;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) exit_ = Describe(status);
  return exit_;
}

void WorkerProcess::Stop() {
  if (Exited().has_value()) return;
  kill(pid_, SIGTERM);
  // A chunk of a large model can take a while; past that, do not hang.
  for (int i = 0; i < 300 && !Exited().has_value(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!Exited().has_value()) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_ = Describe(status);
  }
}

WorkerProcess::~WorkerProcess() { Stop(); }

}  // namespace layerflow
