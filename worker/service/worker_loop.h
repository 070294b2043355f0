// The worker's gRPC loop: register, lease, run, stream, complete or fail.
// No LibTorch here; jobs run through the plain-struct JobRunner boundary.
#ifndef LAYERFLOW_WORKER_SERVICE_WORKER_LOOP_H_
#define LAYERFLOW_WORKER_SERVICE_WORKER_LOOP_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/runtime/job_runner.h"

namespace layerflow::worker {

struct WorkerOptions {
  std::string coordinator_address = "127.0.0.1:7531";
  // Shown in ListJobs; default host name and pid.
  std::string name;
  // Wait between LeaseJob calls when the queue is empty.
  int64_t idle_poll_ms = 500;
  // Fault injection for tests and demos: sleep after each streamed chunk.
  int64_t pause_after_chunk_ms = 0;
  // Return from Run() once the queue has been empty this long (0: never).
  int64_t exit_after_idle_ms = 0;
  // Where jobs' checkpoints may come from and how large their files may be
  // (--model-root, --no-hf-cache-root, --max-*-file-bytes).
  ModelFilePolicy files;
  // Bytes of preset models kept between jobs (--resident-model-bytes):
  // negative for DefaultModelCacheBytes, 0 for none.
  int64_t resident_model_bytes = -1;
  // Lease the next job while the current one runs and make its model and
  // data set meanwhile (--lease-ahead); the lease is given back when the
  // worker stops.
  bool lease_ahead = false;
  // The coordinator channel's security (--token / LAYERFLOW_TOKEN,
  // --tls-ca, --tls-cert, --tls-key): common/channel.h's ChannelSecurity,
  // kept as plain strings so this header stays free of gRPC. Empty token:
  // none sent; empty tls_ca_file: plaintext.
  std::string token;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

class WorkerLoop {
 public:
  virtual ~WorkerLoop() = default;
  static absl::StatusOr<std::unique_ptr<WorkerLoop>> Create(const WorkerOptions& options,
                                                            const DeviceConfig& device);
  // Runs until Stop() (or idle exit). Returns an error only when the worker
  // cannot work at all (registration refused); errors inside a job become
  // a failed job, never a crashed worker.
  virtual absl::Status Run() = 0;
  // Thread-safe; Run() returns after the current chunk.
  virtual void Stop() = 0;
};

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_SERVICE_WORKER_LOOP_H_
