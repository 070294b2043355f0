// A layerflow-worker child process: how the coordinator's --embedded-worker
// and the CLI's `layerflow run` get a worker on the local machine.
//
// Why a process and not a thread: the CUDA build of LibTorch loads CUDA
// libraries whose static TLS is larger than the 100 KB thread stacks the
// Debian civetweb (under prometheus-cpp's Exposer) is compiled with, so a
// process that links LibTorch cannot serve /metrics (pthread_create fails
// with EINVAL). Keeping LibTorch out of the coordinator and the CLI also
// keeps them small and quick to build; the worker talks to the coordinator
// over loopback gRPC exactly like a remote one.
#ifndef LAYERFLOW_COMMON_WORKER_PROCESS_H_
#define LAYERFLOW_COMMON_WORKER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace layerflow {

struct WorkerProcessOptions {
  std::string coordinator_address;
  std::string name;
  std::string device = "auto";  // auto | cpu | cuda
  // The layerflow-worker binary; empty: LocateWorkerBinary().
  std::string binary;
  // --model-root flags: the folders whose checkpoints jobs may name (the
  // Hugging Face cache is one anyway).
  std::vector<std::string> model_roots;
};

// The current folder (absolute), or empty when it cannot be read: the
// embedded worker's model root, so that `layerflow run` reads the
// checkpoint folders a sweep file names relative to where it runs.
std::string CurrentFolder();

// A layerflow binary that lives beside the worker: $ENV_VAR when set, else
// `name` beside this executable or in ../worker/ (the build tree's layout).
// NOT_FOUND lists where it looked.
absl::StatusOr<std::string> LocateSiblingBinary(const std::string& name,
                                                const std::string& env_var);
// LocateSiblingBinary("layerflow-worker", "LAYERFLOW_WORKER_BIN").
absl::StatusOr<std::string> LocateWorkerBinary();

class WorkerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Spawn(const WorkerProcessOptions& options);
  ~WorkerProcess();  // Stop()

  // SIGTERM (the worker finishes its chunk in progress), then SIGKILL after
  // a grace period. Idempotent.
  void Stop();
  // Empty while the process runs; afterwards how it ended ("exited with
  // status 1", "killed by signal 9"). Never blocks.
  std::optional<std::string> Exited();
  pid_t pid() const { return pid_; }

 private:
  explicit WorkerProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  std::optional<std::string> exit_;
};

}  // namespace layerflow

#endif  // LAYERFLOW_COMMON_WORKER_PROCESS_H_
